using System.Runtime.InteropServices;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Kernels;

/// <summary>What the hand-written float32 CPU kernels share: raw element access and the block loop over threads.</summary>
internal static class CpuKernel
{
    /// <summary>The elements of a contiguous float32 CPU tensor (callers check dtype, device and layout).</summary>
    public static Span<float> Floats(Tensor t) => MemoryMarshal.Cast<byte, float>(t.bytes);

    /// <summary>The address of a contiguous float32 CPU tensor's first element (libtorch's memory: nothing to pin), or null.</summary>
    public static unsafe float* Address(Tensor? t) =>
        t is null ? null : (float*)System.Runtime.CompilerServices.Unsafe.AsPointer(ref MemoryMarshal.GetReference(Floats(t)));

    /// <summary>The address of a contiguous 16-bit CPU tensor's first element, read as unsigned (mask bits), or null.</summary>
    public static unsafe ushort* UInt16Address(Tensor? t) =>
        t is null ? null : (ushort*)System.Runtime.CompilerServices.Unsafe.AsPointer(ref MemoryMarshal.GetReference(t.bytes));

    /// <summary>
    /// Runs <paramref name="block"/> for 0..blocks-1 on up to torch's intra-op thread count. Each block writes only its
    /// own outputs, so results do not depend on the thread count.
    /// </summary>
    public static void ForEachBlock(int blocks, Action<int> block)
    {
        int threads = Math.Min(get_num_threads(), blocks);
        if (threads <= 1)
            for (int b = 0; b < blocks; b++) block(b);
        else
            Parallel.For(0, blocks, new ParallelOptions { MaxDegreeOfParallelism = threads }, block);
    }
}
