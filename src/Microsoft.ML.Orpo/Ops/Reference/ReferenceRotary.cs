using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Ops.Reference;

/// <summary>Rotary position embedding in the rotate-half convention: <c>x cos + rotate_half(x) sin</c>.</summary>
internal static class ReferenceRotary
{
    /// <summary>(B, heads, T, d) x, (B, 1, T, d) cos and sin -> (B, heads, T, d); rotate_half(x) = (-x[d/2..], x[..d/2]).</summary>
    public static Tensor Forward(Tensor x, Tensor cos, Tensor sin)
    {
        long half = x.shape[^1] / 2;
        var rotated = cat(new[] { -x.narrow(-1, half, half), x.narrow(-1, 0, half) }, -1);
        return x * cos + rotated * sin;
    }
}
