using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Training;

/// <summary>Global gradient L2 norm, with optional clipping (PyTorch's clip_grad_norm_ rule).</summary>
internal static class GradientNorm
{
    /// <returns>The norm before clipping; NaN or infinity when a gradient is not finite.</returns>
    public static double ClipAndMeasure(IReadOnlyList<(string Name, Parameter Parameter)> parameters, double maxNorm)
    {
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        var grads = parameters.Select(p => p.Parameter.grad).Where(g => g is not null).Select(g => g!).ToList();
        if (grads.Count == 0) return 0;
        var total = stack(grads.Select(g => g.to_type(ScalarType.Float64).pow(2).sum()).ToArray()).sum().sqrt();
        double norm = total.ToDouble();
        if (maxNorm > 0 && double.IsFinite(norm))
        {
            double coefficient = maxNorm / (norm + 1e-6);
            if (coefficient < 1)
                foreach (var g in grads) g.mul_(coefficient);
        }
        return norm;
    }
}
