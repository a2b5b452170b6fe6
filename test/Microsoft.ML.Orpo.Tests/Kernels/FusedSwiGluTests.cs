using Microsoft.ML.Orpo.Modeling;
using Microsoft.ML.Orpo.Tests.Infrastructure;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Microsoft.ML.Orpo.Tests.Kernels;

/// <summary>
/// The float32 SwiGLU tail <c>down(silu(gate) * up)</c> (<see cref="FusedSwiGlu"/>): the logistic function's tails and
/// special values, independence of the thread count, what it takes. Its values and gradients against the reference
/// are <see cref="OpEquivalenceTests"/>'.
/// </summary>
[TestClass]
public sealed class FusedSwiGluTests
{
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
