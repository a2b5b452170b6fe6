using TorchSharp;
using Microsoft.ML.Orpo.Modeling;
using Microsoft.ML.Orpo.Tests.Training;
using Microsoft.ML.Orpo.Training;
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
    public void ChunkedLogProbsEqualFullLogitsInValueAndGradient()
    {
        using var scope = NewDisposeScope();
        manual_seed(7);
        var hidden = randn(3, 37, 16, dtype: ScalarType.Float64).requires_grad_(true);
        var weight = (randn(50, 16, dtype: ScalarType.Float64) * 0.5).requires_grad_(true);
        var targets = randint(0, 50, new long[] { 3, 37 }, dtype: ScalarType.Int64);
        var upstream = randn(3, 37, dtype: ScalarType.Float64);

        var logits = hidden.matmul(weight.t());
        var expected = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1);
        var (expectedHidden, expectedWeight) = Gradients(expected, upstream, hidden, weight);

        var chunked = ChunkedLogProbs.Compute(hidden, weight, targets, chunkRows: 16); // 111 rows: 16 does not divide it
        var (chunkedHidden, chunkedWeight) = Gradients(chunked, upstream, hidden, weight);

        Assert.AreEqual(0, (chunked - expected).abs().max().ToDouble(), 1e-12, "values");
        Assert.AreEqual(0, (chunkedHidden - expectedHidden).abs().max().ToDouble(), 1e-12, "hidden gradient");
        Assert.AreEqual(0, (chunkedWeight - expectedWeight).abs().max().ToDouble(), 1e-12, "weight gradient");
    }

    [TestMethod]
    [DataRow(false, 0, DisplayName = "shared prompt")]
    [DataRow(true, 0, DisplayName = "shared prompt, prompt in NLL")]
    [DataRow(false, 64, DisplayName = "shared prompt + chunked logits")]
    public void SharedPromptForwardEqualsConcatenatedLossAndGradients(bool includePromptInNll, int chunkRows) =>
        AssertSameAsPlain(new TrainingSettings { Lambda = 0.5, IncludePromptInNll = includePromptInNll, SharedPromptForward = true, LogitsChunkRows = chunkRows });

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
    public void RecomputedActivationsTrainBitIdenticalWeights()
    {
        // The recomputed layer runs the same operations on the same inputs, so training is not merely close but
        // identical; that is why a checkpoint may be resumed with the switch changed (it is not in the fingerprint).
        using var storedModel = TrainingFixtures.LoadModel();
        using var recomputedModel = TrainingFixtures.LoadModel();
        var pairs = TrainingFixtures.TrainPairs(storedModel, 8);
        var settings = TrainingFixtures.Plain(batchSize: 4, learningRate: 1e-3);
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
        var allowed = batch.Mask[0, 0].eq(0).data<bool>().ToArray();
        bool Sees(int query, int key) => allowed[query * 8 + key];
        Assert.IsTrue(Sees(6, 2) && Sees(7, 6) && Sees(3, 0), "responses see the prompt and their own past");
        Assert.IsFalse(Sees(6, 3) || Sees(7, 5) || Sees(2, 3), "rejected never sees chosen; no future keys");
        // Predictions: chosen 7 from position 2, 8 from 3, 2 from 4; rejected 9 from position 2 (the prompt's end), 2 from 6.
        CollectionAssert.AreEqual(new long[] { 2, 3, 4, 2, 6 }, batch.Sources.data<long>().ToArray());
        CollectionAssert.AreEqual(new long[] { 7, 8, 2, 9, 2 }, batch.Targets.data<long>().ToArray());
        CollectionAssert.AreEqual(new long[] { 0, 0, 0, 1, 1 }, batch.Rows.data<long>().ToArray());
        Assert.AreEqual(2L * 3 + 3 + 2, batch.EquivalentTokens);
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
        // Adam divides by sqrt(v): a gradient entry that is ~0 in both paths can move by up to the learning rate
        // either way after rounding, so the weights agree to well within one learning-rate step, not to 1e-5.
        Assert.IsLessThan(0.5 * settings.LearningRate,
            TrainingFixtures.MaxDifference(TrainingFixtures.Snapshot(plainModel), TrainingFixtures.Snapshot(fastModel)));
    }

    private static (Tensor Hidden, Tensor Weight) Gradients(Tensor output, Tensor upstream, Tensor hidden, Tensor weight)
    {
        hidden.grad?.zero_();
        weight.grad?.zero_();
        (output * upstream).sum().backward();
        return (hidden.grad!.clone(), weight.grad!.clone());
    }

    private static void AssertSameAsPlain(TrainingSettings fast)
    {
        using var model = TrainingFixtures.LoadModel();
        var pairs = TrainingFixtures.TrainPairs(model, 5); // different lengths: padding in both layouts
        var plain = fast with { SharedPromptForward = false, LogitsChunkRows = 0, RecomputeActivations = false };
        double nllTokens = pairs.Sum(p => fast.IncludePromptInNll ? p.PromptIds.Count + p.ChosenIds.Count - 1.0 : p.ChosenIds.Count);
        var (plainLoss, plainStats, plainGrads) = LossAndGradients(model, pairs, plain, nllTokens);
        var (fastLoss, fastStats, fastGrads) = LossAndGradients(model, pairs, fast, nllTokens);

        Assert.AreEqual(plainLoss, fastLoss, Tolerance, "loss");
        Assert.AreEqual(plainStats.ChosenLogpSum, fastStats.ChosenLogpSum, Tolerance, "chosen log-probabilities");
        Assert.AreEqual(plainStats.RejectedLogpSum, fastStats.RejectedLogpSum, Tolerance, "rejected log-probabilities");
        Assert.AreEqual(plainStats.NllTokens, fastStats.NllTokens, "NLL tokens");
        foreach (var (name, expected) in plainGrads)
        {
            double worst = expected.Zip(fastGrads[name], (a, b) => Math.Abs((double)a - b)).Max();
            Assert.IsLessThan(Tolerance, worst, $"gradient of {name}");
        }
        Assert.IsGreaterThan(0, plainGrads.Values.Sum(g => g.Sum(Math.Abs)), "gradients are not all zero");
    }

    private static (double Loss, OrpoBatchStatistics Statistics, Dictionary<string, float[]> Gradients) LossAndGradients(
        CausalLanguageModel model, IReadOnlyList<EncodedPair> pairs, TrainingSettings settings, double nllTokens)
    {
        model.Network.train();
        model.Network.zero_grad();
        using var scope = NewDisposeScope();
        var (terms, _) = PreferenceForward.Loss(model.Network, pairs, settings, CPU, nllTokens, pairs.Count);
        terms.Loss.backward();
        var grads = model.Network.NamedWeights().ToDictionary(p => p.Name, p => p.Parameter.grad!.data<float>().ToArray());
        return (terms.Loss.ToDouble(), terms.Statistics, grads);
    }
}
