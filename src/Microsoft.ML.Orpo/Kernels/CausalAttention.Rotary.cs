using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using Microsoft.ML.Orpo.Native;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Kernels;

// Rotary embedding folded into the causal attention kernel: one pass per tensor forward (rotate) and backward (rotate
// the gradient back) instead of the six tensor ops of RotaryEmbedding.Apply and their autograd nodes, which for the
// tiny heads this kernel serves cost as much as the attention. Element by element it is the same arithmetic
// (x * cos + rotate_half(x) * sin, each product rounded, then the sum), so the values are those of the tensor ops.
internal static partial class CausalAttention
{
    /// <summary>Where the (d)-float rows of a (B, heads, T, d) tensor lie in a contiguous tensor's memory.</summary>
    private readonly record struct RowLayout(Tensor Storage, long BatchStride, long HeadStride, long TimeStride)
    {
        public int Offset(int b, int head, int i) => (int)(b * BatchStride + head * HeadStride + i * TimeStride);
    }

    /// <summary>
    /// The rows of <paramref name="x"/> (B, heads, T, d) without copying when it is contiguous or, as the projections
    /// produce it, a (B, T, heads, d) tensor transposed; otherwise a contiguous copy.
    /// </summary>
    private static RowLayout RowsOf(Tensor x)
    {
        if (x.stride(3) == 1)
        {
            if (x.is_contiguous()) return new(x, x.stride(0), x.stride(1), x.stride(2));
            var tokenMajor = x.transpose(1, 2); // same memory, same first element
            if (tokenMajor.is_contiguous()) return new(tokenMajor, x.stride(0), x.stride(1), x.stride(2));
        }
        var copy = x.contiguous();
        return new(copy, copy.stride(0), copy.stride(1), copy.stride(2));
    }

    private static Vector128<float> Load(ReadOnlySpan<float> x, int at) => Vector128.Create(x.Slice(at, 4));

    private static Vector512<float> Load16(ReadOnlySpan<float> x, int at) => Vector512.Create(x.Slice(at, 16));

    /// <summary>
    /// y = x * cos + rotate_half(x) * sin with rotate_half(x) = (-x[d/2..], x[..d/2]): x (B, heads, T, d) in any
    /// layout, y contiguous (B, heads, T, d), cos and sin contiguous (B, 1, T, d).
    /// </summary>
    public static void RotateInto(Tensor x, Tensor y, Tensor cos, Tensor sin)
    {
        var rows = RowsOf(x);
        Rotate(rows, y, cos, sin);
    }

    private static void Rotate(RowLayout x, Tensor y, Tensor cos, Tensor sin)
    {
        CpuKernel.ForEachBlock((int)(y.shape[0] * y.shape[1]), unit => RotateRows(x, y, cos, sin, unit));
    }

    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static void RotateRows(RowLayout x, Tensor y, Tensor cos, Tensor sin, int unit)
    {
        int heads = (int)y.shape[1], t = (int)y.shape[2], d = (int)y.shape[3], half = d / 2; // one (batch, head) unit
        ReadOnlySpan<float> source = Floats(x.Storage), c = Floats(cos), s = Floats(sin);
        Span<float> target = Floats(y);
        int b = unit / heads, h = unit % heads;
        for (int i = 0; i < t; i++)
        {
            var row = source.Slice(x.Offset(b, h, i), d);
            var cs = c.Slice((b * t + i) * d, d);
            var sn = s.Slice((b * t + i) * d, d);
            var output = target.Slice(((b * heads + h) * t + i) * d, d);
            int j = 0;
            if (Vector512.IsHardwareAccelerated)
                for (; j + 16 <= half; j += 16) // sixteen pairs at a time where 512-bit vectors are fast
                {
                    Vector512<float> lo = Load16(row, j), hi = Load16(row, j + half);
                    (lo * Load16(cs, j) + -hi * Load16(sn, j)).CopyTo(output.Slice(j, 16));
                    (hi * Load16(cs, j + half) + lo * Load16(sn, j + half)).CopyTo(output.Slice(j + half, 16));
                }
            for (; j + 4 <= half; j += 4) // four pairs at a time, the same products and sums
            {
                Vector128<float> lo = Load(row, j), hi = Load(row, j + half);
                (lo * Load(cs, j) + -hi * Load(sn, j)).CopyTo(output.Slice(j, 4));
                (hi * Load(cs, j + half) + lo * Load(sn, j + half)).CopyTo(output.Slice(j + half, 4));
            }
            for (; j < half; j++)
            {
                output[j] = row[j] * cs[j] + -row[j + half] * sn[j];
                output[j + half] = row[j + half] * cs[j + half] + row[j] * sn[j + half];
            }
        }
    }

    /// <summary>
    /// The gradient of <see cref="RotateInto"/>: dx = dy * cos + rotate_half^T(dy * sin) for contiguous (B, heads, T, d)
    /// <paramref name="dy"/>, returned (B, heads, T, d) but laid out (B, T, heads, d), the projections' layout.
    /// </summary>
    public static Tensor RotateBack(Tensor dy, Tensor cos, Tensor sin)
    {
        var dx = HostTensors.Empty(dy.shape[0], dy.shape[2], dy.shape[1], dy.shape[3]);
        RotateBack(dy, dx, cos, sin);
        var view = dx.transpose(1, 2);
        dx.Dispose(); // the view holds the memory
        return view;
    }

    private static void RotateBack(Tensor dy, Tensor dx, Tensor cos, Tensor sin)
    {
        CpuKernel.ForEachBlock((int)(dy.shape[0] * dy.shape[1]), unit => RotateRowsBack(dy, dx, cos, sin, unit));
    }

    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static void RotateRowsBack(Tensor dy, Tensor dx, Tensor cos, Tensor sin, int unit)
    {
        int heads = (int)dy.shape[1], t = (int)dy.shape[2], d = (int)dy.shape[3], half = d / 2; // one (batch, head) unit
        ReadOnlySpan<float> source = Floats(dy), c = Floats(cos), s = Floats(sin);
        Span<float> target = Floats(dx);
        int b = unit / heads, h = unit % heads;
        for (int i = 0; i < t; i++)
        {
            var g = source.Slice(((b * heads + h) * t + i) * d, d);
            var cs = c.Slice((b * t + i) * d, d);
            var sn = s.Slice((b * t + i) * d, d);
            var output = target.Slice(((b * t + i) * heads + h) * d, d);
            int j = 0;
            if (Vector512.IsHardwareAccelerated)
                for (; j + 16 <= half; j += 16)
                {
                    Vector512<float> lo = Load16(g, j), hi = Load16(g, j + half);
                    (lo * Load16(cs, j) + hi * Load16(sn, j + half)).CopyTo(output.Slice(j, 16));
                    (hi * Load16(cs, j + half) + -(lo * Load16(sn, j))).CopyTo(output.Slice(j + half, 16));
                }
            for (; j + 4 <= half; j += 4)
            {
                Vector128<float> lo = Load(g, j), hi = Load(g, j + half);
                (lo * Load(cs, j) + hi * Load(sn, j + half)).CopyTo(output.Slice(j, 4));
                (hi * Load(cs, j + half) + -(lo * Load(sn, j))).CopyTo(output.Slice(j + half, 4));
            }
            for (; j < half; j++)
            {
                output[j] = g[j] * cs[j] + g[j + half] * sn[j + half];
                output[j + half] = g[j + half] * cs[j + half] + -(g[j] * sn[j]);
            }
        }
    }
}
