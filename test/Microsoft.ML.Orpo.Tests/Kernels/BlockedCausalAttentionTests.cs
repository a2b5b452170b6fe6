using Microsoft.ML.Orpo.Tests.Infrastructure;
using TorchSharp;
using Microsoft.ML.Orpo.Ops.Reference;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Tests.Kernels;

/// <summary>
/// Causal attention through per-head GEMM blocks (<see cref="BlockedCausalAttention"/>): independent of the thread
/// count, and what it takes. Its values and gradients against the reference are <see cref="OpEquivalenceTests"/>'.
/// </summary>
[TestClass]
public sealed class BlockedCausalAttentionTests
{
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
    public void OnlyPlainFloat32CpuAttentionWithWideHeads()
    {
        using var policy = KernelScopes.DefaultPolicy();
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
        var cos = randn(1, 1, 10, 64);
        Assert.IsTrue(BlockedCausalAttention.SupportsRotation(q, cos));
        Assert.IsFalse(BlockedCausalAttention.SupportsRotation(q, cos.to_type(ScalarType.Float64)), "float32 tables only");
        Assert.IsFalse(BlockedCausalAttention.SupportsRotation(q, cos.narrow(2, 0, 5)), "tables for every position");
    }
}
