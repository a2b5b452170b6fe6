using Microsoft.ML.Orpo.Modeling;
using Microsoft.ML.Orpo.Tests.Infrastructure;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Microsoft.ML.Orpo.Tests.Modeling;

/// <summary>The float32 SwiGLU tail <c>down(silu(gate) * up)</c> (<see cref="FusedSwiGlu"/>) against the float64 formula.</summary>
[TestClass]
public sealed class FusedSwiGluTests
{
    private static double RelativeError(Tensor actual, Tensor expected) =>
        (actual.to_type(ScalarType.Float64) - expected).abs().max().ToDouble() / Math.Max(1e-30, expected.abs().max().ToDouble());

    [TestMethod]
    [DataRow(new long[] { 2, 37, 40 }, 24, false, DisplayName = "width not a multiple of the vector width")]
    [DataRow(new long[] { 3, 64, 172 }, 64, true, DisplayName = "stories260K MLP width, with bias, several chunks")]
    [DataRow(new long[] { 5, 9 }, 7, true, DisplayName = "2-D input, tiny")]
    public void MatchesFloat64FormulaInValueAndGradients(long[] shape, int outputs, bool bias)
    {
        using var scope = NewDisposeScope();
        manual_seed(31);
        long width = shape[^1];
        // Gate values out to +-40: the logistic function must neither overflow nor lose its tails.
        var gate = (randn(shape) * linspace(0.1, 12, width)).requires_grad_(true);
        var up = randn(shape).requires_grad_(true);
        using var down = nn.Linear(width, outputs, hasBias: bias);
        var upstream = randn(shape[..^1].Append(outputs).ToArray());
        Assert.IsTrue(FusedSwiGlu.Supports(gate, up, down));

        var leaves = new List<Tensor> { gate, up, down.weight! };
        if (bias) leaves.Add(down.bias!);
        var g64 = gate.to_type(ScalarType.Float64);
        var expected = F.linear(g64 * sigmoid(g64) * up.to_type(ScalarType.Float64), down.weight!.to_type(ScalarType.Float64),
            down.bias?.to_type(ScalarType.Float64));
        var expectedGrads = autograd.grad(new[] { (expected * upstream.to_type(ScalarType.Float64)).sum() }, leaves);
        var actual = FusedSwiGlu.Apply(gate, up, down);
        var actualGrads = autograd.grad(new[] { (actual * upstream).sum() }, leaves);

        Assert.IsLessThan(2e-6, RelativeError(actual, expected), "output");
        string[] names = { "gate", "up", "down weight", "down bias" };
        for (int i = 0; i < leaves.Count; i++)
            Assert.IsLessThan(2e-6, RelativeError(actualGrads[i], expectedGrads[i]), $"{names[i]} gradient");
        using (no_grad())
            Assert.IsTrue(FusedSwiGlu.Apply(gate, up, down).eq(actual).all().ToBoolean(), "the no-grad path (no autograd node) gives the same output");
    }

    [TestMethod]
    public void SigmoidTailsAndSpecialValues()
    {
        using var scope = NewDisposeScope();
        var gate = tensor(new float[] { -100f, -88f, -20f, -1e-30f, 0f, 1e-30f, 20f, 88f, 100f, float.PositiveInfinity, float.NaN });
        var up = ones_like(gate);
        using var product = FusedSwiGlu.Product(gate, up);
        var expected = F.silu(gate);
        float[] actual = product.data<float>().ToArray(), reference = expected.data<float>().ToArray();
        for (int i = 0; i < actual.Length; i++)
        {
            string at = $"silu({gate[i].ToSingle()}), vector and scalar tail alike";
            if (float.IsNaN(reference[i])) Assert.IsTrue(float.IsNaN(actual[i]), at);
            else if (float.IsInfinity(reference[i])) Assert.AreEqual(reference[i], actual[i], at);
            else Assert.AreEqual(reference[i], actual[i], Math.Abs(reference[i]) * 1e-6 + 1e-35, at);
        }
    }

    [TestMethod]
    public void ResultsDoNotDependOnTheThreadCount()
    {
        using var scope = NewDisposeScope();
        manual_seed(5);
        var gate = (randn(4, 50, 300) * 3).requires_grad_(true);
        var up = randn(4, 50, 300).requires_grad_(true);
        using var down = nn.Linear(300, 16, hasBias: false);
        var upstream = randn(4, 50, 16);
        ThreadCounts.AssertSameResults(() =>
        {
            var y = FusedSwiGlu.Apply(gate, up, down);
            return autograd.grad(new[] { (y * upstream).sum() }, new[] { gate, up }).Prepend(y.detach()).ToArray();
        });
    }

    [TestMethod]
    public void OnlyFloat32CpuTensorsAreSupported()
    {
        using var scope = NewDisposeScope();
        using var down = nn.Linear(8, 4);
        var x = randn(3, 8);
        Assert.IsTrue(FusedSwiGlu.Supports(x, x, down));
        Assert.IsFalse(FusedSwiGlu.Supports(x.to_type(ScalarType.BFloat16), x.to_type(ScalarType.BFloat16), down), "bf16 mixed precision keeps the tensor formula");
        Assert.IsFalse(FusedSwiGlu.Supports(x, randn(3, 7), down), "gate and up must have one shape");
        using var down64 = nn.Linear(8, 4).to(ScalarType.Float64);
        Assert.IsFalse(FusedSwiGlu.Supports(x.to_type(ScalarType.Float64), x.to_type(ScalarType.Float64), down64));
    }
}
