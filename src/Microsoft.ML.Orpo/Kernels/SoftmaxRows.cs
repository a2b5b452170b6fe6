using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.InteropServices;
using Microsoft.ML.Orpo.Modeling;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Kernels;

/// <summary>
/// The fused LM head's per-row softmax work on float32 CPU logits (a chunk of rows x the vocabulary): the log-sum-exp
/// of each row, and, once the loss's d loss / d log p(target) = g is known, the logits gradient
/// <c>g * (onehot(target) - softmax)</c> written over the logits in place. As tensor ops this is a log-sum-exp, a
/// subtraction, an exponential and a product, each a pass over (rows x 32000) floats that no longer fit in cache; here
/// it is one read for the log-sum-exp and one read-and-write for the gradient. Rows are independent and summed in a
/// fixed order, so results do not depend on the thread count.
/// </summary>
internal static class SoftmaxRows
{
    private const int RowsPerBlock = 8;
    private const int SumBlock = 1024; // float32 partial sums over at most this many terms, then added in float64

    public static bool Supports(Tensor logits) =>
        logits.dtype == ScalarType.Float32 && logits.device_type == DeviceType.CPU && logits.dim() == 2 && logits.is_contiguous()
        && logits.numel() <= int.MaxValue / sizeof(float);

    /// <summary>(c, V) logits -> (c) log-sum-exp of each row.</summary>
    public static Tensor LogSumExp(Tensor logits)
    {
        int rows = (int)logits.shape[0], width = (int)logits.shape[1];
        var result = empty(rows, ScalarType.Float32);
        CpuKernel.ForEachBlock((rows + RowsPerBlock - 1) / RowsPerBlock, block =>
        {
            ReadOnlySpan<float> all = CpuKernel.Floats(logits);
            Span<float> lse = CpuKernel.Floats(result);
            for (int r = block * RowsPerBlock; r < Math.Min(rows, (block + 1) * RowsPerBlock); r++)
                lse[r] = RowLogSumExp(all.Slice(r * width, width));
        });
        return result;
    }

    /// <summary>
    /// In place, <c>logits[r, j] = g[r] * ((j == targets[r]) - exp(logits[r, j] - lse[r]))</c>. lse, g: (c) float32;
    /// targets: (c) int64 in [0, V).
    /// </summary>
    public static void ToLossGradient(Tensor logits, Tensor lse, Tensor g, Tensor targets)
    {
        int rows = (int)logits.shape[0], width = (int)logits.shape[1];
        using var l = lse.contiguous();
        using var scale = g.contiguous();
        using var target = targets.contiguous();
        CpuKernel.ForEachBlock((rows + RowsPerBlock - 1) / RowsPerBlock, block =>
        {
            Span<float> all = CpuKernel.Floats(logits);
            ReadOnlySpan<float> lseRows = CpuKernel.Floats(l), gRows = CpuKernel.Floats(scale);
            ReadOnlySpan<long> targetRows = MemoryMarshal.Cast<byte, long>(target.bytes);
            for (int r = block * RowsPerBlock; r < Math.Min(rows, (block + 1) * RowsPerBlock); r++)
            {
                var row = all.Slice(r * width, width);
                RowGradient(row, lseRows[r], gRows[r]);
                row[(int)targetRows[r]] += gRows[r];
            }
        });
    }

    /// <summary>
    /// Whether a row's sum runs 16 lanes at a time: where 512-bit vectors are fast and <see cref="Vector{T}"/> has 8
    /// lanes (the 16-lane register then holds exactly the two 8-lane accumulators, so the sums keep their bits).
    /// </summary>
    internal static readonly bool Wide = Vector512.IsHardwareAccelerated && Vector<float>.Count == 8;

    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    internal static float RowLogSumExp(ReadOnlySpan<float> row, bool wide = true)
    {
        int n = Vector<float>.Count, j = 0;
        var maxima = new Vector<float>(float.NegativeInfinity);
        for (; j + n <= row.Length; j += n) maxima = Vector.Max(maxima, new Vector<float>(row.Slice(j, n)));
        float max = float.NegativeInfinity;
        for (int i = 0; i < n; i++) max = MathF.Max(max, maxima[i]);
        for (; j < row.Length; j++) max = MathF.Max(max, row[j]);
        if (float.IsNegativeInfinity(max)) return max; // every logit -inf: log of an empty sum

        var shift = new Vector<float>(max);
        double total = 0;
        for (int start = 0; start < row.Length; start += SumBlock)
        {
            int end = Math.Min(row.Length, start + SumBlock);
            Vector<float> a0 = default, a1 = default;
            int i = start;
            if (wide && Wide)
            {
                // a0's lanes then a1's in one register: the same sums as the loop below, twice the lanes per instruction.
                Vector512<float> both = default, shift16 = Vector512.Create(max);
                for (; i + 16 <= end; i += 16) both += VectorMath.Exp(Vector512.Create(row.Slice(i, 16)) - shift16);
                a0 = both.GetLower().AsVector();
                a1 = both.GetUpper().AsVector();
            }
            for (; i + 2 * n <= end; i += 2 * n)
            {
                a0 += VectorMath.Exp(new Vector<float>(row.Slice(i, n)) - shift);
                a1 += VectorMath.Exp(new Vector<float>(row.Slice(i + n, n)) - shift);
            }
            float partial = Vector.Sum(a0 + a1);
            for (; i < end; i++) partial += MathF.Exp(row[i] - max);
            total += partial;
        }
        return max + (float)Math.Log(total);
    }

    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static void RowGradient(Span<float> row, float lse, float g)
    {
        int n = Vector<float>.Count, j = 0;
        if (Vector512.IsHardwareAccelerated)
        {
            Vector512<float> shift16 = Vector512.Create(lse), scale16 = Vector512.Create(-g);
            for (; j + 16 <= row.Length; j += 16)
                (scale16 * VectorMath.Exp(Vector512.Create((ReadOnlySpan<float>)row.Slice(j, 16)) - shift16)).CopyTo(row.Slice(j, 16));
        }
        var shift = new Vector<float>(lse);
        var scale = new Vector<float>(-g);
        for (; j + n <= row.Length; j += n)
            (scale * VectorMath.Exp(new Vector<float>(row.Slice(j, n)) - shift)).CopyTo(row.Slice(j, n));
        for (; j < row.Length; j++) row[j] = -g * MathF.Exp(row[j] - lse);
    }
}
