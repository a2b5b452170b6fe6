using System.Numerics;
using Microsoft.ML.Orpo.Modeling;
using Microsoft.ML.Orpo.Tests.Infrastructure;
using TorchSharp;
using Microsoft.ML.Orpo.ModelFiles;
using Microsoft.ML.Orpo.Ops.Reference;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Microsoft.ML.Orpo.Tests.Modeling;

/// <summary>
/// The small-head causal attention kernel (<see cref="CausalAttention"/>) against float64 attention, and its wiring into
/// the decoder; grouped one-token decoding (<see cref="GroupedQueryAttention"/>) against the repeated-cache path, bit for bit.
/// </summary>
[TestClass]
public sealed class CausalAttentionTests
{
    /// <summary>float64 rotate-half rotary embedding of (B, heads, T, d) by (B, 1, T, d) cos/sin.</summary>
    private static Tensor Rope(Tensor x, Tensor cos, Tensor sin)
    {
        long half = x.shape[3] / 2;
        var x64 = x.to_type(ScalarType.Float64);
        var rotated = cat(new[] { -x64.narrow(-1, half, half), x64.narrow(-1, 0, half) }, -1);
        return x64 * cos.to_type(ScalarType.Float64) + rotated * sin.to_type(ScalarType.Float64);
    }

    /// <summary>(B, H, T, d) queries, (B, K, T, d) keys (rotated here) and values: float64 softmax attention with repeated heads -> (B, T, H * d).</summary>
    private static Tensor Reference(Tensor q, Tensor k, Tensor v, Tensor cos, Tensor sin)
    {
        long b = q.shape[0], h = q.shape[1], t = q.shape[2], d = q.shape[3], groups = h / k.shape[1];
        var q64 = Rope(q, cos, sin);
        var k64 = Rope(k, cos, sin).repeat_interleave(groups, dim: 1);
        var v64 = v.to_type(ScalarType.Float64).repeat_interleave(groups, dim: 1);
        var scores = q64.matmul(k64.transpose(-1, -2)) / Math.Sqrt(d);
        var future = ones(t, t, dtype: ScalarType.Bool).triu(1);
        var y = scores.masked_fill(future, double.NegativeInfinity).softmax(-1).matmul(v64);
        return y.transpose(1, 2).reshape(b, t, h * d);
    }

    [TestMethod]
    [DataRow(2, 8, 4, 37, 8, DisplayName = "GQA 8/4, head 8, length not a multiple of the vector width")]
    [DataRow(1, 2, 2, 1, 8, DisplayName = "one token")]
    [DataRow(3, 6, 2, 70, 16, DisplayName = "GQA 6/2, head 16 (two blocks of 8)")]
    [DataRow(2, 4, 1, 19, 6, DisplayName = "multi-query, head 6 (padded to 8)")]
    [DataRow(1, 3, 3, 9, 12, DisplayName = "no grouping, head 12")]
    public void KernelMatchesFloat64AttentionInValueAndGradients(int b, int h, int kvHeads, int t, int d)
    {
        using var scope = NewDisposeScope();
        manual_seed(11);
        // Queries and values as the projections make them: (B, T, heads, d) memory seen as (B, heads, T, d).
        var qLeaf = randn(b, t, h, d).mul(2).requires_grad_(true);
        var k = randn(b, kvHeads, t, d).mul(2).requires_grad_(true);
        var vLeaf = randn(b, t, kvHeads, d).requires_grad_(true);
        var (q, v) = (qLeaf.transpose(1, 2), vLeaf.transpose(1, 2));
        var upstream = randn(b, t, h * d);
        var (cos, sin) = Angles(b, t, d);
        Assert.IsTrue(CausalAttention.Supports(q, k, v, cos));

        var expected = Reference(q, k, v, cos, sin);
        var expectedGrads = autograd.grad(new[] { (expected * upstream.to_type(ScalarType.Float64)).sum() }, new[] { qLeaf, k, vLeaf });
        var actual = CausalAttention.Apply(q, k, v, cos, sin);
        var actualGrads = autograd.grad(new[] { (actual * upstream).sum() }, new[] { qLeaf, k, vLeaf });

        CollectionAssert.AreEqual(new long[] { b, t, h * d }, actual.shape);
        using (no_grad())
            Assert.IsTrue(CausalAttention.Apply(q, k, v, cos, sin).eq(actual).all().ToBoolean(), "the no-grad path (no autograd node) gives the same output");
        AssertClose(expected, actual, "output");
        string[] names = { "dq", "dk", "dv" };
        for (int i = 0; i < 3; i++) AssertClose(expectedGrads[i], actualGrads[i], names[i]);
    }

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
    public void FusedRotationEqualsTheRotaryTensorOpsBitForBit()
    {
        using var scope = NewDisposeScope();
        manual_seed(2);
        var config = new LlamaConfig { HiddenSize = 32, IntermediateSize = 8, NumHiddenLayers = 1, NumAttentionHeads = 4, HeadDim = 8, VocabSize = 8 };
        using var rotary = new RotaryEmbedding(config);
        var (cos, sin) = rotary.CosSin(arange(100, 130).unsqueeze(0).expand(2, 30), ScalarType.Float32);  // (2, 1, 30, 8)
        var leaf = randn(2, 30, 4, 8).requires_grad_(true);
        var x = leaf.transpose(1, 2);                                                                    // (2, 4, 30, 8) view
        var upstream = randn(2, 4, 30, 8);

        var expected = ReferenceRotary.Forward(x, cos, sin);
        var expectedGrad = autograd.grad(new[] { (expected * upstream).sum() }, new[] { leaf })[0];
        var actual = empty(2, 4, 30, 8);
        CausalAttention.RotateInto(x, actual, cos, sin);
        var actualGrad = CausalAttention.RotateBack(upstream.contiguous(), cos, sin).transpose(1, 2);   // back to (2, 30, 4, 8)

        Assert.IsTrue(expected.eq(actual).all().ToBoolean(), $"values differ by {(expected - actual).abs().max().ToDouble():E2}");
        Assert.IsTrue(expectedGrad.eq(actualGrad).all().ToBoolean(), $"gradients differ by {(expectedGrad - actualGrad).abs().max().ToDouble():E2}");
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
