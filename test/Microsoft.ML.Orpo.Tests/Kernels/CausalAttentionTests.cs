using System.Numerics;
using Microsoft.ML.Orpo.Modeling;
using Microsoft.ML.Orpo.Tests.Infrastructure;
using TorchSharp;
using Microsoft.ML.Orpo.ModelFiles;
using Microsoft.ML.Orpo.Ops.Reference;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Microsoft.ML.Orpo.Tests.Kernels;

/// <summary>
/// The small-head causal attention kernel (<see cref="CausalAttention"/>): independent of the thread count, its exp,
/// what it takes, and its wiring into the decoder (its values and gradients against the reference are
/// <see cref="OpEquivalenceTests"/>'); grouped one-token decoding (<see cref="GroupedQueryAttention"/>) against the
/// repeated-cache path, bit for bit.
/// </summary>
[TestClass]
public sealed class CausalAttentionTests
{
    /// <summary>cos/sin (B, 1, T, d) of the rotate-half convention at random positions and frequencies.</summary>
    private static (Tensor Cos, Tensor Sin) Angles(long b, long t, long d)
    {
        var half = rand(b, 1, t, d / 2) * 20;
        var angles = cat(new[] { half, half }, -1);
        return (angles.cos(), angles.sin());
    }

    /// <summary>Max absolute difference relative to the largest magnitude (at least 1).</summary>
    private static void AssertClose(Tensor expected, Tensor actual, string what, double tolerance = 2e-6)
    {
        double scale = Math.Max(1, expected.abs().max().ToDouble());
        double error = (actual.to_type(ScalarType.Float64) - expected).abs().max().ToDouble() / scale;
        Assert.IsLessThan(tolerance, error, $"{what}: relative error {error:E2}");
    }

    [TestMethod]
    public void KernelResultsDoNotDependOnTheThreadCount()
    {
        using var scope = NewDisposeScope();
        manual_seed(5);
        var q = randn(3, 4, 50, 8).requires_grad_(true);
        var k = randn(3, 2, 50, 8).requires_grad_(true);
        var v = randn(3, 2, 50, 8).requires_grad_(true);
        var upstream = randn(3, 50, 32);
        var (cos, sin) = Angles(3, 50, 8);
        ThreadCounts.AssertSameResults(() =>
        {
            var y = CausalAttention.Apply(q, k, v, cos, sin);
            return autograd.grad(new[] { (y * upstream).sum() }, new[] { q, k, v }).Prepend(y.detach()).ToArray();
        });
    }

    [TestMethod]
    public void KernelExpIsWithinTwoUlpAndZeroBelowTheNormalRange()
    {
        double worst = 0;
        for (float x = -87.25f; x <= 0; x += 0.00731f)
        {
            float actual = VectorMath.Exp(new Vector<float>(x))[0];
            float expected = (float)Math.Exp(x);
            double ulp = Math.Abs(actual - Math.Exp(x)) / (MathF.BitIncrement(expected) - expected);
            worst = Math.Max(worst, ulp);
        }
        Assert.IsLessThan(2.0, worst, $"worst error {worst:F2} ulp");
        Assert.AreEqual(1f, VectorMath.Exp(Vector<float>.Zero)[0]);
        Assert.AreEqual(0f, VectorMath.Exp(new Vector<float>(float.NegativeInfinity))[0]);
        Assert.AreEqual(0f, VectorMath.Exp(new Vector<float>(-100f))[0]);
    }

    [TestMethod]
    public void KernelServesOnlyFloat32HeadsUpToItsWidth()
    {
        using var scope = NewDisposeScope();
        Assert.IsTrue(CausalAttention.Supports(zeros(1, 2, 3, 16), zeros(1, 1, 3, 16), zeros(1, 1, 3, 16), zeros(1, 1, 3, 16)));
        Assert.IsFalse(CausalAttention.Supports(zeros(1, 2, 3, 32), zeros(1, 1, 3, 32), zeros(1, 1, 3, 32), zeros(1, 1, 3, 32)), "wide heads use SDPA");
        var f64 = zeros(new long[] { 1, 2, 3, 8 }, ScalarType.Float64);
        Assert.IsFalse(CausalAttention.Supports(f64, f64, f64, f64), "float64 uses SDPA");
    }

    /// <summary>The decoder's default causal path (the kernel) equals the same network given an explicit causal mask (SDPA).</summary>
    [TestMethod]
    public void DecoderWithKernelEqualsSdpaPathInLogitsAndGradients()
    {
        using var model = CausalLanguageModel.Load(TestAssets.Stories260KHf, null, "cpu"); // GQA 8/4, head 8
        var network = model.Network;
        network.train();
        using var scope = NewDisposeScope();
        manual_seed(3);
        var ids = randint(3, 512, new long[] { 3, 41 });
        var upstream = randn(3, 41, 512);
        var causal = full(41, 41, float.NegativeInfinity).triu(1).view(1, 1, 41, 41).expand(3, 1, 41, 41);
        var parameters = network.NamedWeights();

        (Tensor Logits, Tensor[] Grads) Run(Tensor? mask)
        {
            network.zero_grad();
            var logits = network.Forward(ids, mask: mask);
            (logits * upstream).sum().backward();
            return (logits.detach(), parameters.Select(p => p.Parameter.grad!.clone()).ToArray());
        }
        var (kernelLogits, kernelGrads) = Run(null);
        var (sdpaLogits, sdpaGrads) = Run(causal);

        // Both sides are float32 through five layers: agreement to float32 rounding, not to the kernel's own 2e-6.
        AssertClose(sdpaLogits.to_type(ScalarType.Float64), kernelLogits, "logits", 2e-5);
        for (int i = 0; i < parameters.Count; i++)
            AssertClose(sdpaGrads[i].to_type(ScalarType.Float64), kernelGrads[i], parameters[i].Name, 2e-5);
        network.zero_grad();
        network.eval();
    }

    [TestMethod]
    [DataRow(8, 4, true, DisplayName = "two query heads per key/value head, padding mask")]
    [DataRow(8, 2, false, DisplayName = "four query heads per key/value head, no mask")]
    public void GroupedOneTokenAttentionEqualsRepeatedCacheBitForBit(int heads, int kvHeads, bool masked)
    {
        using var scope = NewDisposeScope();
        manual_seed(9);
        long b = 3, s = 37, d = 8;
        var q = randn(b, heads, 1, d);
        var k = randn(b, kvHeads, s, d);
        var v = randn(b, kvHeads, s, d);
        Tensor? mask = masked ? zeros(b, 1, 1, s).index_fill_(3, tensor(new long[] { 0, 1, 2 }), float.NegativeInfinity) : null;
        int groups = heads / kvHeads;
        var repeated = F.scaled_dot_product_attention(q, k.repeat_interleave(groups, dim: 1), v.repeat_interleave(groups, dim: 1), attn_mask: mask)
            .transpose(1, 2).reshape(b, 1, heads * d);
        var grouped = GroupedQueryAttention.OneQuery(q, k, v, mask);
        Assert.IsTrue(repeated.eq(grouped).all().ToBoolean(), $"max difference {(repeated - grouped).abs().max().ToDouble():E2}");
    }
}
