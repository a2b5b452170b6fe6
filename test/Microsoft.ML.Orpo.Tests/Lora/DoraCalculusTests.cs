using Microsoft.ML.Orpo.Kernels;
using Microsoft.ML.Orpo.Modeling;
using Microsoft.ML.Orpo.Ops;
using Microsoft.ML.Orpo.Tests.Training;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Tests.Lora;

/// <summary>
/// DoRA (PEFT's <c>use_dora</c>) against its definition, written out here from PEFT's <c>DoraLinearLayer</c>:
/// <c>y = W x + b + (m / n - 1) W d(x) + (m / n) s B A d(x)</c> with n = ||W + s B A|| per output row, detached. One
/// projection in float64 and float32 (fused kernels and reference path), central differences where they are exact,
/// the whole model's start, merge and gradients.
/// </summary>
[TestClass]
public sealed class DoraCalculusTests
{
    private const double Scale = 2.0;

    /// <summary>The definition, in plain tensor ops. <paramref name="detachNorm"/> false: the norm differentiated too (what DoRA does not do).</summary>
    private static Tensor Definition(Tensor x, Tensor w, Tensor? bias, Tensor a, Tensor b, Tensor m, Tensor mask, bool detachNorm = true)
    {
        var n = (w + b.matmul(a) * Scale).pow(2).sum(1).sqrt();
        if (detachNorm) n = n.detach();
        var f = m / n;
        var dropped = x * mask;
        var y = x.matmul(w.t()) + (f - 1) * dropped.matmul(w.t()) + f * dropped.matmul(a.t()).matmul(b.t()) * Scale;
        return bias is null ? y : y + bias;
    }

    private sealed record Case(Tensor X, Tensor W, Tensor? Bias, Tensor A, Tensor B, Tensor M, Tensor Upstream);

    private static Case NewCase(ScalarType dtype, bool bias, int rows = 300, int inputs = 48, int outputs = 40, int rank = 4)
    {
        using var generator = new Generator(17, CPU);
        var w = randn(new long[] { outputs, inputs }, generator: generator).mul_(0.2);
        var a = randn(new long[] { rank, inputs }, generator: generator).mul_(0.2);
        var b = randn(new long[] { outputs, rank }, generator: generator).mul_(0.2);
        // A trained magnitude: the row norms of W + s B A, moved by up to 30%.
        var m = (w + b.matmul(a) * Scale).pow(2).sum(1).sqrt() * (rand(new long[] { outputs }, generator: generator) * 0.6 + 0.7);
        return new Case(randn(new long[] { 2, rows / 2, inputs }, generator: generator).to_type(dtype), w.to_type(dtype),
            bias ? randn(new long[] { outputs }, generator: generator).to_type(dtype) : null, a.to_type(dtype), b.to_type(dtype), m.to_type(dtype),
            randn(new long[] { 2, rows / 2, outputs }, generator: generator).to_type(dtype));
    }

    /// <summary>Output and the gradients of (x, A, B, m) of sum(y * upstream), through <see cref="Op.Linear"/> with a DoRA adapter.</summary>
    private static (Tensor Y, Tensor[] Grads, Tensor Mask) Ours(Case c, double probability)
    {
        using var module = nn.Linear(c.W.shape[1], c.W.shape[0], hasBias: c.Bias is not null, dtype: c.W.dtype);
        using (no_grad())
        {
            module.weight!.copy_(c.W);
            module.weight.requires_grad_(false);
            if (c.Bias is not null)
            {
                module.bias!.copy_(c.Bias);
                module.bias.requires_grad_(false);
            }
        }
        var dropout = new LoraDropout(probability);
        using var adapter = new LoraAdapter(new Parameter(c.A.clone(), true), new Parameter(c.B.clone(), true), Scale, dropout, index: 3,
            new Parameter(c.M.clone(), true), LoraAdapter.SquaredRowNorms(c.W, c.A.dtype));
        var x = c.X.clone().requires_grad_(true);
        using var on = dropout.During(5, 2, 1);
        var y = Op.Linear(x, module, null, adapter);
        (y * c.Upstream).sum().backward();
        // The mask the adapter drew: dropout of ones (0, or 1 / (1 - p)).
        var mask = dropout.Apply(ones_like(c.X), 3);
        return (y.detach(), [x.grad!.clone(), adapter.A.grad!.clone(), adapter.B.grad!.clone(), adapter.Magnitude!.grad!.clone()], mask);
    }

    private static (Tensor Y, Tensor[] Grads) Reference(Case c, Tensor mask, bool detachNorm = true)
    {
        var x = c.X.to_type(ScalarType.Float64).requires_grad_(true);
        var a = c.A.to_type(ScalarType.Float64).requires_grad_(true);
        var b = c.B.to_type(ScalarType.Float64).requires_grad_(true);
        var m = c.M.to_type(ScalarType.Float64).requires_grad_(true);
        var y = Definition(x, c.W.to_type(ScalarType.Float64), c.Bias?.to_type(ScalarType.Float64), a, b, m, mask.to_type(ScalarType.Float64), detachNorm);
        (y * c.Upstream.to_type(ScalarType.Float64)).sum().backward();
        return (y.detach(), [x.grad!, a.grad!, b.grad!, m.grad!]);
    }

    private static double RelativeError(Tensor expected, Tensor actual) =>
        (expected.to_type(ScalarType.Float64) - actual.to_type(ScalarType.Float64)).abs().max().ToDouble() / expected.abs().max().ToDouble();

    private static readonly string[] Names = ["y", "dx", "dA", "dB", "dm"];

    [TestMethod]
    [DataRow(0.0, false)]
    [DataRow(0.0, true)]
    [DataRow(0.2, false)]
    [DataRow(0.2, true)]
    public void Float64ProjectionEqualsTheDefinitionInValuesAndGradients(double probability, bool bias)
    {
        using var scope = NewDisposeScope();
        var c = NewCase(ScalarType.Float64, bias);
        var (y, grads, mask) = Ours(c, probability);
        Assert.AreEqual(probability > 0, mask.lt(1).any().ToBoolean(), "dropout drew a mask exactly when it is on");
        var (expectedY, expectedGrads) = Reference(c, mask);
        var errors = new[] { RelativeError(expectedY, y) }.Concat(expectedGrads.Zip(grads, RelativeError)).ToArray();
        Console.WriteLine(string.Join(", ", Names.Zip(errors, (n, e) => $"{n} {e:E2}")));
        for (int i = 0; i < errors.Length; i++) Assert.IsLessThan(1e-12, errors[i], Names[i]);

        // The norm is a constant: with it differentiated, A's and B's gradients would differ (m's and x's do not depend on it).
        var (_, undetached) = Reference(c, mask, detachNorm: false);
        Assert.IsGreaterThan(1e-4, RelativeError(undetached[2], grads[2]), "dB with the norm differentiated");
        Assert.IsGreaterThan(1e-4, RelativeError(undetached[1], grads[1]), "dA with the norm differentiated");
    }

    [TestMethod]
    public void Float64MagnitudeAndInputGradientsEqualCentralDifferences()
    {
        // The norm depends on W, A and B only, so for m and x the definition's central differences are exact.
        using var scope = NewDisposeScope();
        var c = NewCase(ScalarType.Float64, bias: true, rows: 20);
        var (_, grads, mask) = Ours(c, 0.2);
        double Loss(Tensor x, Tensor m)
        {
            using var inner = NewDisposeScope();
            using var noGrad = no_grad();
            return (Definition(x, c.W, c.Bias, c.A, c.B, m, mask) * c.Upstream).sum().ToDouble();
        }
        const double eps = 1e-6;
        double worst = 0;
        foreach (var (tensor, gradient, name) in new[] { (c.M, grads[3], "m"), (c.X, grads[0], "x") })
        {
            var flat = tensor.view(-1);
            foreach (long index in new[] { 0L, 7, flat.numel() - 1, gradient.abs().view(-1).argmax().ToInt64() })
            {
                double original = flat[index].ToDouble();
                flat[index] = original + eps;
                double plus = Loss(c.X, c.M);
                flat[index] = original - eps;
                double minus = Loss(c.X, c.M);
                flat[index] = original;
                double numeric = (plus - minus) / (2 * eps), analytic = gradient.view(-1)[index].ToDouble();
                double relative = Math.Abs(numeric - analytic) / Math.Max(Math.Abs(numeric), 1e-2 * gradient.abs().max().ToDouble());
                worst = Math.Max(worst, relative);
                Assert.IsLessThan(1e-7, relative, $"{name}[{index}]: autograd {analytic}, central difference {numeric}");
            }
        }
        Console.WriteLine($"m and x gradients against central differences: worst relative error {worst:E2}");
    }

    [TestMethod]
    [DataRow(0.0, false, false)]
    [DataRow(0.0, true, true)]
    [DataRow(0.1, false, false)]
    [DataRow(0.1, true, false)]
    [DataRow(0.1, false, true)]
    public void Float32ProjectionMatchesTheFloat64DefinitionOnTheKernelAndReferencePaths(double probability, bool bias, bool referenceOnly)
    {
        using var scope = NewDisposeScope();
        using var policy = referenceOnly ? KernelPolicy.ReferenceOnly() : null;
        var c = NewCase(ScalarType.Float32, bias);
        var (y, grads, mask) = Ours(c, probability);
        var (expectedY, expectedGrads) = Reference(c, mask);
        var errors = new[] { RelativeError(expectedY, y) }.Concat(expectedGrads.Zip(grads, RelativeError)).ToArray();
        Console.WriteLine($"{(referenceOnly ? "reference" : "kernels")}: " + string.Join(", ", Names.Zip(errors, (n, e) => $"{n} {e:E2}")));
        for (int i = 0; i < errors.Length; i++) Assert.IsLessThan(1e-5, errors[i], Names[i]);
    }

    [TestMethod]
    [DataRow(false)]
    [DataRow(true)]
    public void ANewDoraAdapterGivesTheBaseModelsLogitsExactly(bool bf16Base)
    {
        // The base as the adapters see it: a plain LoRA adapter with B = 0 is exactly it (LoraAdapterTests), a bfloat16 base included.
        using var plain = TrainingFixtures.LoadModel();
        LoraAdapters.Create(plain.Network, LoraFixtures.Config(bf16: bf16Base), seed: 1);
        var baseLogits = LoraFixtures.Logits(plain);

        using var model = TrainingFixtures.LoadModel();
        var adapters = LoraAdapters.Create(model.Network, LoraFixtures.Config(bf16: bf16Base, dora: true), seed: 1);
        var magnitude = adapters.ByPath[0].Adapter.Magnitude!;
        Assert.AreEqual(64L, magnitude.shape[0], "one magnitude per output row of q_proj");
        CollectionAssert.AreEqual(baseLogits, LoraFixtures.Logits(model), "m / ||W + s B A|| is exactly 1 for a new adapter");
        Assert.AreEqual(3 * 35, adapters.NamedParameters().Count, "A, B and m of 35 projections");
    }

    [TestMethod]
    public void MergedDoraModelEqualsTheAdapterModelWithin1e12InFloat64And1e5InFloat32()
    {
        foreach (var dtype in new[] { ScalarType.Float64, ScalarType.Float32 })
        {
            using var model = TrainingFixtures.LoadModel();
            model.Network.to(dtype);
            var baseLogits = LoraFixtures.Logits(model);
            var adapters = LoraAdapters.Create(model.Network, LoraFixtures.Config(dora: true), seed: 5);
            LoraFixtures.RandomizeB(adapters, seed: 7);
            RandomizeMagnitudes(adapters, seed: 9);
            var adapted = LoraFixtures.Logits(model);

            using var merged = TrainingFixtures.LoadModel();
            merged.Network.to(dtype);
            using (no_grad())
            {
                var weights = model.Network.NamedWeights().ToDictionary(p => p.Name, p => p.Parameter.detach().clone());
                adapters.MergeInto(weights);
                foreach (var (name, weight) in merged.Network.NamedWeights())
                {
                    weight.copy_(weights[name]);
                    weights[name].Dispose();
                }
            }
            double error = LoraFixtures.RelativeMaxError(adapted, LoraFixtures.Logits(merged));
            double change = LoraFixtures.RelativeMaxError(baseLogits, adapted);
            Console.WriteLine($"{dtype} DoRA merge: max logit error {error:E2} relative to the largest logit; the adapters moved the logits by {change:E2}");
            Assert.IsLessThan(dtype == ScalarType.Float64 ? 1e-12 : 1e-5, error);
            Assert.IsGreaterThan(1e-2, change, "the adapters changed the function");
        }
    }

    [TestMethod]
    public void WholeModelGradientsEqualCentralDifferencesWithTheNormAConstant()
    {
        using var model = TrainingFixtures.LoadModel();
        model.Network.to(ScalarType.Float64);
        var adapters = LoraAdapters.Create(model.Network, LoraFixtures.Config(dora: true, targets: ["q_proj", "v_proj", "up_proj", "down_proj"]), seed: 3);
        LoraFixtures.RandomizeB(adapters, seed: 11);
        RandomizeMagnitudes(adapters, seed: 13);
        var (loss, backward) = LoraFixtures.ShortPairsLoss(model);
        backward();
        var parameters = adapters.NamedParameters().ToDictionary(p => p.Name, p => p.Parameter);
        var probes = new[]
        {
            (LoraAdapters.KeyOfMagnitude("model.layers.0.self_attn.q_proj"), false),
            (LoraAdapters.KeyOfMagnitude("model.layers.3.mlp.down_proj"), false),
            (LoraAdapters.KeyOfA("model.layers.1.self_attn.v_proj"), true),
            (LoraAdapters.KeyOfB("model.layers.4.mlp.up_proj"), true),
        };
        const double eps = 1e-5;
        double worst = 0;
        foreach (var (name, hold) in probes)
        {
            var gradient = parameters[name].grad!.view(-1);
            long index = gradient.abs().argmax().ToInt64();
            double analytic = gradient[index].ToDouble();
            var flat = parameters[name].view(-1);
            double original = flat[index].ToDouble();
            double plus, minus;
            // A and B move the norm too; DoRA's gradient treats it as a constant, so their differences hold the factors.
            using (var held = hold ? adapters.HoldDoraFactors(model.Network) : null)
            {
                using (no_grad()) flat[index] = original + eps;
                plus = loss();
                using (no_grad()) flat[index] = original - eps;
                minus = loss();
                using (no_grad()) flat[index] = original;
            }
            double numeric = (plus - minus) / (2 * eps);
            double relative = Math.Abs(numeric - analytic) / Math.Abs(numeric);
            worst = Math.Max(worst, relative);
            Console.WriteLine($"{name}[{index}]: autograd {analytic:E6}, central difference {numeric:E6}, relative error {relative:E2}");
            Assert.IsLessThan(1e-6, relative, $"{name}[{index}]: autograd {analytic}, central difference {numeric}");
        }
        Console.WriteLine($"DoRA gradients against central differences: worst relative error {worst:E2}");
    }

    /// <summary>Moves every magnitude by a seeded factor in [0.7, 1.3] (a new adapter's m / n is exactly 1).</summary>
    internal static void RandomizeMagnitudes(LoraAdapters adapters, int seed)
    {
        using var generator = new Generator((ulong)seed, CPU);
        using var noGrad = no_grad();
        foreach (var (_, adapter) in adapters.ByPath)
            using (var factor = rand(adapter.Magnitude!.shape, generator: generator).mul_(0.6).add_(0.7))
                adapter.Magnitude.mul_(factor.to(adapter.Magnitude.dtype));
    }
}
