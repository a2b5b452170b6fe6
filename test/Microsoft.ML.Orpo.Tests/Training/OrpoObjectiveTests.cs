using TorchSharp;
using Microsoft.ML.Orpo.ModelFiles;
using Microsoft.ML.Orpo.Tests.Infrastructure;
using Microsoft.ML.Orpo.Training;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Tests.Training;

[TestClass]
public sealed class OrpoObjectiveTests
{
    [TestMethod]
    [DataRow(false)]
    [DataRow(true)]
    public void StepOneMetricsEqualIndependentFloat64Reference(bool includePromptInNll)
    {
        using var model = TrainingFixtures.LoadModel();
        var pairs = TrainingFixtures.TrainPairs(model, 6);
        var settings = TrainingFixtures.Plain(batchSize: 6, lambda: 0.25) with { IncludePromptInNll = includePromptInNll };
        var step1 = new OrpoTrainer(model, settings).Train(pairs)[0];

        var (config, weights) = HuggingFaceFolder.Load(TestAssets.Stories260KHf);
        using var reference = new ReferenceLlama(config, weights);
        using var scope = NewDisposeScope();
        var expected = ReferenceOrpo.Compute(reference, pairs, 0.25, includePromptInNll);

        const double tolerance = 1e-5;
        Assert.AreEqual(expected.Loss.ToDouble(), step1.Loss, tolerance, "Loss");
        Assert.AreEqual(expected.Nll, step1.NllLoss, tolerance, "NllLoss");
        Assert.AreEqual(expected.OddsRatioLoss, step1.OddsRatioLoss, tolerance, "OddsRatioLoss");
        Assert.AreEqual(expected.LogOddsRatio, step1.LogOddsRatio, tolerance, "LogOddsRatio");
        Assert.AreEqual(expected.LogOddsChosen, step1.LogOddsChosen, tolerance, "LogOddsChosen");
        Assert.AreEqual(expected.RewardsChosen, step1.RewardsChosen, tolerance, "RewardsChosen");
        Assert.AreEqual(expected.RewardsRejected, step1.RewardsRejected, tolerance, "RewardsRejected");
        Assert.AreEqual(expected.Accuracy, step1.RewardsAccuracy, tolerance, "RewardsAccuracy");
        Assert.AreEqual(expected.Margin, step1.RewardsMargin, tolerance, "RewardsMargin");
        Assert.IsGreaterThan(0.5, step1.Loss, "a real, non-trivial loss");
    }

    [TestMethod]
    public void AutogradGradientsEqualCentralFiniteDifferences()
    {
        using var model = TrainingFixtures.LoadModel();
        model.Network.to(ScalarType.Float64);
        var pairs = TrainingFixtures.TrainPairs(model, 3);
        double nllTokens = pairs.Sum(p => (double)p.NllTokenCount(false));
        var settings = new TrainingSettings { Lambda = 0.5, LogitsChunkRows = 0 }; // the plain head: autograd end to end
        double Loss()
        {
            using var scope = NewDisposeScope();
            using var noGrad = no_grad();
            return PreferenceForward.Loss(model.Network, pairs, settings, CPU, nllTokens, pairs.Count).Terms.Loss.ToDouble();
        }

        model.Network.zero_grad();
        using (NewDisposeScope()) PreferenceForward.Loss(model.Network, pairs, settings, CPU, nllTokens, pairs.Count).Terms.Loss.backward();
        var parameters = model.Network.NamedWeights().ToDictionary(p => p.Name, p => p.Parameter);
        var coordinates = new (string Name, long Index)[]
        {
            ("model.embed_tokens.weight", 300 * 64 + 5), ("model.layers.0.self_attn.q_proj.weight", 77),
            ("model.layers.2.self_attn.v_proj.weight", 1000), ("model.layers.4.mlp.down_proj.weight", 4321),
            ("model.layers.1.input_layernorm.weight", 9), ("model.norm.weight", 33),
        };
        const double eps = 1e-6;
        foreach (var (name, index) in coordinates)
        {
            var flat = parameters[name].view(-1);
            double analytic = parameters[name].grad!.view(-1)[index].ToDouble();
            double original = flat[index].ToDouble();
            using (no_grad()) flat[index] = original + eps;
            double plus = Loss();
            using (no_grad()) flat[index] = original - eps;
            double minus = Loss();
            using (no_grad()) flat[index] = original;
            double numeric = (plus - minus) / (2 * eps);
            Assert.AreEqual(numeric, analytic, 1e-7 + 1e-5 * Math.Abs(numeric), $"{name}[{index}]: autograd {analytic}, finite difference {numeric}");
        }
    }

    [TestMethod]
    public void FiveAdamWStepsFollowTheReferenceTrajectory()
    {
        using var model = TrainingFixtures.LoadModel();
        var pairs = TrainingFixtures.TrainPairs(model, 4);
        var history = new OrpoTrainer(model, TrainingFixtures.Plain(batchSize: 4, epochs: 5)).Train(pairs);
        Assert.HasCount(5, history);

        var (config, weights) = HuggingFaceFolder.Load(TestAssets.Stories260KHf);
        using var reference = new ReferenceLlama(config, weights, requiresGrad: true);
        var m = reference.Weights.ToDictionary(kv => kv.Key, kv => zeros_like(kv.Value).DetachFromDisposeScope());
        var v = reference.Weights.ToDictionary(kv => kv.Key, kv => zeros_like(kv.Value).DetachFromDisposeScope());
        for (int step = 1; step <= 5; step++)
        {
            using var scope = NewDisposeScope();
            foreach (var w in reference.Weights.Values) w.grad?.zero_();
            var terms = ReferenceOrpo.Compute(reference, pairs, 0.1);
            terms.Loss.backward();
            double loss = terms.Loss.ToDouble();
            Assert.AreEqual(loss, history[step - 1].Loss, 1e-4 * Math.Abs(loss), $"loss at step {step}");
            using var noGrad = no_grad();
            foreach (var (name, w) in reference.Weights)
            {
                var g = w.grad!;
                m[name].mul_(0.9).add_(g * 0.1);
                v[name].mul_(0.999).add_(g * g * 0.001);
                var mHat = m[name] / (1 - Math.Pow(0.9, step));
                var vHat = v[name] / (1 - Math.Pow(0.999, step));
                w.sub_(mHat / (vHat.sqrt() + 1e-8) * 1e-3);
            }
        }
        // The weights after five updates, tensor by tensor (relative L2 distance to the float64 trajectory).
        var ours = model.Network.NamedWeights().ToDictionary(p => p.Name, p => p.Parameter);
        double worst = 0;
        using (no_grad())
            foreach (var (name, w) in reference.Weights)
            {
                using var scope = NewDisposeScope();
                double relative = ((ours[name].to_type(ScalarType.Float64) - w).norm().ToDouble()) / w.norm().ToDouble();
                worst = Math.Max(worst, relative);
            }
        Console.WriteLine($"five AdamW steps: worst relative L2 weight distance to the float64 reference {worst:E2}");
        Assert.IsLessThan(1e-4, worst);
        foreach (var t in m.Values.Concat(v.Values)) t.Dispose();
        Assert.IsLessThan(history[0].Loss, history[4].Loss, "the loss decreases on a fixed batch");
    }

    [TestMethod]
    public void Log1mexpIsFiniteAndAccurateAcrossTheRange()
    {
        using var scope = NewDisposeScope();
        var xs = new[] { -1e4, -700, -50, -5, -1, -0.7, -0.6931, -0.5, -1e-3, -1e-6, -1e-9, -1e-12 };
        var result = OrpoObjective.Log1mexp(tensor(xs)).data<double>().ToArray();
        for (int i = 0; i < xs.Length; i++)
        {
            double x = xs[i];
            // Independent references: for tiny |x|, log(1 - e^x) = log(-x) - x/2 + O(x^2); otherwise the direct form is exact enough in double.
            double expected = x > -1e-3 ? Math.Log(-x) + x / 2 + x * x / 24 : Math.Log(1 - Math.Exp(x));
            Assert.IsTrue(double.IsFinite(result[i]), $"log1mexp({x}) = {result[i]}");
            Assert.AreEqual(expected, result[i], 1e-9 * Math.Max(1, Math.Abs(expected)), $"log1mexp({x})");
        }
        var f32 = OrpoObjective.Log1mexp(tensor(new float[] { -1e4f, -1e-12f, -1e-30f })).data<float>().ToArray();
        Assert.IsTrue(f32.All(float.IsFinite), "float32 stays finite too");
    }

    [TestMethod]
    public void LossAndGradientStayFiniteWhenChosenIsNearCertain()
    {
        using var scope = NewDisposeScope();
        var chosen = tensor(new[] { -1e-12, -1e-9, -3.0 }, requires_grad: true);
        var rejected = tensor(new[] { -5.0, -1e-7, -1e-12 }, requires_grad: true);
        var terms = OrpoObjective.Loss(chosen, rejected, tensor(1.5), 3, 3, 3, 0.1);
        terms.Loss.backward();
        Assert.IsTrue(double.IsFinite(terms.Loss.ToDouble()));
        Assert.IsTrue(chosen.grad!.data<double>().ToArray().All(double.IsFinite));
        Assert.IsTrue(rejected.grad!.data<double>().ToArray().All(double.IsFinite));
    }
}
