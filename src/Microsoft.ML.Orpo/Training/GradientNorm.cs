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
        var total = stack(grads.Select(SumOfSquares).ToArray()).sum().sqrt();
        double norm = total.ToDouble();
        if (maxNorm > 0 && double.IsFinite(norm))
        {
            double coefficient = maxNorm / (norm + 1e-6);
            if (coefficient < 1)
                foreach (var g in grads) g.mul_(coefficient);
        }
        return norm;
    }

    /// <summary>
    /// Sum of squares in float64, a slice at a time: float64 copies of a whole large gradient (the 32000 x 512
    /// embedding: 2 x 131 MB) would be the training step's memory peak.
    /// </summary>
    private static Tensor SumOfSquares(Tensor gradient)
    {
        const long SliceElements = 1 << 20;
        var flat = gradient.reshape(-1);
        var total = zeros(1, ScalarType.Float64, gradient.device);
        for (long start = 0; start < flat.shape[0]; start += SliceElements)
        {
            using var scope = NewDisposeScope();
            var slice = flat.narrow(0, start, Math.Min(SliceElements, flat.shape[0] - start)).to_type(ScalarType.Float64);
            total.add_(slice.dot(slice));
        }
        return total.squeeze(0);
    }
}
