using TorchSharp;
using Microsoft.ML.Orpo.Modeling;
using Microsoft.ML.Orpo.Tests.ModelFiles;
using Microsoft.ML.Orpo.Tests.Training;
using Microsoft.ML.Orpo.Training;
using Microsoft.ML.Orpo.Preferences;
using Microsoft.ML.Orpo.ModelFiles;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Tests.Performance;

/// <summary>
/// Each performance switch (chunked LM head + log-probs, shared-prompt packing, recomputed activations) must give the plain concatenated
/// path's loss and gradients: these are correctness guards, not timings.
/// </summary>
[TestClass]
public sealed class PerformancePathEquivalenceTests
{
    private const double Tolerance = 1e-5;

    [TestMethod]
    [DataRow(false, 0, DisplayName = "shared prompt")]
    [DataRow(true, 0, DisplayName = "shared prompt, prompt in NLL")]
    [DataRow(false, 64, DisplayName = "shared prompt + chunked logits")]
    public void SharedPromptForwardEqualsConcatenatedLossAndGradients(bool includePromptInNll, int chunkRows) =>
        AssertSameAsPlain(new TrainingSettings { Lambda = 0.5, IncludePromptInNll = includePromptInNll, SharedPromptForward = true, LogitsChunkRows = chunkRows });

    [TestMethod]
    [DataRow(false, 0, DisplayName = "uneven lengths")]
    [DataRow(true, 0, DisplayName = "uneven lengths, prompt in NLL")]
    [DataRow(false, 7, DisplayName = "uneven lengths + chunked logits")]
    public void SharedPromptForwardWithUnevenLengthsEqualsConcatenated(bool includePromptInNll, int chunkRows)
    {
        // stories260K (8 heads over 4 KV heads): prompts, chosen and rejected of very different lengths in one batch,
        // so the longest packed row, the longest chosen and the longest rejected sequence are all different pairs.
        using var model = TrainingFixtures.LoadModel();
        AssertSameAsPlain(model.Network, UnevenPairs(vocabulary: 512),
            new TrainingSettings { Lambda = 0.5, IncludePromptInNll = includePromptInNll, SharedPromptForward = true, LogitsChunkRows = chunkRows });
    }

    [TestMethod]
    [DataRow(false, DisplayName = "Qwen2 float64")]
    [DataRow(true, DisplayName = "Qwen2 float64, prompt in NLL")]
    public void SharedPromptForwardEqualsConcatenatedForQwen2InFloat64(bool includePromptInNll)
    {
        // Qwen2-shaped: q/k/v biases, 4 heads over 2 KV heads; random weights, float64 so only the layout differs.
        var config = LlamaConfig.FromJson(ModelFileTestData.Qwen2ConfigJson);
        using var network = new LlamaForCausalLM(config);
        var weights = ModelFileTestData.RandomWeights(config, 11);
        try
        {
            using (no_grad()) foreach (var w in weights.Values) w.mul_(0.3);
            CausalLanguageModel.LoadWeights(network, weights, "random qwen2");
        }
        finally
        {
            foreach (var w in weights.Values) w.Dispose();
        }
        network.to(ScalarType.Float64);
        AssertSameAsPlain(network, UnevenPairs(config.VocabSize),
            new TrainingSettings { Lambda = 0.5, IncludePromptInNll = includePromptInNll, SharedPromptForward = true, LogitsChunkRows = 5 },
            tolerance: 1e-10);
    }

    [TestMethod]
    [DataRow(false, 64, DisplayName = "chunked logits")]
    [DataRow(true, 50, DisplayName = "chunked logits, prompt in NLL")]
    public void ChunkedLogitsEqualPlainLossAndGradients(bool includePromptInNll, int chunkRows) =>
        AssertSameAsPlain(new TrainingSettings { Lambda = 0.5, IncludePromptInNll = includePromptInNll, LogitsChunkRows = chunkRows });

    [TestMethod]
    [DataRow(false, 0, DisplayName = "recomputed activations")]
    [DataRow(true, 64, DisplayName = "recomputed activations, shared prompt + chunked logits")]
    public void RecomputedActivationsEqualStoredLossAndGradients(bool sharedPrompt, int chunkRows) =>
        AssertSameAsPlain(new TrainingSettings { Lambda = 0.5, RecomputeActivations = true, SharedPromptForward = sharedPrompt, LogitsChunkRows = chunkRows });

    [TestMethod]
    [DataRow(OrpoPrecision.Float32, false)]
    [DataRow(OrpoPrecision.BFloat16, true)]
    public void RecomputedActivationsTrainBitIdenticalWeights(OrpoPrecision precision, bool sharedPrompt)
    {
        // The recomputed layer runs the same operations on the same inputs, so training is not merely close but
        // identical; that is why a checkpoint may be resumed with the switch changed (it is not in the fingerprint).
        using var storedModel = TrainingFixtures.LoadModel();
        using var recomputedModel = TrainingFixtures.LoadModel();
        var pairs = TrainingFixtures.TrainPairs(storedModel, 8);
        var settings = TrainingFixtures.Plain(batchSize: 4, learningRate: 1e-3) with { Precision = precision, SharedPromptForward = sharedPrompt };
        new OrpoTrainer(storedModel, settings).Train(pairs);
        new OrpoTrainer(recomputedModel, settings with { RecomputeActivations = true }).Train(pairs);
        Assert.AreEqual(0.0, TrainingFixtures.MaxDifference(TrainingFixtures.Snapshot(storedModel), TrainingFixtures.Snapshot(recomputedModel)));
        Assert.AreEqual(CheckpointStore.Fingerprint(settings, pairs), CheckpointStore.Fingerprint(settings with { RecomputeActivations = true }, pairs));
    }

    [TestMethod]
    public void RecomputedForwardEqualsStoredForwardAndIsOffWithoutGradients()
    {
        using var model = TrainingFixtures.LoadModel();
        model.Network.train();
        using var scope = NewDisposeScope();
        var ids = tensor(new long[] { 1, 5, 6, 7, 8 }).view(1, 5);
        var stored = model.Network.HiddenStates(ids);
        var recomputed = model.Network.HiddenStates(ids, recomputeActivations: true);
        Assert.AreEqual(0, (stored - recomputed).abs().max().ToDouble(), 0.0, "same forward values");
        using (no_grad())
        {
            var noGraph = model.Network.HiddenStates(ids, recomputeActivations: true);
            Assert.IsFalse(noGraph.requires_grad, "without gradients the plain forward runs");
        }
        Assert.IsTrue(recomputed.requires_grad);
    }

    [TestMethod]
    public void SharedPromptBatchRestartsRejectedPositionsAndHidesChosenTokens()
    {
        var pair = new EncodedPair(new[] { 1, 5, 6 }, new[] { 7, 8, 2 }, new[] { 9, 2 });
        using var batch = SharedPromptBatch.Create(new[] { pair }, includePromptInNll: false, CPU);
        CollectionAssert.AreEqual(new long[] { 1, 5, 6, 7, 8, 2, 9, 2 }, batch.InputIds.data<long>().ToArray());
        CollectionAssert.AreEqual(new long[] { 0, 1, 2, 3, 4, 5, 3, 4 }, batch.PositionIds.data<long>().ToArray());
        // Attention: prompts of up to 3 tokens, responses of up to 3 over [prompt | chosen] / [prompt | rejected] of up to 6.
        Assert.AreEqual((3L, 3L, 6L, 2L), (batch.Attention.PrefixLength, batch.Attention.ContinuationLength,
            batch.Attention.VirtualLength, batch.Attention.VirtualRows));
        // Predictions: chosen 7 from position 2, 8 from 3, 2 from 4; rejected 9 from position 2 (the prompt's end), 2 from 6.
        CollectionAssert.AreEqual(new long[] { 2, 3, 4, 2, 6 }, batch.Sources.data<long>().ToArray());
        CollectionAssert.AreEqual(new long[] { 7, 8, 2, 9, 2 }, batch.Targets.data<long>().ToArray());
        CollectionAssert.AreEqual(new long[] { 0, 0, 0, 1, 1 }, batch.Rows.data<long>().ToArray());
        Assert.AreEqual(2L * 3 + 3 + 2, batch.EquivalentTokens);
    }

    [TestMethod]
    public void SharedPrefixAttentionEqualsCausalAttentionOverEachSequence()
    {
        // Packed rows [prefix | continuation 0 | continuation 1] of uneven lengths (rows shorter than the packed length,
        // one even shorter than the longest prefix): every token's output and the gradients of q, k and v equal causal
        // attention over its own [prefix | continuation].
        using var scope = NewDisposeScope();
        manual_seed(5);
        var rows = new[]
        {
            (Prefix: 4, Continuations: new[] { 3, 1 }), (Prefix: 1, Continuations: new[] { 2, 6 }),
            (Prefix: 6, Continuations: new[] { 1, 1 }), (Prefix: 2, Continuations: new[] { 1, 1 }),
        };
        int packedLength = 9, heads = 2, dim = 4;
        var q = randn(new long[] { rows.Length, heads, packedLength, dim }, ScalarType.Float64).requires_grad_(true);
        var k = randn(new long[] { rows.Length, heads, packedLength, dim }, ScalarType.Float64).requires_grad_(true);
        var v = randn(new long[] { rows.Length, heads, packedLength, dim }, ScalarType.Float64).requires_grad_(true);
        using var plan = SharedPrefixAttention.Create(packedLength, rows, CPU);
        var actual = plan.Attend(q, k, v);                                                     // (B, L, H*d)

        var expected = zeros(new long[] { rows.Length, packedLength, heads * dim }, ScalarType.Float64);
        var real = zeros(new long[] { rows.Length, packedLength, 1 }, ScalarType.Float64);       // 1 on non-padding tokens
        for (int i = 0; i < rows.Length; i++)
        {
            var (prefix, continuations) = rows[i];
            int start = prefix;
            for (int j = 0; j < continuations.Length; j++)
            {
                var positions = tensor(Enumerable.Range(0, prefix).Concat(Enumerable.Range(start, continuations[j])).Select(x => (long)x).ToArray());
                Tensor Sequence(Tensor x) => x[i].index_select(1, positions).unsqueeze(0);         // (1, H, prefix + n, d)
                var y = nn.functional.scaled_dot_product_attention(Sequence(q), Sequence(k), Sequence(v), is_casual: true)
                    .squeeze(0).transpose(0, 1).reshape(-1, heads * dim);                       // (prefix + n, H*d)
                var keep = j == 0 ? y : y.narrow(0, prefix, continuations[j]);                   // the prefix from continuation 0
                var at = j == 0 ? positions : positions.narrow(0, prefix, continuations[j]);
                expected[i] = expected[i].index_copy(0, at, keep);
                real[i] = real[i].index_fill(0, at, 1.0);
                start += continuations[j];
            }
        }
        var upstream = randn(actual.shape, ScalarType.Float64) * real;                           // padding outputs unused
        Assert.AreEqual(0, ((actual - expected) * real).abs().max().ToDouble(), 1e-12, "outputs");
        var actualGrads = torch.autograd.grad(new[] { (actual * upstream).sum() }, new[] { q, k, v });
        var expectedGrads = torch.autograd.grad(new[] { (expected * upstream).sum() }, new[] { q, k, v });
        for (int n = 0; n < 3; n++)
            Assert.AreEqual(0, (actualGrads[n] - expectedGrads[n]).abs().max().ToDouble(), 1e-12, $"gradient {"qkv"[n]}");
    }

    [TestMethod]
    public void TrainerStepWithSwitchesMatchesPlainStep()
    {
        using var plainModel = TrainingFixtures.LoadModel();
        using var fastModel = TrainingFixtures.LoadModel();
        var pairs = TrainingFixtures.TrainPairs(plainModel, 8);
        var settings = TrainingFixtures.Plain(batchSize: 4, learningRate: 1e-4);
        var plain = new OrpoTrainer(plainModel, settings).Train(pairs);
        var fast = new OrpoTrainer(fastModel, settings with { SharedPromptForward = true, LogitsChunkRows = 100, RecomputeActivations = true }).Train(pairs);
        for (int i = 0; i < plain.Count; i++)
        {
            Assert.AreEqual(plain[i].Loss, fast[i].Loss, Tolerance, $"loss of step {i + 1}");
            Assert.AreEqual(plain[i].GradNorm, fast[i].GradNorm, 1e-4, $"gradient norm of step {i + 1}");
        }
        // Adam divides by sqrt(v) + 1e-8: a gradient entry that is rounding noise in both paths (seen: 5.6e-9 against
        // -2.3e-9 where the median |gradient| is 5.8e-3) still moves by a sizeable part of the learning rate, either
        // way. So nearly every weight agrees to 1% of a step, and none differs by a whole learning-rate step.
        var plainWeights = TrainingFixtures.Snapshot(plainModel);
        var fastWeights = TrainingFixtures.Snapshot(fastModel);
        Assert.IsLessThan(settings.LearningRate, TrainingFixtures.MaxDifference(plainWeights, fastWeights));
        var differences = plainWeights.Keys.SelectMany(k => plainWeights[k].Zip(fastWeights[k], (x, y) => Math.Abs((double)x - y))).ToList();
        Assert.IsLessThanOrEqualTo(differences.Count / 10_000, differences.Count(d => d > 0.01 * settings.LearningRate),
            "weights further apart than 1% of a learning-rate step");
    }

    /// <summary>
    /// Five pairs (BOS-led prompts, EOS-ended responses) whose prompt, chosen and rejected lengths vary independently:
    /// a one-token prompt, one-token responses, chosen longer than rejected and the reverse.
    /// </summary>
    private static List<EncodedPair> UnevenPairs(int vocabulary)
    {
        var random = new Random(3);
        List<int> Ids(int n, int? first, int? last)
        {
            var ids = Enumerable.Range(0, n).Select(_ => random.Next(3, vocabulary)).ToList();
            if (first is int f) ids[0] = f;
            if (last is int l) ids[^1] = l;
            return ids;
        }
        return new[] { (3, 20, 1), (30, 2, 15), (1, 5, 40), (12, 12, 12), (25, 1, 1) }
            .Select(s => new EncodedPair(Ids(s.Item1, 1, null), Ids(s.Item2, null, 2), Ids(s.Item3, null, 2))).ToList();
    }

    private static void AssertSameAsPlain(TrainingSettings fast)
    {
        using var model = TrainingFixtures.LoadModel();
        AssertSameAsPlain(model.Network, TrainingFixtures.TrainPairs(model, 5), fast); // different lengths: padding in both layouts
    }

    private static void AssertSameAsPlain(LlamaForCausalLM network, IReadOnlyList<EncodedPair> pairs, TrainingSettings fast,
        double tolerance = Tolerance)
    {
        var plain = fast with { SharedPromptForward = false, LogitsChunkRows = 0, RecomputeActivations = false };
        double nllTokens = pairs.Sum(p => (double)p.NllTokenCount(fast.IncludePromptInNll));
        var (plainLoss, plainStats, plainGrads) = LossAndGradients(network, pairs, plain, nllTokens);
        var (fastLoss, fastStats, fastGrads) = LossAndGradients(network, pairs, fast, nllTokens);

        Assert.AreEqual(plainLoss, fastLoss, tolerance, "loss");
        // The log-probability sums run over every scored token (magnitude ~100 here): float32 rounding of the summands
        // grows with the sum, so they are compared at 1e-6 relative (the loss itself, an average, at the absolute tolerance).
        Assert.AreEqual(plainStats.ChosenLogpSum, fastStats.ChosenLogpSum, Math.Max(tolerance, 1e-6 * Math.Abs(plainStats.ChosenLogpSum)), "chosen log-probabilities");
        Assert.AreEqual(plainStats.RejectedLogpSum, fastStats.RejectedLogpSum, Math.Max(tolerance, 1e-6 * Math.Abs(plainStats.RejectedLogpSum)), "rejected log-probabilities");
        Assert.AreEqual(plainStats.NllTokens, fastStats.NllTokens, "NLL tokens");
        foreach (var (name, expected) in plainGrads)
        {
            Assert.IsTrue(fastGrads[name].All(double.IsFinite), $"gradient of {name} is finite");
            double worst = expected.Zip(fastGrads[name], (a, b) => Math.Abs(a - b)).Max();
            Assert.IsLessThan(tolerance, worst, $"gradient of {name}");
        }
        Assert.IsGreaterThan(0, plainGrads.Values.Sum(g => g.Sum(Math.Abs)), "gradients are not all zero");
    }

    private static (double Loss, OrpoBatchStatistics Statistics, Dictionary<string, double[]> Gradients) LossAndGradients(
        LlamaForCausalLM network, IReadOnlyList<EncodedPair> pairs, TrainingSettings settings, double nllTokens)
    {
        network.train();
        network.zero_grad();
        using var scope = NewDisposeScope();
        var (terms, _) = PreferenceForward.Loss(network, pairs, settings, CPU, nllTokens, pairs.Count);
        terms.Loss.backward();
        var grads = network.NamedWeights().ToDictionary(p => p.Name, p => p.Parameter.grad!.to_type(ScalarType.Float64).data<double>().ToArray());
        return (terms.Loss.ToDouble(), terms.Statistics, grads);
    }
}
