using Microsoft.ML.Orpo.Modeling;
using Microsoft.ML.Orpo.Tests.Infrastructure;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Tests.Modeling;

/// <summary>The one-pass float32 RMSNorm (<see cref="FusedRmsNorm"/>) against the float64 formula, and its wiring.</summary>
[TestClass]
public sealed class FusedRmsNormTests
{
    private static Tensor Reference(Tensor x, Tensor weight, double eps)
    {
        var x64 = x.to_type(ScalarType.Float64);
        return weight.to_type(ScalarType.Float64) * (x64 * rsqrt(x64.pow(2).mean(new long[] { -1 }, keepdim: true) + eps));
    }

    private static double RelativeError(Tensor actual, Tensor expected) =>
        (actual.to_type(ScalarType.Float64) - expected).abs().max().ToDouble() / Math.Max(1e-30, expected.abs().max().ToDouble());

    [TestMethod]
    [DataRow(new long[] { 8, 256, 64 }, DisplayName = "stories260K activations")]
    [DataRow(new long[] { 3, 7, 20 }, DisplayName = "width not a multiple of the vector width")]
    [DataRow(new long[] { 130, 3 }, DisplayName = "narrow rows, more than two chunks")]
    public void MatchesFloat64FormulaInValueAndGradients(long[] shape)
    {
        using var scope = NewDisposeScope();
        manual_seed(21);
        var x = (randn(shape) * 3).requires_grad_(true);
        var weight = (randn(shape[^1]) * 0.5 + 1).requires_grad_(true);
        var upstream = randn(shape);
        Assert.IsTrue(FusedRmsNorm.Supports(x, weight));

        var expected = Reference(x, weight, 1e-5);
        var expectedGrads = autograd.grad(new[] { (expected * upstream.to_type(ScalarType.Float64)).sum() }, new[] { x, weight });
        var actual = FusedRmsNorm.Apply(x, weight, 1e-5);
        var actualGrads = autograd.grad(new[] { (actual * upstream).sum() }, new[] { x, weight });

        Assert.IsLessThan(5e-7, RelativeError(actual, expected), "output");
        using (no_grad())
            Assert.IsTrue(FusedRmsNorm.Apply(x, weight, 1e-5).eq(actual).all().ToBoolean(), "the no-grad path (no autograd node) gives the same output");
        Assert.IsLessThan(5e-7, RelativeError(actualGrads[0], expectedGrads[0]), "input gradient");
        Assert.IsLessThan(5e-7, RelativeError(actualGrads[1], expectedGrads[1]), "weight gradient");
    }

    [TestMethod]
    public void ResultsDoNotDependOnTheThreadCount()
    {
        using var scope = NewDisposeScope();
        manual_seed(4);
        var x = randn(5, 100, 24).requires_grad_(true);
        var weight = randn(24).requires_grad_(true);
        var upstream = randn(5, 100, 24);
        ThreadCounts.AssertSameResults(() =>
        {
            var y = FusedRmsNorm.Apply(x, weight, 1e-6);
            return autograd.grad(new[] { (y * upstream).sum() }, new[] { x, weight }).Prepend(y.detach()).ToArray();
        });
    }

    [TestMethod]
    public void ModuleUsesItForFloat32AndTheTensorFormulaOtherwise()
    {
        using var scope = NewDisposeScope();
        manual_seed(8);
        using var norm = new RMSNorm(16, 1e-5);
        var x = randn(4, 16);
        var expected = Reference(x, ones(16), 1e-5);
        Assert.IsLessThan(5e-7, RelativeError(norm.forward(x), expected), "float32 (fused)");
        norm.to(ScalarType.Float64);
        var y64 = norm.forward(x.to_type(ScalarType.Float64));
        Assert.AreEqual(ScalarType.Float64, y64.dtype);
        Assert.IsLessThan(1e-15, RelativeError(y64, expected), "float64 (tensor ops)");
        Assert.IsFalse(FusedRmsNorm.Supports(x.to_type(ScalarType.Float64), ones(16, dtype: ScalarType.Float64)));
    }
}
