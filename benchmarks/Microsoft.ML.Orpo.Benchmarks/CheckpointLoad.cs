using System.Diagnostics;
using System.Text;
using System.Text.Json.Nodes;
using Microsoft.ML.Orpo.ModelFiles;
using Microsoft.ML.Orpo.Tokenization;
using TorchSharp;

namespace Microsoft.ML.Orpo.Benchmarks;

/// <summary>
/// Loading a checkpoint from disk: a random model of Qwen2.5-0.5B's shape written once as a Hugging Face folder with
/// bfloat16 safetensors (as Qwen2.5 ships), then loaded in a process of its own, one tensor at a time into the network
/// (<c>CausalLanguageModel.Load</c>) or through a whole state dict first (<c>HuggingFaceFolder.Load</c>, then
/// <c>CausalLanguageModel.Create</c>): seconds and peak RSS. <c>bf16Projections</c>: streamed into a network whose
/// projections are bfloat16, as a LoRA run with <c>BFloat16Base</c> loads its base.
/// </summary>
internal static class CheckpointLoad
{
    public static string Folder => Path.Combine(Path.GetTempPath(), "orpo-bench-qwen05b-hf");

    public static JsonObject Export()
    {
        var clock = Stopwatch.StartNew();
        var config = BenchModels.Qwen05B;
        Directory.CreateDirectory(Folder);
        using (var lazy = new RandomWeights(config))
            SafeTensorsWriter.Write(Path.Combine(Folder, HuggingFaceFolder.WeightsFileName), lazy, SafeTensorsDType.BF16);
        File.WriteAllBytes(Path.Combine(Folder, HuggingFaceFolder.ConfigFileName), Encoding.UTF8.GetBytes(config.ToJson()));
        return new JsonObject
        {
            ["metric"] = "export_seconds", ["value"] = Math.Round(clock.Elapsed.TotalSeconds, 2), ["folder"] = Folder,
            ["bytes"] = new FileInfo(Path.Combine(Folder, HuggingFaceFolder.WeightsFileName)).Length,
        };
    }

    public static JsonObject Load(bool stateDict, bool bf16Projections = false)
    {
        if (!File.Exists(Path.Combine(Folder, HuggingFaceFolder.WeightsFileName)))
            throw new InvalidOperationException($"Run the export.qwen05b scenario first (writes {Folder}).");
        string stories = Path.Combine(BenchModels.RepoRoot, "models", "stories260K", "hf");
        double before = Memory.RssMiB();
        var clock = Stopwatch.StartNew();
        CausalLanguageModel model;
        if (!stateDict) model = CausalLanguageModel.Load(Folder, stories, "cpu", bf16Projections ? torch.ScalarType.BFloat16 : null);
        else
        {
            var (config, weights) = HuggingFaceFolder.Load(Folder);
            try { model = CausalLanguageModel.Create(config, weights, OrpoTokenizer.Load(stories, config), torch.CPU, Folder); }
            finally { foreach (var t in weights.Values) t.Dispose(); }
        }
        double seconds = clock.Elapsed.TotalSeconds;
        using (model)
            return new JsonObject
            {
                ["metric"] = "load_seconds", ["value"] = Math.Round(seconds, 2), ["params"] = BenchModels.ParameterCount(model),
                ["peak_rss_mib"] = Math.Round(Memory.PeakRssMiB(), 1), ["rss_before_mib"] = Math.Round(before, 1),
                ["rss_after_mib"] = Math.Round(Memory.RssMiB(), 1), ["state_dict"] = stateDict, ["bf16_projections"] = bf16Projections,
            };
    }
}
