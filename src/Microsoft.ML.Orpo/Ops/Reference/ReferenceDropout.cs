using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Ops.Reference;

/// <summary>
/// The LoRA dropout mask, defined: element i of a tensor (its position when flattened) is kept when
/// <c>hash(i, seed) &gt;= round(p * 2^32)</c>, with hash the 32-bit murmur3 finaliser of
/// <c>(i ^ seedHigh) * 0x9E3779B1 + seedLow</c>; kept elements are scaled by 1 / (1 - p). A function of the seed and
/// the position, so it is drawn identically on every device, by the CPU kernel (Kernels.HashedDropout) and when a
/// step is recomputed. Computed here in int64 libtorch ops (32-bit products split in 16-bit halves, so nothing
/// overflows), device-agnostic.
/// </summary>
internal static class ReferenceDropout
{
    private const long Low32 = 0xFFFFFFFFL;

    /// <summary>x * mask / (1 - p), differentiable in x.</summary>
    public static Tensor Apply(Tensor x, long seed, double probability)
    {
        using var scope = NewDisposeScope();
        return (x * Keep(x, seed, probability).to_type(x.dtype).div_(1 - probability)).MoveToOuterDisposeScope();
    }

    /// <summary>The boolean mask of x's shape.</summary>
    public static Tensor Keep(Tensor x, long seed, double probability)
    {
        if (x.numel() > uint.MaxValue + 1L) throw new ArgumentException("LoRA dropout: more than 2^32 elements in one tensor.", nameof(x));
        using var scope = NewDisposeScope();
        long seedLow = seed & Low32, seedHigh = (long)((ulong)seed >> 32);
        long threshold = (long)Math.Min(uint.MaxValue, Math.Round(probability * 4294967296.0));
        var h = arange(x.numel(), ScalarType.Int64, x.device).bitwise_xor_(seedHigh);
        h = MultiplyLow32(h, 0x9E3779B1L).add_(seedLow).bitwise_and_(Low32);
        h = h.bitwise_xor_(h.div(65536, rounding_mode: RoundingMode.floor));
        h = MultiplyLow32(h, 0x85EBCA6BL);
        h = h.bitwise_xor_(h.div(8192, rounding_mode: RoundingMode.floor));
        h = MultiplyLow32(h, 0xC2B2AE35L);
        h = h.bitwise_xor_(h.div(65536, rounding_mode: RoundingMode.floor));
        return h.ge(threshold).view(x.shape).MoveToOuterDisposeScope();
    }

    /// <summary>(a * c) mod 2^32 for 0 &lt;= a, c &lt; 2^32: a * c_low + ((a * c_high) mod 2^16) * 2^16, each below 2^49.</summary>
    private static Tensor MultiplyLow32(Tensor a, long c)
    {
        var high = (a * (c >> 16)).bitwise_and_(0xFFFFL).mul_(65536L);
        return (a * (c & 0xFFFFL)).add_(high).bitwise_and_(Low32);
    }
}
