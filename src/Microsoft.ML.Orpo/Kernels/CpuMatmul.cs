using TorchSharp;
using Microsoft.ML.Orpo.Native;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Kernels;

/// <summary>
/// 2-D float32 products <c>op(a) op(b)</c> on the CPU through <see cref="PackedGemm"/> where it applies (AVX-512,
/// contiguous float32 CPU tensors, enough work to pay for packing), through libtorch otherwise. Transposes are flags,
/// not views: the kernel reads the stored matrix in either order. b may be stored in bfloat16 (a frozen base under
/// LoRA): the product is the float32 product with b widened, which the kernel does as it packs b and libtorch on a
/// converted copy. No autograd: callers are autograd nodes.
/// </summary>
internal static class CpuMatmul
{
    /// <summary>op(a) op(b) as a new (m, n) tensor; op transposes where the flag says so.</summary>
    public static Tensor Multiply(Tensor a, bool transA, Tensor b, bool transB)
    {
        var (m, k, n) = Dimensions(a, transA, b, transB);
        if (!Applies(a, b, m, k, n)) return Fallback(a, transA, b, transB);
        var c = HostTensors.Empty(m, n);
        Run(c, a, transA, b, transB, (int)m, (int)k, (int)n, accumulate: false);
        return c;
    }

    /// <summary><c>c = op(a) op(b)</c>, or <c>c += op(a) op(b)</c> when <paramref name="accumulate"/>; c is a
    /// contiguous (m, n) tensor that shares no memory with a or b.</summary>
    public static void MultiplyInto(Tensor c, Tensor a, bool transA, Tensor b, bool transB, bool accumulate)
    {
        var (m, k, n) = Dimensions(a, transA, b, transB);
        if (!Applies(a, b, m, k, n) || c.dtype != ScalarType.Float32 || c.device_type != DeviceType.CPU || !c.is_contiguous()
            || c.numel() > int.MaxValue / sizeof(float))
        {
            using var left = transA ? a.t() : a.alias();
            using var right = Widened(a, b, transB);
            if (accumulate)
                using (var product = left.mm(right)) c.add_(product);
            else
                c.addmm_(left, right, beta: 0, alpha: 1); // beta 0 ignores c's old contents: the product without a temporary
            return;
        }
        Run(c, a, transA, b, transB, (int)m, (int)k, (int)n, accumulate);
    }

    private static (long M, long K, long N) Dimensions(Tensor a, bool transA, Tensor b, bool transB)
    {
        long[] aShape = a.shape, bShape = b.shape;
        if (aShape.Length != 2 || bShape.Length != 2)
            throw new ArgumentException($"CpuMatmul multiplies 2-D tensors, got ({string.Join(", ", aShape)}) and ({string.Join(", ", bShape)}).");
        long m = transA ? aShape[1] : aShape[0], k = transA ? aShape[0] : aShape[1];
        long kb = transB ? bShape[1] : bShape[0], n = transB ? bShape[0] : bShape[1];
        if (k != kb) throw new ArgumentException($"CpuMatmul: inner dimensions differ ({k} and {kb}).");
        return (m, k, n);
    }

    private static bool Applies(Tensor a, Tensor b, long m, long k, long n) =>
        PackedGemm.IsEnabled && m * k * n >= KernelThresholds.PackedGemmMinMultiplyAdds
        && a.dtype == ScalarType.Float32 && b.dtype is ScalarType.Float32 or ScalarType.BFloat16
        && a.device_type == DeviceType.CPU && b.device_type == DeviceType.CPU
        && a.is_contiguous() && b.is_contiguous()
        && a.numel() <= int.MaxValue / sizeof(float) && b.numel() <= int.MaxValue / sizeof(float) && m * n <= int.MaxValue / sizeof(float);

    private static Tensor Fallback(Tensor a, bool transA, Tensor b, bool transB)
    {
        using var left = transA ? a.t() : a.alias();
        using var right = Widened(a, b, transB);
        return left.mm(right);
    }

    /// <summary>op(b) for libtorch: a view, or a float32 copy of a bfloat16 b multiplied into a float32 a.</summary>
    private static Tensor Widened(Tensor a, Tensor b, bool transB)
    {
        if (!(a.dtype == ScalarType.Float32 && b.dtype == ScalarType.BFloat16)) return transB ? b.t() : b.alias();
        using var converted = b.to_type(ScalarType.Float32);
        return transB ? converted.t() : converted.alias();
    }

    private static unsafe void Run(Tensor c, Tensor a, bool transA, Tensor b, bool transB, int m, int k, int n, bool accumulate)
    {
        int lda = transA ? m : k, ldb = transB ? k : n;
        if (b.dtype == ScalarType.BFloat16)
        {
            fixed (float* pa = CpuKernel.Floats(a), pc = CpuKernel.Floats(c))
            fixed (ushort* pb = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, ushort>(b.bytes))
                PackedGemm.MultiplyBFloat16B(m, n, k, pa, lda, transA, pb, ldb, transB, pc, n, accumulate);
            return;
        }
        fixed (float* pa = CpuKernel.Floats(a), pb = CpuKernel.Floats(b), pc = CpuKernel.Floats(c))
            PackedGemm.Multiply(m, n, k, pa, lda, transA, pb, ldb, transB, pc, n, accumulate);
    }
}
