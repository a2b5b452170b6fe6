using System.Globalization;
using System.Text;
using Microsoft.ML;
using Microsoft.ML.Orpo.ModelFiles;
using Microsoft.ML.Orpo.Modeling;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Benchmarks;

/// <summary>
/// <c>--fingerprint DIR</c>: every number that must not move when code only moves, printed exactly (round-trip
/// doubles): greedy generations of stories260K and of a wider random model (the small-head and wide-head kernel
/// paths), held-out metrics, and short ORPO trajectories in every training layout and precision. Run it on two
/// builds and diff the outputs: a refactoring is bit-identical only if the files are.
/// </summary>
internal static class Fingerprint
{
    public static void Run(string workDirectory)
    {
        Directory.CreateDirectory(workDirectory);
        var models = new[] { ("stories260K", Path.Combine(BenchModels.RepoRoot, "models", "stories260K", "hf")), ("wide", WideModel(workDirectory)) };
        string data = Path.Combine(BenchModels.RepoRoot, "data", "stories-preferences");
        var output = new StringBuilder();
        foreach (var (name, path) in models)
        {
            var ml = new MLContext(seed: 1);
            var train = ml.Data.LoadPreferenceJsonl(Path.Combine(data, "train.jsonl"));
            var heldout = ml.Data.LoadPreferenceJsonl(Path.Combine(data, "heldout.jsonl"));
            using (var base_ = OrpoTransformer.FromPretrained(ml, new OrpoOptions { BaseModelPath = path }))
            {
                Generations(output, $"{name} base", base_);
                Metrics(output, $"{name} base heldout", base_.Evaluate(heldout));
            }
            foreach (var (variant, configure) in Variants())
            {
                var options = new OrpoOptions
                {
                    BaseModelPath = path, LearningRate = 1e-3, BatchSize = 4, Epochs = 1, MaxLength = 128, Seed = 1, Lambda = 0.25,
                };
                configure(options);
                int steps = 0;
                var subset = ml.Data.TakeRows(train, 12);
                using var fitted = ml.Transforms.OrpoFineTune(options).Fit(subset);
                foreach (var m in fitted.TrainingHistory)
                    output.AppendLine(CultureInfo.InvariantCulture, $"{name} {variant} step {++steps}: loss {m.Loss:R} nll {m.NllLoss:R} or {m.OddsRatioLoss:R} |g| {m.GradNorm:R} margin {m.RewardsMargin:R}");
                Generations(output, $"{name} {variant}", fitted);
                Metrics(output, $"{name} {variant} heldout", fitted.Evaluate(heldout));
            }
        }
        Console.Write(output.ToString());
    }

    private static IEnumerable<(string, Action<OrpoOptions>)> Variants()
    {
        yield return ("concat", _ => { });
        yield return ("shared", o => o.SharedPromptForward = true);
        yield return ("recompute", o => o.RecomputeActivations = true);
        yield return ("bf16", o => o.Precision = OrpoPrecision.BFloat16);
        yield return ("accumulate", o => { o.BatchSize = 2; o.GradientAccumulationSteps = 2; o.MaxGradNorm = 0; o.LearningRateSchedule = LearningRateSchedule.Constant; });
    }

    private static readonly string[] Prompts = { "Once upon a time", "Lily and Tom went to the park.", "The cat" };

    private static void Generations(StringBuilder output, string label, OrpoTransformer model)
    {
        var greedy = new GenerationOptions { MaxNewTokens = 48 };
        foreach (var p in Prompts) output.AppendLine($"{label} greedy [{p}]: {model.Generate(p, greedy)}");
        var batch = model.Generate(Prompts, greedy); // batched: padding masks and the cache with rows of different lengths
        for (int i = 0; i < batch.Count; i++) output.AppendLine($"{label} batched [{Prompts[i]}]: {batch[i]}");
        var sampled = new GenerationOptions { MaxNewTokens = 32, Temperature = 0.8, TopK = 40, Seed = 7 };
        output.AppendLine($"{label} sampled: {model.Generate(Prompts[0], sampled)}");
    }

    private static void Metrics(StringBuilder output, string label, OrpoPreferenceMetrics m) =>
        output.AppendLine(CultureInfo.InvariantCulture,
            $"{label}: loss {m.Loss:R} nll {m.NllLoss:R} or {m.OddsRatioLoss:R} chosen {m.ChosenLogProbability:R} rejected {m.RejectedLogProbability:R} acc {m.RewardsAccuracy:R}");

    /// <summary>A random-init model wide enough for the packed GEMM, the few-rows decode kernel and blocked attention
    /// (hidden 512, head dim 64, 2 key/value heads per 8 query heads), with stories260K's tokenizer; written once.</summary>
    private static string WideModel(string workDirectory)
    {
        string folder = Path.Combine(workDirectory, "wide");
        if (File.Exists(Path.Combine(folder, "config.json"))) return folder;
        var config = new LlamaConfig
        {
            HiddenSize = 512, IntermediateSize = 1376, NumHiddenLayers = 2, NumAttentionHeads = 8, NumKeyValueHeads = 2, HeadDim = 64,
            VocabSize = 512, MaxPositionEmbeddings = 512, TieWordEmbeddings = true,
        };
        var generator = manual_seed(3);
        var weights = ModelWeights.ExpectedShapes(config).ToDictionary(e => e.Name,
            e => e.Name.EndsWith("norm.weight", StringComparison.Ordinal) ? ones(e.Shape) : randn(e.Shape, generator: generator) * 0.05);
        string hf = Path.Combine(BenchModels.RepoRoot, "models", "stories260K", "hf");
        var files = new Dictionary<string, byte[]> { ["tokenizer.model"] = File.ReadAllBytes(Path.Combine(hf, "tokenizer.model")) };
        HuggingFaceFolder.Save(folder, config, weights, files, null);
        return folder;
    }
}
