using System.Buffers;
using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using TorchSharp;
using Microsoft.ML.Orpo.Native;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Kernels;

/// <summary>
/// RMSNorm <c>weight * (x * rsqrt(mean(x^2) + eps))</c> for float32 CPU tensors as one pass per row, forward and
/// backward. Composed from tensor ops it is six kernels forward and about ten backward, each a full pass over the
/// activations with its own dispatch and autograd node: at stories260K's width (64) those passes, not arithmetic,
/// were a noticeable share of a training step. Rows are processed in fixed chunks and the weight gradient is summed in
/// float64, chunk by chunk in order, so results do not depend on the thread count.
/// (benchmarks/README.md, "Measurements behind the code: FusedRmsNorm")
/// </summary>
internal static class FusedRmsNorm
{
    private const int ChunkRows = 64;

    public static bool Supports(Tensor x, Tensor weight) =>
        x.device_type == DeviceType.CPU && x.dtype == ScalarType.Float32 && weight.dtype == ScalarType.Float32
        && weight.device_type == DeviceType.CPU && weight.dim() == 1 && x.dim() >= 1 && x.shape[^1] == weight.shape[0]
        && x.numel() > 0 && x.numel() <= int.MaxValue / 4;

    /// <summary>(..., D) input, (D) weight -> (..., D).</summary>
    public static Tensor Apply(Tensor x, Tensor weight, double eps)
    {
        if (is_grad_enabled() && (x.requires_grad || weight.requires_grad)) return RmsNormFunction.apply(x, weight, eps);
        // Nothing to differentiate (decoding): skip the autograd node, whose set-up costs more than a decode step's norm.
        using var input = x.contiguous();
        using var inverseRms = empty(x.numel() / weight.shape[0], ScalarType.Float32, x.device);
        var y = HostTensors.EmptyLike(input);
        Forward(input, weight, y, inverseRms, eps);
        return y;
    }

    private static Span<float> Floats(Tensor t) => CpuKernel.Floats(t);

    private static void ForEachChunk(int rows, Action<int> chunk) => CpuKernel.ForEachBlock((rows + ChunkRows - 1) / ChunkRows, chunk);

    /// <summary>y = w * (x * r) per row, with r = 1 / sqrt(mean(x^2) + eps) saved per row.</summary>
    public static void Forward(Tensor x, Tensor weight, Tensor y, Tensor inverseRms, double eps)
    {
        int rows = (int)(x.numel() / weight.shape[0]);
        ForEachChunk(rows, chunk => ForwardChunk(x, weight, y, inverseRms, eps, rows, chunk));
    }

    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)] // hot from the first call: skip the unoptimised tier
    private static void ForwardChunk(Tensor x, Tensor weight, Tensor y, Tensor inverseRms, double eps, int rows, int chunk)
    {
        ReadOnlySpan<float> xs = Floats(x), w = Floats(weight);
        Span<float> ys = Floats(y), r = Floats(inverseRms);
        int d = w.Length;
        for (int row = chunk * ChunkRows, end = Math.Min(rows, row + ChunkRows); row < end; row++)
        {
            var input = xs.Slice(row * d, d);
            float inv = (float)(1.0 / Math.Sqrt(SumOfSquares(input) / d + eps));
            r[row] = inv;
            Scale(input, inv, w, ys.Slice(row * d, d));
        }
    }

    /// <summary>
    /// With g = w * dy per row: dx = r * g - x * r^3 * (g . x) / D, and dw = sum over rows of dy * x * r.
    /// </summary>
    public static void Backward(Tensor x, Tensor weight, Tensor inverseRms, Tensor gradOutput, Tensor? gradInput, double[]? gradWeight)
    {
        int d = (int)weight.shape[0], rows = (int)(x.numel() / d), chunks = (rows + ChunkRows - 1) / ChunkRows;
        var partial = gradWeight is null ? null : ArrayPool<double>.Shared.Rent(chunks * d);
        if (partial is not null) Array.Clear(partial, 0, chunks * d);
        ForEachChunk(rows, chunk => BackwardChunk(x, weight, inverseRms, gradOutput, gradInput, partial, rows, chunk));
        if (gradWeight is null) return;
        Array.Clear(gradWeight);
        for (int chunk = 0; chunk < chunks; chunk++)
            for (int c = 0; c < d; c++) gradWeight[c] += partial![chunk * d + c];
        ArrayPool<double>.Shared.Return(partial!);
    }

    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static void BackwardChunk(Tensor x, Tensor weight, Tensor inverseRms, Tensor gradOutput, Tensor? gradInput,
        double[]? partial, int rows, int chunk)
    {
        ReadOnlySpan<float> xs = Floats(x), w = Floats(weight), r = Floats(inverseRms), dy = Floats(gradOutput);
        Span<float> dx = gradInput is null ? Span<float>.Empty : Floats(gradInput);
        int d = w.Length;
        var dw = partial is null ? Span<double>.Empty : partial.AsSpan(chunk * d, d);
        for (int row = chunk * ChunkRows, end = Math.Min(rows, row + ChunkRows); row < end; row++)
        {
            var input = xs.Slice(row * d, d);
            var upstream = dy.Slice(row * d, d);
            float inv = r[row];
            if (!dw.IsEmpty) AccumulateWeightGradient(upstream, input, inv, dw);
            if (gradInput is null) continue;
            float coefficient = inv * inv * inv * WeightedDot(w, upstream, input) / d;
            InputGradient(w, upstream, input, inv, coefficient, dx.Slice(row * d, d));
        }
    }

    /// <summary>y = w * (x * r).</summary>
    private static void Scale(ReadOnlySpan<float> x, float r, ReadOnlySpan<float> w, Span<float> y)
    {
        int c = 0, n = Vector<float>.Count;
        var rv = new Vector<float>(r);
        for (; c + n <= x.Length; c += n)
            (new Vector<float>(w.Slice(c, n)) * (new Vector<float>(x.Slice(c, n)) * rv)).CopyTo(y.Slice(c, n));
        for (; c < x.Length; c++) y[c] = w[c] * (x[c] * r);
    }

    /// <summary>sum of w * dy * x.</summary>
    private static float WeightedDot(ReadOnlySpan<float> w, ReadOnlySpan<float> dy, ReadOnlySpan<float> x)
    {
        int c = 0, n = Vector<float>.Count;
        var acc = Vector<float>.Zero;
        for (; c + n <= x.Length; c += n)
            acc = Vector.FusedMultiplyAdd(new Vector<float>(w.Slice(c, n)) * new Vector<float>(dy.Slice(c, n)), new Vector<float>(x.Slice(c, n)), acc);
        float sum = Vector.Sum(acc);
        for (; c < x.Length; c++) sum += w[c] * dy[c] * x[c];
        return sum;
    }

    /// <summary>dx = r * (w * dy) - x * coefficient.</summary>
    private static void InputGradient(ReadOnlySpan<float> w, ReadOnlySpan<float> dy, ReadOnlySpan<float> x, float r, float coefficient, Span<float> dx)
    {
        int c = 0, n = Vector<float>.Count;
        var rv = new Vector<float>(r);
        var cv = new Vector<float>(coefficient);
        for (; c + n <= x.Length; c += n)
        {
            var g = new Vector<float>(w.Slice(c, n)) * new Vector<float>(dy.Slice(c, n));
            (rv * g - new Vector<float>(x.Slice(c, n)) * cv).CopyTo(dx.Slice(c, n));
        }
        for (; c < x.Length; c++) dx[c] = r * (w[c] * dy[c]) - x[c] * coefficient;
    }

    /// <summary>dw += dy * x * r, accumulated in float64.</summary>
    private static void AccumulateWeightGradient(ReadOnlySpan<float> dy, ReadOnlySpan<float> x, float r, Span<double> dw)
    {
        int c = 0, n = Vector<float>.Count;
        var rv = new Vector<float>(r);
        var dwVectors = MemoryMarshal.Cast<double, Vector<double>>(dw);
        for (; c + n <= x.Length; c += n)
        {
            Vector.Widen(new Vector<float>(dy.Slice(c, n)) * new Vector<float>(x.Slice(c, n)) * rv, out var low, out var high);
            int at = c / Vector<double>.Count;
            dwVectors[at] += low;
            dwVectors[at + 1] += high;
        }
        for (; c < x.Length; c++) dw[c] += dy[c] * x[c] * r;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static double SumOfSquares(ReadOnlySpan<float> x)
    {
        var acc = Vector<float>.Zero;
        int c = 0, w = Vector<float>.Count;
        for (; c + w <= x.Length; c += w)
        {
            var v = new Vector<float>(x.Slice(c, w));
            acc = Vector.FusedMultiplyAdd(v, v, acc);
        }
        double sum = Vector.Sum(acc);
        for (; c < x.Length; c++) sum += (double)x[c] * x[c];
        return sum;
    }
}

/// <summary>The autograd node behind <see cref="FusedRmsNorm.Apply"/>.</summary>
internal sealed class RmsNormFunction : autograd.SingleTensorFunction<RmsNormFunction>
{
    public override string Name => "FusedRmsNorm";

    public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
    {
        CustomBackward.Starting(ctx);
        var x = ((Tensor)vars[0]).contiguous();
        var weight = ((Tensor)vars[1]).contiguous();
        double eps = (double)vars[2];
        var y = HostTensors.EmptyLike(x);
        var inverseRms = empty(x.numel() / weight.shape[0], ScalarType.Float32, x.device);
        FusedRmsNorm.Forward(x, weight, y, inverseRms, eps);
        ctx.save_for_backward(new List<Tensor> { x, weight, inverseRms });
        ctx.save_data("needInput", ((Tensor)vars[0]).requires_grad);
        ctx.save_data("needWeight", ((Tensor)vars[1]).requires_grad);
        return y;
    }

    public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor grad_output) => CustomBackward.Run(ctx, grad_output, saved =>
    {
        var (x, weight, inverseRms) = (saved[0], saved[1], saved[2]);
        bool needInput = (bool)ctx.get_data("needInput"), needWeight = (bool)ctx.get_data("needWeight");
        var dx = needInput ? HostTensors.EmptyLike(x) : null;
        var dw = needWeight ? new double[weight.shape[0]] : null;
        using (var upstream = grad_output.contiguous())
            FusedRmsNorm.Backward(x, weight, inverseRms, upstream, dx, dw);
        var dwTensor = dw is null ? null : tensor(Array.ConvertAll(dw, v => (float)v));
        return new List<Tensor> { dx!, dwTensor!, null! };
    });
}
