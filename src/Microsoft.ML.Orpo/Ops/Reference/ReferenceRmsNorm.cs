using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Ops.Reference;

/// <summary>Root-mean-square layer norm: <c>weight * x / sqrt(mean(x^2) + eps)</c>, half-precision inputs normalised in float32.</summary>
internal static class ReferenceRmsNorm
{
    /// <summary>(..., D) x, (D) weight -> (..., D).</summary>
    public static Tensor Forward(Tensor x, Tensor weight, double eps)
    {
        using var scope = NewDisposeScope();
        var wide = x.dtype is ScalarType.Float16 or ScalarType.BFloat16 ? x.to_type(ScalarType.Float32) : x;
        var normed = wide * rsqrt(wide.pow(2).mean(new long[] { -1 }, keepdim: true) + eps);
        return (weight * normed.to_type(x.dtype)).MoveToOuterDisposeScope();
    }
}
