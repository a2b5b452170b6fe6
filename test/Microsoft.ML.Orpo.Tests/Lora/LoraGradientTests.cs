using TorchSharp;
using Microsoft.ML.Orpo.Modeling;
using Microsoft.ML.Orpo.Tests.Training;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Tests.Lora;

/// <summary>
/// The adapters' calculus in float64: autograd's A and B gradients against central finite differences of the ORPO
/// loss, no gradient at all for the frozen base, and the merged model against the adapter model.
/// </summary>
[TestClass]
public sealed class LoraGradientTests
{
    [TestMethod]
    public void AdapterGradientsEqualCentralFiniteDifferencesAndTheBaseGetsNone()
    {
        using var model = TrainingFixtures.LoadModel();
        model.Network.to(ScalarType.Float64); // before the adapters: they take the network's type
        var adapters = LoraAdapters.Create(model.Network, LoraFixtures.Config(targets: ["q_proj", "v_proj", "gate_proj", "down_proj"]), seed: 3);
        LoraFixtures.RandomizeB(adapters, seed: 11);
        Assert.IsTrue(adapters.NamedParameters().All(p => p.Parameter.dtype == ScalarType.Float64), "float64 adapters");
        var (loss, backward) = LoraFixtures.ShortPairsLoss(model);
        backward();
        foreach (var (name, weight) in model.Network.NamedWeights())
        {
            Assert.IsFalse(weight.requires_grad, $"{name} is frozen");
            Assert.IsNull(weight.grad, $"{name} has no gradient");
        }
        var parameters = adapters.NamedParameters().ToDictionary(p => p.Name, p => p.Parameter);
        // The largest gradient of each tensor (a meaningful relative error) and a fixed element, across layers and modules.
        var probes = new (string Path, bool IsA, long? Index)[]
        {
            ("model.layers.0.self_attn.q_proj", true, null), ("model.layers.0.self_attn.q_proj", false, null),
            ("model.layers.2.self_attn.v_proj", true, null), ("model.layers.2.self_attn.v_proj", false, 37),
            ("model.layers.4.mlp.down_proj", true, 101), ("model.layers.4.mlp.down_proj", false, null),
        };
        const double eps = 1e-5;
        double worst = 0;
        foreach (var (path, isA, fixedIndex) in probes)
        {
            string name = isA ? LoraAdapters.KeyOfA(path) : LoraAdapters.KeyOfB(path);
            var gradient = parameters[name].grad!.view(-1);
            long index = fixedIndex ?? gradient.abs().argmax().ToInt64();
            double analytic = gradient[index].ToDouble();
            var flat = parameters[name].view(-1);
            double original = flat[index].ToDouble();
            using (no_grad()) flat[index] = original + eps;
            double plus = loss();
            using (no_grad()) flat[index] = original - eps;
            double minus = loss();
            using (no_grad()) flat[index] = original;
            double numeric = (plus - minus) / (2 * eps);
            // Measured against the tensor's largest gradient where this element's is small.
            double scale = Math.Max(Math.Abs(numeric), 1e-2 * gradient.abs().max().ToDouble());
            double relative = Math.Abs(numeric - analytic) / scale;
            worst = Math.Max(worst, relative);
            Console.WriteLine($"{name}[{index}]: autograd {analytic:E6}, finite difference {numeric:E6}, relative error {relative:E2}");
            Assert.AreNotEqual(0.0, analytic, $"{name}[{index}] has a gradient");
            Assert.IsLessThan(1e-6, relative, $"{name}[{index}]: autograd {analytic}, finite difference {numeric}");
        }
        Console.WriteLine($"adapter gradients against central differences: worst relative error {worst:E2}");
    }

    [TestMethod]
    public void Float64MergedModelEqualsTheAdapterModelWithin1e12()
    {
        using var model = TrainingFixtures.LoadModel();
        model.Network.to(ScalarType.Float64);
        var baseLogits = LoraFixtures.Logits(model);
        var adapters = LoraAdapters.Create(model.Network, LoraFixtures.Config(), seed: 5);
        LoraFixtures.RandomizeB(adapters, seed: 7);
        var adapted = LoraFixtures.Logits(model);

        // W + (alpha / r) B A in float64, loaded into a second float64 copy of the base without adapters.
        using var merged = TrainingFixtures.LoadModel();
        merged.Network.to(ScalarType.Float64);
        using (no_grad())
        {
            var weights = model.Network.NamedWeights().ToDictionary(p => p.Name, p => p.Parameter.detach().clone());
            adapters.MergeInto(weights);
            foreach (var (name, weight) in merged.Network.NamedWeights())
            {
                Assert.AreEqual(ScalarType.Float64, weights[name].dtype, name);
                weight.copy_(weights[name]);
                weights[name].Dispose();
            }
        }
        double error = LoraFixtures.RelativeMaxError(adapted, LoraFixtures.Logits(merged));
        double change = LoraFixtures.RelativeMaxError(baseLogits, adapted);
        Console.WriteLine($"float64 merge: max logit error {error:E2} relative to the largest logit; the adapters moved the logits by {change:E2}");
        Assert.IsLessThan(1e-12, error);
        Assert.IsGreaterThan(1e-3, change, "the adapters changed the function");
    }
}
