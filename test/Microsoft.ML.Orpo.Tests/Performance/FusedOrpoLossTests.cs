using TorchSharp;
using Microsoft.ML.Orpo.Training;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Tests.Performance;

/// <summary>
/// The fused LM head + ORPO loss computes its gradients in the forward pass; they must equal autograd through the
/// plain formula (full log-softmax, per-pair means, <see cref="OrpoObjective.Loss"/>) for any chunking.
/// </summary>
[TestClass]
public sealed class FusedOrpoLossTests
{
    [TestMethod]
    [DataRow(1, DisplayName = "one pair per chunk")]
    [DataRow(25, DisplayName = "a few pairs per chunk")]
    [DataRow(10_000, DisplayName = "one chunk")]
    public void LossAndGradientsEqualAutogradThroughThePlainFormula(int chunkRows)
    {
        using var scope = NewDisposeScope();
        manual_seed(11);
        const int pairs = 4, vocabulary = 30, width = 8;
        var (sources, sequence, isResponse) = Layout(pairs, new Random(5));
        long n = sources.Length, m = n + 7;                                  // hidden has unscored rows too
        var hidden = randn(m, width, dtype: ScalarType.Float64).requires_grad_(true);
        var weight = (randn(vocabulary, width, dtype: ScalarType.Float64) * 0.7).requires_grad_(true);
        var targets = randint(0, vocabulary, new long[] { n }, dtype: ScalarType.Int64);
        var scale = new OrpoLossScale(StepNllTokens: 40, StepPairs: 6, Lambda: 0.7);

        // Plain: full log-softmax of the scored rows, per-pair means and NLL sum, the objective, autograd.
        var src = tensor(sources);
        var logp = hidden.index_select(0, src).matmul(weight.t()).log_softmax(1).gather(1, targets.unsqueeze(1)).squeeze(1);
        var seq = tensor(sequence);
        var response = tensor(isResponse);
        var responseLogp = where(response, logp, zeros_like(logp));
        var perSequence = zeros(2 * pairs, dtype: ScalarType.Float64).index_add(0, seq, responseLogp, 1);
        var counts = zeros(2 * pairs, dtype: ScalarType.Float64).index_add(0, seq, response.to_type(ScalarType.Float64), 1);
        var means = perSequence / counts;
        var nllSum = where(seq < pairs, logp, zeros_like(logp)).sum().neg();
        var expected = OrpoObjective.Loss(means.narrow(0, 0, pairs), means.narrow(0, pairs, pairs), nllSum, 1, scale.StepNllTokens,
            scale.StepPairs, scale.Lambda).Loss;
        (expected * 3).backward();                                          // an upstream gradient other than 1
        var (expectedHidden, expectedWeight) = (hidden.grad!.clone(), weight.grad!.clone());
        hidden.grad!.zero_();
        weight.grad!.zero_();

        using var rows = ScoredRows.Create(src, targets, seq, response, pairs);
        var (loss, sums) = FusedOrpoLoss.Compute(hidden, weight, rows, scale.Objective, chunkRows);
        (loss * 3).backward();

        Assert.AreEqual(expected.ToDouble(), loss.ToDouble(), 1e-12, "loss");
        Assert.AreEqual(0, (hidden.grad! - expectedHidden).abs().max().ToDouble(), 1e-12, "hidden gradient");
        Assert.AreEqual(0, (weight.grad! - expectedWeight).abs().max().ToDouble(), 1e-12, "weight gradient");
        Assert.IsGreaterThan(1e-3, expectedWeight.abs().max().ToDouble(), "the reference gradient is not trivially zero");
        var chosenSums = sums.select(1, ScoredRows.ChosenResponse);
        Assert.AreEqual(0, (chosenSums - perSequence.narrow(0, 0, pairs)).abs().max().ToDouble(), 1e-12, "chosen sums");
    }

    [TestMethod]
    public void ATrainingRunsReusedLogitsBlockGivesTheSameResultsAsAFreshOne()
    {
        // float32 and sizes that reach the CPU GEMM where it is enabled. The block keeps the previous call's logits
        // (and is regrown between calls), so stale values must never leak into a result.
        using var scope = NewDisposeScope();
        manual_seed(12);
        const int pairs = 6, vocabulary = 1024, width = 256;
        var (sources, sequence, isResponse) = Layout(pairs, new Random(8));
        var rowsPerPair = 60;
        sources = Enumerable.Range(0, sources.Length * rowsPerPair / 10).Select(i => (long)i).ToArray();
        sequence = sources.Select(i => i % (2 * pairs)).ToArray();
        isResponse = sources.Select(i => i % 5 != 0 || i % (2 * pairs) >= pairs).ToArray();
        var hidden = randn(sources.Length, width);
        var weight = randn(vocabulary, width) * 0.05f;
        var targets = randint(0, vocabulary, new long[] { sources.Length }, dtype: ScalarType.Int64);
        var scale = new OrpoLossScale(StepNllTokens: 300, StepPairs: pairs, Lambda: 0.3);
        using var rows = ScoredRows.Create(tensor(sources), targets, tensor(sequence), tensor(isResponse), pairs);

        (double Loss, Tensor Hidden, Tensor Weight) Run(int chunkRows, LogitsScratch? scratch)
        {
            var h = hidden.clone().requires_grad_(true);
            var w = weight.clone().requires_grad_(true);
            var (loss, _) = FusedOrpoLoss.Compute(h, w, rows, scale.Objective, chunkRows, scratch: scratch);
            loss.backward();
            return (loss.ToDouble(), h.grad!, w.grad!);
        }

        using var shared = new LogitsScratch();
        foreach (int chunkRows in new[] { 1, 10_000, 1, 150 })        // small block, regrown, reused with stale values
        {
            var fresh = Run(chunkRows, null);
            var reused = Run(chunkRows, shared);
            Assert.AreEqual(fresh.Loss, reused.Loss, 0.0, $"loss, chunks of {chunkRows} rows");
            Assert.AreEqual(0.0, (fresh.Hidden - reused.Hidden).abs().max().ToDouble(), 0.0, $"hidden gradient, chunks of {chunkRows} rows");
            Assert.AreEqual(0.0, (fresh.Weight - reused.Weight).abs().max().ToDouble(), 0.0, $"weight gradient, chunks of {chunkRows} rows");
            Assert.IsGreaterThan(1e-4, fresh.Weight.abs().max().ToDouble(), "the gradient is not trivially zero");
        }
    }

    /// <summary>
    /// Scored rows of <paramref name="pairs"/> pairs in a shuffled order: each pair has a few chosen response rows,
    /// rejected response rows and chosen prompt rows (scored in the NLL only).
    /// </summary>
    private static (long[] Sources, long[] Sequence, bool[] IsResponse) Layout(int pairs, Random random)
    {
        var entries = new List<(long Sequence, bool IsResponse)>();
        for (int p = 0; p < pairs; p++)
        {
            for (int i = 0, c = random.Next(2, 9); i < c; i++) entries.Add((p, true));
            for (int i = 0, r = random.Next(2, 9); i < r; i++) entries.Add((pairs + p, true));
            for (int i = 0, q = random.Next(0, 4); i < q; i++) entries.Add((p, false));
        }
        var order = entries.Select((e, i) => (e, key: random.Next())).OrderBy(x => x.key).Select(x => x.e).ToList();
        var sources = Enumerable.Range(0, order.Count).Select(i => (long)(i * 7 % (order.Count + 7))).ToArray();
        return (sources, order.Select(e => e.Sequence).ToArray(), order.Select(e => e.IsResponse).ToArray());
    }
}
