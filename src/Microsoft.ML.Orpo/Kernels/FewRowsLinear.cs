using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Kernels;

/// <summary>
/// <c>x W^T</c> for a few float32 rows against a large (out, in) weight on the CPU, without autograd: the projections
/// and the LM head of a decoding step (1-16 rows against 512 x 512 up to 32000 x 512). libtorch's GEMM handles these
/// few-row shapes far below what streaming the weight once allows. Each weight row is read once and multiplied with up
/// to eight input rows held in cache; output blocks are independent, so results do not depend on the thread count.
/// (benchmarks/README.md, "Measurements behind the code: FewRowsLinear")
/// A bfloat16 weight (a LoRA run's frozen base) is read as stored, half the bytes, and widened to float32 a row at a
/// time: the products are float32 products of the rounded weights, as in training.
/// </summary>
internal static class FewRowsLinear
{
    private const int BlockOutputs = 512;

    [ThreadStatic] private static float[]? widenedRow;

    public static bool Supports(Tensor x, Tensor weight) => Supports(x, weight, x.shape, weight.shape);

    /// <summary>(..., in) x, (out, in) weight -> (..., out).</summary>
    public static Tensor Apply(Tensor x, Tensor weight) =>
        TryApply(x, weight) ?? throw new ArgumentException("FewRowsLinear does not support these tensors; check Supports first.");

    /// <summary><see cref="Apply"/> where <see cref="Supports(Tensor, Tensor)"/>, else null (each shape read once: a TorchSharp
    /// <c>shape</c> costs as much as the product of a small decoding step; benchmarks/README.md, "Measurements behind
    /// the code: FewRowsLinear").</summary>
    public static Tensor? TryApply(Tensor x, Tensor weight)
    {
        long[] xShape = x.shape, wShape = weight.shape;
        if (!Supports(x, weight, xShape, wShape)) return null;
        using var input = x.contiguous();
        long inputs = wShape[1], outputs = wShape[0];
        int rows = (int)(xShape.Aggregate(1L, (a, b) => a * b) / inputs);
        var outputShape = (long[])xShape.Clone();
        outputShape[^1] = outputs;
        var y = empty(outputShape, ScalarType.Float32);
        int blocks = (int)((outputs + BlockOutputs - 1) / BlockOutputs);
        CpuKernel.ForEachBlock(blocks, b => Multiply(input, weight, y, rows, (int)inputs, (int)outputs, b * BlockOutputs,
            (int)Math.Min(outputs, (b + 1L) * BlockOutputs)));
        return y;
    }

    private static bool Supports(Tensor x, Tensor weight, long[] xShape, long[] wShape)
    {
        if (wShape.Length != 2 || xShape.Length == 0 || xShape[^1] != wShape[1]) return false;
        long elements = xShape.Aggregate(1L, (a, b) => a * b), weightElements = wShape[0] * wShape[1];
        return elements > 0 && elements / wShape[1] <= KernelThresholds.FewRowsMaxRows && weightElements >= KernelThresholds.FewRowsMinWeightElements && weightElements <= int.MaxValue / 4
            && x.dtype == ScalarType.Float32 && weight.dtype is ScalarType.Float32 or ScalarType.BFloat16
            && x.device_type == DeviceType.CPU && weight.device_type == DeviceType.CPU && weight.is_contiguous()
            && !(is_grad_enabled() && (x.requires_grad || weight.requires_grad));
    }

    private static Span<float> Floats(Tensor t) => CpuKernel.Floats(t);

    /// <summary>
    /// y[r, o] = x[r] . w[o] for outputs o in [from, to), one weight row after another: a single sequential stream
    /// through the weight, faster than reading two or four rows side by side
    /// (benchmarks/README.md, "Measurements behind the code: FewRowsLinear").
    /// </summary>
    private static void Multiply(Tensor input, Tensor weight, Tensor output, int rows, int d, int outputs, int from, int to)
    {
        ReadOnlySpan<float> x = Floats(input);
        Span<float> y = Floats(output);
        bool widen = weight.dtype == ScalarType.BFloat16;
        ReadOnlySpan<float> w = widen ? default : Floats(weight);
        ReadOnlySpan<ushort> packed = widen ? MemoryMarshal.Cast<byte, ushort>(weight.bytes) : default;
        Span<float> row = widen ? (widenedRow is { } buffer && buffer.Length >= d ? buffer : widenedRow = new float[d]).AsSpan(0, d) : default;
        for (int o = from; o < to; o++)
        {
            ReadOnlySpan<float> weightRow = widen ? Widen(packed.Slice(o * d, d), row) : w.Slice(o * d, d);
            if (rows == 1) y[o] = Dot(x, weightRow);
            else
                for (int r = 0; r < rows; r += 8)
                    EightRows(x, weightRow, y, Math.Min(8, rows - r), r, d, o, outputs);
        }
    }

    /// <summary>bfloat16 bits -> float32 (the bits shifted into the high half, exact), into <paramref name="row"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static ReadOnlySpan<float> Widen(ReadOnlySpan<ushort> bits, Span<float> row)
    {
        Span<uint> words = MemoryMarshal.Cast<float, uint>(row);
        int n = Vector<ushort>.Count, c = 0;
        for (; c + n <= bits.Length; c += n)
        {
            Vector.Widen(new Vector<ushort>(bits.Slice(c, n)), out var low, out var high);
            Vector.ShiftLeft(low, 16).CopyTo(words.Slice(c, n / 2));
            Vector.ShiftLeft(high, 16).CopyTo(words.Slice(c + n / 2, n / 2));
        }
        for (; c < bits.Length; c++) words[c] = (uint)bits[c] << 16;
        return row;
    }

    /// <summary>x . w with four independent accumulators (one output row: the loop is bound by the FMA latency otherwise).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // hot from the first decoding step: skip the unoptimised tier
    private static float Dot(ReadOnlySpan<float> x, ReadOnlySpan<float> w)
    {
        ref float x0 = ref MemoryMarshal.GetReference(x);
        ref float w0 = ref MemoryMarshal.GetReference(w);
        Vector<float> a0 = default, a1 = default, a2 = default, a3 = default;
        int n = Vector<float>.Count, c = 0, d = x.Length;
        for (; c + 4 * n <= d; c += 4 * n)
        {
            a0 = Vector.FusedMultiplyAdd(Vector.LoadUnsafe(ref x0, (nuint)c), Vector.LoadUnsafe(ref w0, (nuint)c), a0);
            a1 = Vector.FusedMultiplyAdd(Vector.LoadUnsafe(ref x0, (nuint)(c + n)), Vector.LoadUnsafe(ref w0, (nuint)(c + n)), a1);
            a2 = Vector.FusedMultiplyAdd(Vector.LoadUnsafe(ref x0, (nuint)(c + 2 * n)), Vector.LoadUnsafe(ref w0, (nuint)(c + 2 * n)), a2);
            a3 = Vector.FusedMultiplyAdd(Vector.LoadUnsafe(ref x0, (nuint)(c + 3 * n)), Vector.LoadUnsafe(ref w0, (nuint)(c + 3 * n)), a3);
        }
        for (; c + n <= d; c += n) a0 = Vector.FusedMultiplyAdd(Vector.LoadUnsafe(ref x0, (nuint)c), Vector.LoadUnsafe(ref w0, (nuint)c), a0);
        float sum = Vector.Sum((a0 + a1) + (a2 + a3));
        for (; c < d; c++) sum += Unsafe.Add(ref x0, c) * Unsafe.Add(ref w0, c);
        return sum;
    }

    /// <summary>
    /// Output o of rows r .. r + count - 1 (count &lt;= 8): the weight row is loaded once per vector and multiplied into
    /// eight accumulators. Rows past count alias row r: computed, not stored.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void EightRows(ReadOnlySpan<float> x, ReadOnlySpan<float> w, Span<float> y, int count, int r, int d, int o, int outputs)
    {
        ref float w0 = ref MemoryMarshal.GetReference(w);
        ref float x0 = ref Unsafe.Add(ref MemoryMarshal.GetReference(x), r * d);
        ref float x1 = ref Unsafe.Add(ref x0, count > 1 ? d : 0);
        ref float x2 = ref Unsafe.Add(ref x0, count > 2 ? 2 * d : 0);
        ref float x3 = ref Unsafe.Add(ref x0, count > 3 ? 3 * d : 0);
        ref float x4 = ref Unsafe.Add(ref x0, count > 4 ? 4 * d : 0);
        ref float x5 = ref Unsafe.Add(ref x0, count > 5 ? 5 * d : 0);
        ref float x6 = ref Unsafe.Add(ref x0, count > 6 ? 6 * d : 0);
        ref float x7 = ref Unsafe.Add(ref x0, count > 7 ? 7 * d : 0);
        Vector<float> a0 = default, a1 = default, a2 = default, a3 = default, a4 = default, a5 = default, a6 = default, a7 = default;
        int n = Vector<float>.Count, c = 0;
        for (; c + n <= d; c += n)
        {
            var v = Vector.LoadUnsafe(ref w0, (nuint)c);
            a0 = Vector.FusedMultiplyAdd(Vector.LoadUnsafe(ref x0, (nuint)c), v, a0);
            a1 = Vector.FusedMultiplyAdd(Vector.LoadUnsafe(ref x1, (nuint)c), v, a1);
            a2 = Vector.FusedMultiplyAdd(Vector.LoadUnsafe(ref x2, (nuint)c), v, a2);
            a3 = Vector.FusedMultiplyAdd(Vector.LoadUnsafe(ref x3, (nuint)c), v, a3);
            a4 = Vector.FusedMultiplyAdd(Vector.LoadUnsafe(ref x4, (nuint)c), v, a4);
            a5 = Vector.FusedMultiplyAdd(Vector.LoadUnsafe(ref x5, (nuint)c), v, a5);
            a6 = Vector.FusedMultiplyAdd(Vector.LoadUnsafe(ref x6, (nuint)c), v, a6);
            a7 = Vector.FusedMultiplyAdd(Vector.LoadUnsafe(ref x7, (nuint)c), v, a7);
        }
        y[r * outputs + o] = Vector.Sum(a0);
        if (count > 1) y[(r + 1) * outputs + o] = Vector.Sum(a1);
        if (count > 2) y[(r + 2) * outputs + o] = Vector.Sum(a2);
        if (count > 3) y[(r + 3) * outputs + o] = Vector.Sum(a3);
        if (count > 4) y[(r + 4) * outputs + o] = Vector.Sum(a4);
        if (count > 5) y[(r + 5) * outputs + o] = Vector.Sum(a5);
        if (count > 6) y[(r + 6) * outputs + o] = Vector.Sum(a6);
        if (count > 7) y[(r + 7) * outputs + o] = Vector.Sum(a7);
        for (; c < d; c++) // widths that are not a multiple of the vector width
            for (int i = 0; i < count; i++) y[(r + i) * outputs + o] += Unsafe.Add(ref x0, i * d + c) * Unsafe.Add(ref w0, c);
    }
}
