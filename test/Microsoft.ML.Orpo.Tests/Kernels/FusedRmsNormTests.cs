using Microsoft.ML.Orpo.Modeling;
using Microsoft.ML.Orpo.Tests.Infrastructure;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Tests.Kernels;

/// <summary>
/// The one-pass float32 RMSNorm (<see cref="FusedRmsNorm"/>): independent of the thread count, and its wiring into the
/// module. Its values and gradients against the reference are <see cref="OpEquivalenceTests"/>'.
/// </summary>
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
