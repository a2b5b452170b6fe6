using TorchSharp;
using Microsoft.ML.Orpo.ModelFiles;
using Microsoft.ML.Orpo.Modeling;
using Microsoft.ML.Orpo.Tests.Infrastructure;
using Microsoft.ML.Orpo.Training;
using Microsoft.ML.Orpo.Preferences;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Tests.Training;

/// <summary>
/// <see cref="OrpoPrecision.BFloat16"/> mixed precision against float32 training. Tolerance: bfloat16 keeps 8
/// significant bits, so every cast to it rounds by up to 2^-9 (0.2%) relative, and a step's loss goes through a few
/// dozen such roundings (products accumulate in float32). Measured on stories260K, step-1 loss, NLL, rewards and
/// gradient norm differ from float32 by 0.03% to 0.3% relative; the tests allow 1% (1e-2, about five bfloat16 units
/// in the last place), and gradients must keep a per-tensor cosine similarity above 0.99 (measured above 0.999).
/// </summary>
[TestClass]
public sealed class MixedPrecisionTests
{
    private const double Relative = 1e-2;

    private static TrainingSettings Settings(OrpoPrecision precision, int chunkRows = TrainingSettings.DefaultLogitsChunkRows, bool shared = false) =>
        TrainingFixtures.Plain(batchSize: 4) with { Precision = precision, LogitsChunkRows = chunkRows, SharedPromptForward = shared };

    private static void AssertRelative(double expected, double actual, double relative, string what)
    {
        Console.WriteLine($"{what}: float32 {expected:G8} bfloat16 {actual:G8} (relative {Math.Abs(actual - expected) / Math.Abs(expected):E2})");
        Assert.AreEqual(expected, actual, relative * Math.Abs(expected), what);
    }

    [TestMethod]
    public void BFloat16FirstStepLossAndMetricsMatchFloat32()
    {
        OrpoStepMetrics FirstStep(OrpoPrecision precision)
        {
            using var model = TrainingFixtures.LoadModel();
            var pairs = TrainingFixtures.TrainPairs(model, 8);
            return new OrpoTrainer(model, Settings(precision) with { BatchSize = 8 }).Train(pairs)[0];
        }
        var fp32 = FirstStep(OrpoPrecision.Float32);
        var bf16 = FirstStep(OrpoPrecision.BFloat16);

        Assert.AreNotEqual(fp32.Loss, bf16.Loss, "bfloat16 must actually change the arithmetic");
        AssertRelative(fp32.Loss, bf16.Loss, Relative, "loss");
        AssertRelative(fp32.NllLoss, bf16.NllLoss, Relative, "NLL");
        AssertRelative(fp32.OddsRatioLoss, bf16.OddsRatioLoss, Relative, "odds-ratio loss");
        AssertRelative(fp32.RewardsChosen, bf16.RewardsChosen, Relative, "rewards chosen");
        AssertRelative(fp32.RewardsRejected, bf16.RewardsRejected, Relative, "rewards rejected");
        AssertRelative(fp32.GradNorm, bf16.GradNorm, Relative, "gradient norm");
        // Margin and log odds are differences of nearly equal log-probabilities: compare them on the scale of the terms.
        double scale = Math.Abs(fp32.RewardsChosen);
        Assert.AreEqual(fp32.RewardsMargin, bf16.RewardsMargin, Relative * scale, "rewards margin");
        Assert.AreEqual(fp32.LogOddsChosen, bf16.LogOddsChosen, Relative * Math.Abs(fp32.ChosenLogProbability), "log odds");
        Assert.AreEqual(fp32.RewardsAccuracy, bf16.RewardsAccuracy, 1.0 / 8 + 1e-12, "accuracy: at most one near-tie pair flips");
    }

    [TestMethod]
    [DataRow(TrainingSettings.DefaultLogitsChunkRows, false, DisplayName = "chunked LM head")]
    [DataRow(0, false, DisplayName = "plain LM head")]
    [DataRow(64, true, DisplayName = "shared prompt, chunked LM head")]
    public void BFloat16GradientsPointLikeFloat32Gradients(int chunkRows, bool shared)
    {
        using var model = TrainingFixtures.LoadModel();
        var pairs = TrainingFixtures.TrainPairs(model, 5);
        var fp32 = Gradients(model, pairs, Settings(OrpoPrecision.Float32, chunkRows, shared));
        var bf16 = Gradients(model, pairs, Settings(OrpoPrecision.BFloat16, chunkRows, shared));
        double worst = 1;
        foreach (var (name, expected) in fp32)
        {
            double cosine = Cosine(expected, bf16[name]);
            worst = Math.Min(worst, cosine);
            Assert.IsGreaterThan(0.99, cosine, $"cosine similarity of the gradient of {name}");
        }
        Console.WriteLine($"lowest per-tensor gradient cosine similarity: {worst:F6}");
        Assert.IsTrue(fp32.Any(g => !g.Value.AsSpan().SequenceEqual(bf16[g.Key])), "bfloat16 must actually change the gradients");
    }

    [TestMethod]
    public void ChunkedLogProbsInBFloat16MultiplyInBFloat16AndReturnFloat32Gradients()
    {
        using var scope = NewDisposeScope();
        manual_seed(11);
        var hidden = randn(3, 37, 16).requires_grad_(true);
        var weight = (randn(50, 16) * 0.5).requires_grad_(true);
        var targets = randint(0, 50, new long[] { 3, 37 }, dtype: ScalarType.Int64);
        var upstream = randn(3, 37);

        // Reference: float64 with the inputs rounded to bfloat16, i.e. exactly the products bfloat16 computes.
        var h64 = hidden.detach().to_type(ScalarType.BFloat16).to_type(ScalarType.Float64).requires_grad_(true);
        var w64 = weight.detach().to_type(ScalarType.BFloat16).to_type(ScalarType.Float64).requires_grad_(true);
        var logits = h64.matmul(w64.t());
        var expected = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1);
        (expected * upstream.to_type(ScalarType.Float64)).sum().backward();

        var chunked = ChunkedLogProbs.Compute(hidden, weight, targets, chunkRows: 16, matmulType: ScalarType.BFloat16);
        (chunked * upstream).sum().backward();
        using var noGrad = no_grad();
        var float32 = ChunkedLogProbs.Compute(hidden, weight, targets, chunkRows: 16);

        Assert.AreEqual(ScalarType.Float32, chunked.dtype);
        Assert.AreEqual(ScalarType.Float32, hidden.grad!.dtype);
        Assert.AreEqual(ScalarType.Float32, weight.grad!.dtype);
        Assert.IsGreaterThan(0, (chunked.detach() - float32).abs().max().ToDouble(), "bfloat16 must actually change the arithmetic");
        double valueError = (chunked.to_type(ScalarType.Float64) - expected).abs().max().ToDouble();
        Console.WriteLine($"max |log p| error of the bfloat16 products: {valueError:E2}");
        // Each bfloat16 logit is rounded once (2^-9 relative, logits here are a few units): errors of order 1e-2.
        Assert.IsLessThan(0.05, valueError);
        Assert.IsGreaterThan(0.999, Cosine(h64.grad!, hidden.grad!), "hidden gradient");
        Assert.IsGreaterThan(0.999, Cosine(w64.grad!, weight.grad!), "weight gradient");
    }

    [TestMethod]
    public void BFloat16TrainingKeepsFloat32WeightsGradientsAndOptimizerState()
    {
        string directory = TestAssets.NewTempDirectory("orpo-bf16-state");
        using var model = TrainingFixtures.LoadModel();
        var pairs = TrainingFixtures.TrainPairs(model, 8);
        new OrpoTrainer(model, Settings(OrpoPrecision.BFloat16) with { CheckpointDirectory = directory }).Train(pairs);

        foreach (var (name, parameter) in model.Network.NamedWeights())
        {
            Assert.AreEqual(ScalarType.Float32, parameter.dtype, name);
            Assert.IsNotNull(parameter.grad, name);
            Assert.AreEqual(ScalarType.Float32, parameter.grad.dtype, $"gradient of {name}");
        }
        string checkpoint = Directory.GetDirectories(directory, "checkpoint-*").Single();
        foreach (string file in new[] { "model.safetensors", "optimizer.safetensors" })
        {
            var tensors = SafeTensorsReader.Read(Path.Combine(checkpoint, file));
            Assert.IsGreaterThan(0, tensors.Count);
            foreach (var (name, tensor) in tensors) Assert.AreEqual(ScalarType.Float32, tensor.dtype, $"{file}: {name}");
            Assert.IsTrue(tensors.Values.Any(t => t.abs().sum().ToDouble() > 0), $"{file} holds trained values");
            foreach (var t in tensors.Values) t.Dispose();
        }
        StringAssert.Contains(File.ReadAllText(Path.Combine(checkpoint, "trainer_state.json")), "\"Precision\": \"BFloat16\"");
        Directory.Delete(directory, recursive: true);
    }

    [TestMethod]
    public void BFloat16TrainingSwitchesThePreferredProtagonist()
    {
        var started = DateTime.UtcNow;
        using var model = TrainingFixtures.LoadModel();
        var (trainSet, heldOutSet) = ProtagonistPairs.Create();
        var train = TrainingFixtures.Encode(model, trainSet);
        var heldOut = TrainingFixtures.Encode(model, heldOutSet);
        var settings = TrainingFixtures.Plain(batchSize: 8, epochs: 3, lambda: 0.25) with
        {
            Shuffle = true, GroupByLength = true, Precision = OrpoPrecision.BFloat16,
        };
        var before = PreferenceEvaluator.Evaluate(model.Network, heldOut, settings);
        var history = new OrpoTrainer(model, settings).Train(train);
        var after = PreferenceEvaluator.Evaluate(model.Network, heldOut, settings);
        Console.WriteLine($"bfloat16: held-out accuracy {before.RewardsAccuracy:F2} -> {after.RewardsAccuracy:F2}, margin {before.RewardsMargin:F3} -> {after.RewardsMargin:F3}, " +
                          $"loss {history[0].Loss:F4} -> {history[^1].Loss:F4} ({(DateTime.UtcNow - started).TotalSeconds:F0} s)");

        Assert.IsLessThan(0.9, before.RewardsAccuracy, "the base model does not already prefer the new name");
        Assert.IsGreaterThan(before.RewardsMargin, after.RewardsMargin, "the margin grows");
        Assert.IsGreaterThanOrEqualTo(0.9, after.RewardsAccuracy);
        Assert.IsLessThan(history[0].Loss, history[^1].Loss, "the training loss falls");
    }

    [TestMethod]
    public void BFloat16SameSeedGivesBitIdenticalWeights()
    {
        Dictionary<string, float[]> Run(OrpoPrecision precision)
        {
            using var model = TrainingFixtures.LoadModel();
            var pairs = TrainingFixtures.TrainPairs(model, 12);
            new OrpoTrainer(model, Settings(precision) with { Shuffle = true, GroupByLength = true, Seed = 5 }).Train(pairs);
            return TrainingFixtures.Snapshot(model);
        }
        var first = Run(OrpoPrecision.BFloat16);
        Assert.IsTrue(TrainingFixtures.BitIdentical(first, Run(OrpoPrecision.BFloat16)), "same seed must give bit-identical weights");
        Assert.IsFalse(TrainingFixtures.BitIdentical(first, Run(OrpoPrecision.Float32)), "float32 training takes another path");
    }

    [TestMethod]
    public void ResumingWithAnotherPrecisionIsRefused()
    {
        string directory = TestAssets.NewTempDirectory("orpo-bf16-resume");
        var bf16 = Settings(OrpoPrecision.BFloat16) with { CheckpointDirectory = directory, CheckpointInterval = 1 };
        var fp32 = bf16 with { Precision = OrpoPrecision.Float32 };
        using var model = TrainingFixtures.LoadModel();
        var pairs = TrainingFixtures.TrainPairs(model, 8);
        new OrpoTrainer(model, bf16).Train(pairs);

        var e = Assert.ThrowsExactly<InvalidOperationException>(() => new OrpoTrainer(model, fp32).Train(pairs));
        Console.WriteLine(e.Message);
        StringAssert.Contains(e.Message, "Precision = BFloat16");
        StringAssert.Contains(e.Message, "this run uses Precision = Float32");

        // The same precision resumes (here: finds the run complete).
        var log = new List<string>();
        var resumed = new OrpoTrainer(model, bf16, new TrainingCallbacks { Log = log.Add }).Train(pairs);
        Assert.HasCount(2, resumed);
        Assert.IsTrue(log.Any(l => l.StartsWith("Resumed from checkpoint at step 2", StringComparison.Ordinal)));

        // A checkpoint written before the option existed has no Precision entry: it was float32, and resumes only as such.
        foreach (string state in Directory.GetFiles(directory, "trainer_state.json", SearchOption.AllDirectories))
        {
            var json = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(state))!.AsObject();
            Assert.IsTrue(json.Remove("Precision"));
            File.WriteAllText(state, json.ToJsonString());
        }
        var legacy = Assert.ThrowsExactly<InvalidOperationException>(() => new OrpoTrainer(model, bf16).Train(pairs));
        StringAssert.Contains(legacy.Message, "Precision = Float32");
        Directory.Delete(directory, recursive: true);
    }

    private static Dictionary<string, float[]> Gradients(CausalLanguageModel model, IReadOnlyList<EncodedPair> pairs, TrainingSettings settings)
    {
        model.Network.train();
        model.Network.zero_grad();
        using var scope = NewDisposeScope();
        double nllTokens = pairs.Sum(p => (double)p.NllTokenCount(settings.IncludePromptInNll));
        var (terms, _) = PreferenceForward.Loss(model.Network, pairs, settings, CPU, nllTokens, pairs.Count);
        terms.Loss.backward();
        return model.Network.NamedWeights().ToDictionary(p => p.Name, p =>
        {
            Assert.AreEqual(ScalarType.Float32, p.Parameter.grad!.dtype, $"gradient of {p.Name}");
            return p.Parameter.grad.data<float>().ToArray();
        });
    }

    private static double Cosine(float[] a, float[] b)
    {
        double dot = 0, na = 0, nb = 0;
        for (int i = 0; i < a.Length; i++)
        {
            dot += (double)a[i] * b[i];
            na += (double)a[i] * a[i];
            nb += (double)b[i] * b[i];
        }
        return dot / Math.Sqrt(na * nb);
    }

    private static double Cosine(Tensor a, Tensor b)
    {
        using var scope = NewDisposeScope();
        var x = a.to_type(ScalarType.Float64).flatten();
        var y = b.to_type(ScalarType.Float64).flatten();
        return (x.dot(y) / (x.norm() * y.norm())).ToDouble();
    }
}
