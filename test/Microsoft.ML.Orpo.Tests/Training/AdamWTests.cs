using Microsoft.ML.Orpo.Training;
using TorchSharp;
using Parameter = TorchSharp.Modules.Parameter;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Tests.Training;

/// <summary>
/// <see cref="AdamW"/> updates large matrices a slice of the denominator at a time; the result must be the whole-tensor
/// update bit for bit (element-wise arithmetic in the same order), for every slice including a partial last one.
/// </summary>
[TestClass]
public sealed class AdamWTests
{
    [TestMethod]
    public void SlicedUpdateEqualsTheWholeTensorFormula()
    {
        using var scope = NewDisposeScope();
        manual_seed(31);
        const double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, decay = 0.1;
        var shapes = new[] { new long[] { 1250, 2000 }, new long[] { 7, 3 } };   // 2.5M elements: three slices, the last partial
        var parameters = shapes.Select((s, i) => ($"layer{i}.weight", new Parameter(randn(s)))).ToList();
        var reference = parameters.Select(p => (W: p.Item2.detach().clone(), M: zeros(p.Item2.shape), V: zeros(p.Item2.shape))).ToList();
        using var optimizer = new AdamW(parameters.Select(p => (p.Item1, p.Item2)).ToList(), beta1, beta2, eps, decay);
        for (int step = 1; step <= 3; step++)
        {
            for (int i = 0; i < parameters.Count; i++)
            {
                var g = randn(shapes[i]);
                parameters[i].Item2.grad = g.clone();
                var (w, m, v) = reference[i];
                w.mul_(1 - lr * decay);
                m.mul_(beta1).add_(g, alpha: 1 - beta1);
                v.mul_(beta2).addcmul_(g, g, value: 1 - beta2);
                w.addcdiv_(m, (v / (1 - Math.Pow(beta2, step))).sqrt_().add_(eps), value: -lr / (1 - Math.Pow(beta1, step)));
            }
            optimizer.Step(lr);
            for (int i = 0; i < parameters.Count; i++)
                Assert.AreEqual(0.0, (parameters[i].Item2.detach() - reference[i].W).abs().max().ToDouble(), 0.0, $"{parameters[i].Item1} after step {step}");
        }
        Assert.IsGreaterThan(1e-4, reference[0].M.abs().max().ToDouble(), "the moments moved");
    }
}
