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
    [DataRow(false, false, DisplayName = "float32")]
    [DataRow(true, false, DisplayName = "bfloat16 products, trainable head")]
    [DataRow(true, true, DisplayName = "bfloat16 products, frozen head converted once per scratch")]
    public void ATrainingRunsReusedBlocksGiveTheSameResultsAsFreshOnes(bool bfloat16, bool frozen)
    {
        // Sizes that reach the CPU GEMM where it is enabled. The blocks keep the previous call's logits and products (and
        // are regrown between calls), and a frozen head's converted copy is kept: stale values must never leak into a
        // result, also when the frozen head passed in is another one (the two weights alternate).
        using var scope = NewDisposeScope();
        manual_seed(12);
        const int pairs = 6, vocabulary = 1024, width = 256;
        var (sources, sequence, isResponse) = Layout(pairs, new Random(8));
        var rowsPerPair = 60;
        sources = Enumerable.Range(0, sources.Length * rowsPerPair / 10).Select(i => (long)i).ToArray();
        sequence = sources.Select(i => i % (2 * pairs)).ToArray();
        isResponse = sources.Select(i => i % 5 != 0 || i % (2 * pairs) >= pairs).ToArray();
        var hidden = randn(sources.Length, width);
        var weights = new[] { randn(vocabulary, width) * 0.05f, randn(vocabulary, width) * 0.05f };
        var targets = randint(0, vocabulary, new long[] { sources.Length }, dtype: ScalarType.Int64);
        var scale = new OrpoLossScale(StepNllTokens: 300, StepPairs: pairs, Lambda: 0.3);
        ScalarType? matmulType = bfloat16 ? ScalarType.BFloat16 : null;
        using var rows = ScoredRows.Create(tensor(sources), targets, tensor(sequence), tensor(isResponse), pairs);

        (double Loss, Tensor Hidden, Tensor? Weight) Run(int chunkRows, Tensor weight, LogitsScratch? scratch)
        {
            var h = hidden.clone().requires_grad_(true);
            var w = frozen ? weight : weight.clone().requires_grad_(true);
            var (loss, _) = FusedOrpoLoss.Compute(h, w, rows, scale.Objective, chunkRows, matmulType, scratch);
            loss.backward();
            return (loss.ToDouble(), h.grad!, frozen ? null : w.grad!);
        }

        using var shared = new LogitsScratch();
        int call = 0;
        foreach (int chunkRows in new[] { 1, 10_000, 1, 150 })        // small block, regrown, reused with stale values
        {
            var weight = weights[call++ % 2];
            var fresh = Run(chunkRows, weight, null);
            var reused = Run(chunkRows, weight, shared);
            Assert.AreEqual(fresh.Loss, reused.Loss, 0.0, $"loss, chunks of {chunkRows} rows");
            Assert.AreEqual(0.0, (fresh.Hidden - reused.Hidden).abs().max().ToDouble(), 0.0, $"hidden gradient, chunks of {chunkRows} rows");
            Assert.IsGreaterThan(1e-6, fresh.Hidden.abs().max().ToDouble(), "the gradient is not trivially zero");
            if (frozen) continue;
            Assert.AreEqual(0.0, (fresh.Weight! - reused.Weight!).abs().max().ToDouble(), 0.0, $"weight gradient, chunks of {chunkRows} rows");
            Assert.IsGreaterThan(1e-4, fresh.Weight!.abs().max().ToDouble(), "the gradient is not trivially zero");
        }
        if (!frozen) return;
        var converted = shared.Converted(weights[1], ScalarType.BFloat16);
        Assert.AreSame(converted, shared.Converted(weights[1], ScalarType.BFloat16), "kept, not converted again");
        Assert.IsTrue(converted.eq(weights[1].to_type(ScalarType.BFloat16)).all().item<bool>());
        Assert.AreSame(weights[0], shared.Converted(weights[0], ScalarType.Float32), "already of the type: the weight itself");
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
