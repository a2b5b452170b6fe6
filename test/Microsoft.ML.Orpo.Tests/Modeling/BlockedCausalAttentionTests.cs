using Microsoft.ML.Orpo.Modeling;
using Microsoft.ML.Orpo.Tests.Infrastructure;
using TorchSharp;
using Microsoft.ML.Orpo.Ops.Reference;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Tests.Modeling;

/// <summary>Causal attention through per-head GEMM blocks (<see cref="BlockedCausalAttention"/>) against float64 attention.</summary>
[TestClass]
public sealed class BlockedCausalAttentionTests
{
    [TestMethod]
    [DataRow(2, 4, 4, 200, 64, DisplayName = "several row blocks, the last one partial")]
    [DataRow(1, 6, 2, 37, 40, DisplayName = "grouped queries (3 per key/value head), one block, head 40 wide")]
    [DataRow(3, 2, 1, 1, 32, DisplayName = "a single token")]
    public void MatchesFloat64AttentionInValuesAndGradients(int batch, int heads, int kvHeads, int length, int headDim)
    {
        using var kernel = KernelScopes.ForcePackedGemm();
        using var scope = NewDisposeScope();
        manual_seed(batch * 100 + length);
        var q = randn(batch, heads, length, headDim).requires_grad_(true);
        var k = randn(batch, kvHeads, length, headDim).requires_grad_(true);
        var v = randn(batch, kvHeads, length, headDim).requires_grad_(true);
        var upstream = randn(batch, length, heads * headDim);
        Assert.IsTrue(BlockedCausalAttention.Supports(q, k, v));
        long before = PackedGemm.ProductsOnThisThread;
        var y = BlockedCausalAttention.Apply(q, k, v);
        CollectionAssert.AreEqual(new long[] { batch, length, heads * headDim }, y.shape);
        y.backward(new[] { upstream });

        var q64 = q.detach().to_type(ScalarType.Float64).requires_grad_(true);
        var k64 = k.detach().to_type(ScalarType.Float64).requires_grad_(true);
        var v64 = v.detach().to_type(ScalarType.Float64).requires_grad_(true);
        int groups = heads / kvHeads;
        var scores = q64.matmul(k64.repeat_interleave(groups, dim: 1).transpose(-1, -2)) / Math.Sqrt(headDim);
        var causal = ones(length, length, dtype: ScalarType.Bool).triu(1);
        var y64 = scores.masked_fill(causal, double.NegativeInfinity).softmax(-1).matmul(v64.repeat_interleave(groups, dim: 1))
            .transpose(1, 2).reshape(batch, length, heads * headDim);
        y64.backward(new[] { upstream.to_type(ScalarType.Float64) });
        AssertClose(y, y64, "output");
        AssertClose(q.grad!, q64.grad!, "query gradient");
        AssertClose(k.grad!, k64.grad!, "key gradient");
        AssertClose(v.grad!, v64.grad!, "value gradient");
    }

    [TestMethod]
    public void ResultsDoNotDependOnTheThreadCount()
    {
        using var kernel = KernelScopes.ForcePackedGemm();
        using var scope = NewDisposeScope();
        manual_seed(21);
        var q = randn(2, 4, 150, 64);
        var k = randn(2, 2, 150, 64);
        var v = randn(2, 2, 150, 64);
        var upstream = randn(2, 150, 256);
        ThreadCounts.AssertSameResults(() =>
        {
            var (qg, kg, vg) = (q.clone().requires_grad_(true), k.clone().requires_grad_(true), v.clone().requires_grad_(true));
            var y = BlockedCausalAttention.Apply(qg, kg, vg);
            y.backward(new[] { upstream });
            return new[] { y.detach(), qg.grad!, kg.grad!, vg.grad! };
        });
    }

    [TestMethod]
    public void FusedRotationEqualsRotaryEmbeddingThenAttentionBitForBit()
    {
        using var kernel = KernelScopes.ForcePackedGemm();
        using var scope = NewDisposeScope();
        manual_seed(5);
        var config = new LlamaConfig { HiddenSize = 256, IntermediateSize = 8, NumHiddenLayers = 1, NumAttentionHeads = 4, NumKeyValueHeads = 2, HeadDim = 64, VocabSize = 8 };
        using var rotary = new RotaryEmbedding(config);
        var (cos, sin) = rotary.CosSin(arange(3, 103).unsqueeze(0).expand(2, 100), ScalarType.Float32);     // (2, 1, 100, 64)
        // The projections' layout: (B, T, heads, d) tensors seen as (B, heads, T, d).
        var qLeaf = randn(2, 100, 4, 64).requires_grad_(true);
        var kLeaf = randn(2, 100, 2, 64).requires_grad_(true);
        var vLeaf = randn(2, 100, 2, 64).requires_grad_(true);
        var (q, k, v) = (qLeaf.transpose(1, 2), kLeaf.transpose(1, 2), vLeaf.transpose(1, 2));
        var upstream = randn(2, 100, 256);
        Assert.IsTrue(BlockedCausalAttention.SupportsRotation(q, cos));

        var fused = BlockedCausalAttention.Apply(q, k, v, cos, sin);
        var fusedGrads = autograd.grad(new[] { (fused * upstream).sum() }, new[] { qLeaf, kLeaf, vLeaf });
        var separate = BlockedCausalAttention.Apply(ReferenceRotary.Forward(q, cos, sin), ReferenceRotary.Forward(k, cos, sin), v);
        var separateGrads = autograd.grad(new[] { (separate * upstream).sum() }, new[] { qLeaf, kLeaf, vLeaf });
        Tensor inference;
        using (no_grad()) inference = BlockedCausalAttention.Apply(q, k, v, cos, sin);

        Assert.IsTrue(fused.eq(separate).all().ToBoolean(), $"outputs differ by {(fused - separate).abs().max().ToDouble():E2}");
        Assert.IsTrue(inference.eq(separate).all().ToBoolean(), "the no-grad path rotates the same way");
        foreach (var (name, i) in new[] { ("query", 0), ("key", 1), ("value", 2) })
            Assert.IsTrue(fusedGrads[i].eq(separateGrads[i]).all().ToBoolean(),
                $"{name} gradients differ by {(fusedGrads[i] - separateGrads[i]).abs().max().ToDouble():E2}");
        Assert.IsFalse(BlockedCausalAttention.SupportsRotation(q, cos.to_type(ScalarType.Float64)), "float32 tables only");
        Assert.IsFalse(BlockedCausalAttention.SupportsRotation(q, cos.narrow(2, 0, 50)), "tables for every position");
    }

    [TestMethod]
    public void OnlyPlainFloat32CpuAttentionWithWideHeads()
    {
        using var scope = NewDisposeScope();
        var q = randn(1, 4, 10, 64);
        var k = randn(1, 2, 10, 64);
        Assert.AreEqual(PackedGemm.IsEnabled, BlockedCausalAttention.Supports(q, k, k), "follows the dispatcher's decision");
        if (PackedGemm.IsSupported)
            using (KernelPolicy.ForcingPackedGemm()) Assert.IsTrue(BlockedCausalAttention.Supports(q, k, k));
        Assert.IsFalse(BlockedCausalAttention.Supports(randn(1, 4, 10, 16), randn(1, 2, 10, 16), randn(1, 2, 10, 16)), "small heads: CausalAttention");
        Assert.IsFalse(BlockedCausalAttention.Supports(q.to_type(ScalarType.Float64), k.to_type(ScalarType.Float64), k.to_type(ScalarType.Float64)));
        Assert.IsFalse(BlockedCausalAttention.Supports(q, randn(1, 3, 10, 64), randn(1, 3, 10, 64)), "heads not a multiple of key/value heads");
        using (KernelPolicy.Without(CpuKernels.MatrixProduct)) Assert.IsFalse(BlockedCausalAttention.Supports(q, k, k));
    }

    private static void AssertClose(Tensor actual, Tensor expected, string what)
    {
        double scale = expected.abs().max().ToDouble() + 1e-12;
        double error = (actual.to_type(ScalarType.Float64) - expected).abs().max().ToDouble();
        Assert.IsLessThan(2e-5 * scale, error, $"{what}: worst error {error:E2} at scale {scale:E2}");
    }
}
