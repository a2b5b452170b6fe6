using TorchSharp;
using Microsoft.ML.Orpo.Training;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Tests.Performance;

/// <summary>
/// The fused LM head + ORPO loss (<see cref="FusedOrpoLoss"/>) with the logits block a training run reuses. Its loss and
/// gradients against the plain formula, for any chunking, are <see cref="Modeling.OpEquivalenceTests"/>'.
/// </summary>
[TestClass]
public sealed class FusedOrpoLossTests
{
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
