using System.Buffers.Binary;
using System.Text.Json.Nodes;
using Microsoft.ML.Orpo.MlNet;
using Microsoft.ML.Orpo.Tests.MlNet;
using Microsoft.ML.Orpo.Tests.Evaluation;
using Microsoft.ML.Orpo.Tests.Infrastructure;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Tests.Lora;

/// <summary>
/// The LoRA integration tests' shared set-up: rank-4 options on stories260K, eight preference pairs, one model fitted
/// through ML.NET (two steps, checkpointed) that several tests read but none modify, and readers of the files themselves.
/// </summary>
internal static class LoraPipelineFixtures
{
    public const int Rank = 4;
    public const double Alpha = 8;

    /// <summary>Prompts for greedy comparisons: two of the training openings and an empty prompt (BOS only).</summary>
    public static readonly string[] Prompts = ["Once upon a time, there was a little girl named", "One day, a little girl named", ""];

    /// <summary>stories260K's projections: (name, block, in features, out features) — hidden 64, 4 KV heads of 8, MLP 172.</summary>
    public static readonly (string Name, string Block, int In, int Out)[] Projections =
    [
        ("q_proj", "self_attn", 64, 64),
        ("k_proj", "self_attn", 64, 32),
        ("v_proj", "self_attn", 64, 32),
        ("o_proj", "self_attn", 64, 64),
        ("gate_proj", "mlp", 64, 172),
        ("up_proj", "mlp", 64, 172),
        ("down_proj", "mlp", 172, 64),
    ];

    /// <summary>Every PEFT key and shape of a rank-<see cref="Rank"/> all-linear adapter on stories260K's five layers.</summary>
    public static SortedDictionary<string, long[]> ExpectedAdapterKeys(params string[] targets)
    {
        var keys = new SortedDictionary<string, long[]>(StringComparer.Ordinal);
        for (int layer = 0; layer < 5; layer++)
            foreach (var (name, block, inFeatures, outFeatures) in Projections)
                if (targets.Length == 0 || targets.Contains(name))
                {
                    string prefix = $"base_model.model.model.layers.{layer}.{block}.{name}";
                    keys[prefix + ".lora_A.weight"] = [Rank, inFeatures];
                    keys[prefix + ".lora_B.weight"] = [outFeatures, Rank];
                }
        return keys;
    }

    public static LoraOptions RankFour(double dropout = 0.05) => new() { Rank = Rank, Alpha = Alpha, Dropout = dropout };

    /// <summary>Two optimiser steps of four pairs with MaxLength 64; the learning rate is high enough for the adapters to change the text.</summary>
    public static OrpoOptions Options(LoraOptions? lora = null, string? checkpoints = null) => new()
    {
        BaseModelPath = TestAssets.Stories260KHf,
        Lora = lora ?? RankFour(),
        Lambda = 0.25, LearningRate = 1e-2, Epochs = 1, BatchSize = 4, MaxLength = 64, Seed = 1,
        LearningRateSchedule = LearningRateSchedule.Constant,
        Generation = new GenerationOptions { MaxNewTokens = 10 },
        CheckpointDirectory = checkpoints,
    };

    public static IDataView Pairs(MLContext ml, int count = 8) => EvaluationFixtures.ToDataView(ml, ProtagonistPairs.Create().Train.Take(count));

    public static IDataView HeldOut(MLContext ml) => EvaluationFixtures.ToDataView(ml, ProtagonistPairs.Create().HeldOut.Take(8));

    public static GenerationOptions Greedy { get; } = new() { MaxNewTokens = 10 };

    private static readonly Lazy<(MLContext Ml, OrpoTransformer Model, string Checkpoints, string[] Generations)> fitted = new(() =>
    {
        var ml = new MLContext(seed: 1);
        string checkpoints = TestAssets.NewTempDirectory("orpo-lora-checkpoints");
        var model = ml.Transforms.OrpoFineTune(Options(checkpoints: checkpoints)).Fit(Pairs(ml));
        return (ml, model, checkpoints, Generations(model));
    });

    /// <summary>The shared fitted adapter model (never disposed or modified by a test).</summary>
    public static OrpoTransformer Fitted => fitted.Value.Model;

    public static MLContext FittedContext => fitted.Value.Ml;

    /// <summary><see cref="Fitted"/>'s greedy text for <see cref="Prompts"/>.</summary>
    public static string[] FittedGenerations => fitted.Value.Generations;

    /// <summary>
    /// <see cref="Fitted"/>'s adapter (B non-zero) saved to a fresh folder; with <paramref name="useRsLora"/> the same
    /// weights marked <c>use_rslora: true</c> (factor alpha / sqrt(r) instead of alpha / r).
    /// </summary>
    public static string SavedFittedAdapter(bool useRsLora = false)
    {
        string dir = TestAssets.NewTempDirectory("orpo-adapter");
        Fitted.SaveAdapter(dir);
        if (useRsLora)
            EditConfig(dir, config =>
            {
                Assert.IsFalse(config["use_rslora"]!.GetValue<bool>());
                config["use_rslora"] = true;
            });
        return dir;
    }

    /// <summary>A copy of the adapter folder <paramref name="source"/> in a fresh folder, its adapter_config.json changed by <paramref name="edit"/>.</summary>
    public static string CopyWithConfig(string source, Action<JsonObject> edit)
    {
        string dir = TestAssets.NewTempDirectory("orpo-adapter-edited");
        foreach (string file in Directory.GetFiles(source)) File.Copy(file, Path.Combine(dir, Path.GetFileName(file)));
        EditConfig(dir, edit);
        return dir;
    }

    private static void EditConfig(string dir, Action<JsonObject> edit)
    {
        string configPath = Path.Combine(dir, "adapter_config.json");
        var config = JsonNode.Parse(File.ReadAllText(configPath))!.AsObject();
        edit(config);
        File.WriteAllText(configPath, config.ToJsonString());
    }

    /// <summary>The payload format <paramref name="model"/> writes into a model zip.</summary>
    public static uint PayloadVersion(OrpoTransformer model)
    {
        using var buffer = new MemoryStream();
        OrpoModelPayload.Write(buffer, model.Settings, model.Model, model.TrainingHistory);
        return BitConverter.ToUInt32(buffer.GetBuffer(), 4);
    }

    /// <summary><paramref name="model"/> saved in a model zip (schema: a prompt column) and loaded in another MLContext; the caller disposes it.</summary>
    public static OrpoTransformer ThroughModelZip(OrpoTransformer model, string name)
    {
        var ml = new MLContext(seed: 1);
        var prompts = ml.Data.LoadFromEnumerable(Prompts.Select(p => new ModelZipTestSupport.PromptRow { Prompt = p }));
        string path = Path.Combine(TestAssets.NewTempDirectory("orpo-lora-zip"), name + ".zip");
        ml.Model.Save(model, prompts.Schema, path);
        return (OrpoTransformer)new MLContext(seed: 2).RegisterOrpo().Model.Load(path, out _);
    }

    /// <summary>Where <see cref="Fitted"/>'s run wrote its checkpoints (after steps 1 and 2).</summary>
    public static string FittedCheckpoints => fitted.Value.Checkpoints;

    /// <summary>The name, dtype and shape of every tensor of a safetensors file, read from its header (no library code).</summary>
    public static SortedDictionary<string, (string DType, long[] Shape)> Header(string path)
    {
        byte[] bytes = File.ReadAllBytes(path);
        long length = BinaryPrimitives.ReadInt64LittleEndian(bytes);
        var json = JsonNode.Parse(bytes.AsSpan(8, (int)length))!.AsObject();
        var entries = new SortedDictionary<string, (string, long[])>(StringComparer.Ordinal);
        foreach (var (name, node) in json)
            if (name != "__metadata__")
                entries[name] = (node!["dtype"]!.GetValue<string>(), node["shape"]!.AsArray().Select(d => d!.GetValue<long>()).ToArray());
        return entries;
    }

    /// <summary>Every tensor of a safetensors file as float32 arrays, by key.</summary>
    public static Dictionary<string, float[]> Tensors(string path)
    {
        var tensors = Microsoft.ML.Orpo.ModelFiles.SafeTensorsReader.Read(path);
        try
        {
            return tensors.ToDictionary(t => t.Key, t => t.Value.data<float>().ToArray());
        }
        finally
        {
            foreach (var t in tensors.Values) t.Dispose();
        }
    }

    /// <summary>The adapter weights a transformer holds, as float32 arrays by PEFT key.</summary>
    public static Dictionary<string, float[]> AdapterWeights(OrpoTransformer model)
    {
        var exported = model.Model.Network.Adapters!.Export();
        try
        {
            return exported.ToDictionary(t => t.Key, t => t.Value.data<float>().ToArray());
        }
        finally
        {
            foreach (var t in exported.Values) t.Dispose();
        }
    }

    public static bool BitIdentical(Dictionary<string, float[]> a, Dictionary<string, float[]> b) =>
        a.Count == b.Count && a.All(kv => b.TryGetValue(kv.Key, out var other) && kv.Value.AsSpan().SequenceEqual(other));

    /// <summary>The next-token logits of every position of a fixed token sequence.</summary>
    public static float[] Logits(OrpoTransformer model)
    {
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        using var input = tensor(new long[] { 1, 403, 407, 261, 378, 425, 306, 275, 260, 301, 449 }).unsqueeze(0);
        return model.Model.Network.Forward(input).data<float>().ToArray();
    }

    /// <summary>Greedy text for <see cref="Prompts"/>.</summary>
    public static string[] Generations(OrpoTransformer model) => model.Generate(Prompts, Greedy).ToArray();

    /// <summary>Asserts two folders hold the same file names with byte-identical contents.</summary>
    public static void AssertSameFiles(string expected, string actual)
    {
        var names = Directory.GetFiles(expected).Select(Path.GetFileName).Order(StringComparer.Ordinal).ToArray();
        CollectionAssert.AreEqual(names, Directory.GetFiles(actual).Select(Path.GetFileName).Order(StringComparer.Ordinal).ToArray());
        foreach (string? name in names)
            CollectionAssert.AreEqual(File.ReadAllBytes(Path.Combine(expected, name!)), File.ReadAllBytes(Path.Combine(actual, name!)), name);
    }
}
