using System.Runtime.InteropServices;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Native;

/// <summary>
/// New float32 CPU tensors for the hand-written kernels' outputs, on Linux over memory from the C library's plain
/// <c>malloc</c>/<c>calloc</c> (freed by <c>free</c>) instead of libtorch's allocator. libtorch asks for every block
/// with <c>posix_memalign(64)</c>, and glibc 2.36 carves such a request out of a free chunk of at least size +
/// 64 + 32 bytes: a freed block is never big enough for the next request of its own size, so a training step's
/// same-sized activations keep landing above the holes the previous ones left, and the heap grows far past the live
/// tensors. With the kernels' outputs here (and the decoder's RoPE temporaries and residual sums gone) peak RSS fell
/// at the same speed. <c>malloc</c> pointers are 16-byte aligned; libtorch's kernels and ours read with unaligned
/// vector loads (no speed change measured). Other
/// platforms, a process whose allocator cannot be bound, and a TorchSharp the binding was not verified on or whose
/// self-test fails (<see cref="NativeAbiGuard"/>) get libtorch's tensors as before.
/// (benchmarks/README.md, "Measurements behind the code: HostTensors")
/// </summary>
internal static unsafe class HostTensors
{
    /// <summary>Smaller blocks stay with libtorch: the fragmentation is a large-block effect.</summary>
    public const long MinBytes = 1L << 20;

    // malloc, calloc and free as the process binds them (an LD_PRELOADed allocator such as jemalloc included), so
    // that a block always goes back to the allocator it came from, and LibTorchSharp's THSTensor_new (its wrapper of
    // torch::from_blob(data, sizes, deleter, options), which TorchSharp's own array factories use but do not expose
    // with a deleter). All four or none: without them every tensor comes from libtorch.
    private static readonly (nint Malloc, nint Calloc, nint Free, nint FromBlob) C = Bind();

    // THSTensor_new's signature below is typed by hand: used only on the TorchSharp versions it was verified on, and
    // only after a round trip through it reads back what was written.
    private static readonly NativeAbiGuard Guard = new("HostTensors", "tensors come from libtorch's allocator", SelfTest);

    [ThreadStatic] private static nint selfTestFreed;

    /// <summary>Null where HostTensors may serve tensors (or the platform is not Linux); otherwise why it does not.</summary>
    public static string? FallbackReason => OperatingSystem.IsLinux() ? Guard.FallbackReason : null;

    /// <summary>Whether tensors of these bytes come from the C library (false: from libtorch).</summary>
    public static bool Serves(long bytes) => bytes >= MinBytes && OperatingSystem.IsLinux() && Guard.FallbackReason is null;

    /// <summary>An uninitialised float32 CPU tensor of <paramref name="shape"/>.</summary>
    public static Tensor Empty(params long[] shape) => Create(shape, zeroed: false);

    /// <summary>A float32 CPU tensor of zeros of <paramref name="shape"/>.</summary>
    public static Tensor Zeros(params long[] shape) => Create(shape, zeroed: true);

    /// <summary><c>empty_like</c> for a float32 CPU tensor (contiguous result); other tensors go to libtorch.</summary>
    public static Tensor EmptyLike(Tensor t) => IsHostFloat(t) ? Empty(t.shape) : empty_like(t);

    /// <summary><c>zeros_like</c> for a float32 CPU tensor (contiguous result); other tensors go to libtorch.</summary>
    public static Tensor ZerosLike(Tensor t) => IsHostFloat(t) ? Zeros(t.shape) : zeros_like(t);

    private static bool IsHostFloat(Tensor t) => t.dtype == ScalarType.Float32 && t.device_type == DeviceType.CPU;

    private static Tensor Create(long[] shape, bool zeroed)
    {
        long elements = 1;
        foreach (long n in shape) elements *= n;
        long bytes = elements * sizeof(float);
        if (!Serves(bytes)) return zeroed ? zeros(shape, ScalarType.Float32) : empty(shape, ScalarType.Float32);
        void* data = zeroed
            ? ((delegate* unmanaged<nuint, nuint, void*>)C.Calloc)((nuint)bytes, 1)
            : ((delegate* unmanaged<nuint, void*>)C.Malloc)((nuint)bytes);
        if (data is null) throw new OutOfMemoryException($"Could not allocate {bytes} bytes for a tensor of shape [{string.Join(", ", shape)}].");
        return Wrap(data, shape, C.Free);
    }

    /// <summary>A float32 CPU tensor over <paramref name="data"/>, which <paramref name="deleter"/> frees with the tensor's storage.</summary>
    private static Tensor Wrap(void* data, long[] shape, nint deleter)
    {
        nint handle;
        fixed (long* sizes = shape)
            handle = ((delegate* unmanaged<nint, nint, long*, int, sbyte, sbyte, int, int, byte, nint>)C.FromBlob)(
                (nint)data, deleter, sizes, shape.Length, (sbyte)ScalarType.Float32, (sbyte)ScalarType.Float32, (int)DeviceType.CPU, -1, 0);
        if (handle == 0)
        {
            ((delegate* unmanaged<void*, void>)C.Free)(data);
            CheckForErrors(); // libtorch's own message, and its error state cleared
            throw new InvalidOperationException($"libtorch could not wrap a host buffer as a float32 tensor of shape [{string.Join(", ", shape)}].");
        }
        return Tensor.UnsafeCreateTensor(handle);
    }

    /// <summary>
    /// Wraps a known block as Create does, reads it back through TorchSharp and libtorch, and disposes it: null when
    /// the values, shape, type, device and strides are the ones written, the tensor aliases the block, and disposing
    /// it freed the block; else what differed. <paramref name="misread"/> alters the values read back.
    /// </summary>
    private static string? SelfTest(bool misread)
    {
        if (C.FromBlob == 0) return "malloc, calloc, free or LibTorchSharp's THSTensor_new could not be bound";
        long[] shape = [3, 5];
        const int count = 15;
        static float Pattern(int i) => 0.25f * i - 1.5f; // distinct values with an exact float sum (3.75)
        float* block = (float*)((delegate* unmanaged<nuint, void*>)C.Malloc)(count * sizeof(float));
        if (block is null) return "malloc returned null";
        for (int i = 0; i < count; i++) block[i] = Pattern(i);
        selfTestFreed = 0;
        string? failure;
        using (NewDisposeScope())
        {
            var tensor = Wrap(block, shape, (nint)(delegate* unmanaged<void*, void>)&FreeForSelfTest);
            failure = Describe(tensor, block, shape, misread);
            tensor.Dispose();
        }
        if (failure is null && selfTestFreed != (nint)block) failure = "disposing the tensor did not free its block through the deleter";
        return failure;

        static string? Describe(Tensor tensor, float* block, long[] shape, bool misread)
        {
            if (!tensor.shape.SequenceEqual(shape)) return $"shape [{string.Join(", ", tensor.shape)}], expected [{string.Join(", ", shape)}]";
            if (tensor.dtype != ScalarType.Float32) return $"dtype {tensor.dtype}, expected Float32";
            if (tensor.device_type != DeviceType.CPU) return $"device {tensor.device_type}, expected CPU";
            if (!tensor.stride().SequenceEqual(new long[] { shape[1], 1 }) || !tensor.is_contiguous())
                return $"strides [{string.Join(", ", tensor.stride())}], expected [{shape[1]}, 1]";
            fixed (byte* data = tensor.bytes)
                if (data != block) return "the tensor does not alias the block it wraps";
            float[] values;
            using (var accessor = tensor.data<float>()) values = accessor.ToArray();
            if (misread) values[0] += 1;
            for (int i = 0; i < count; i++)
                if (values[i] != Pattern(i)) return $"element {i} read back as {values[i]}, expected {Pattern(i)}";
            using var sum = tensor.sum();
            using var last = tensor[shape[0] - 1, shape[1] - 1];
            if (sum.ToSingle() != 3.75f || last.ToSingle() != Pattern(count - 1))
                return $"libtorch read sum {sum.ToSingle()} and last element {last.ToSingle()}, expected 3.75 and {Pattern(count - 1)}";
            return null;
        }
    }

    [UnmanagedCallersOnly]
    private static void FreeForSelfTest(void* block)
    {
        selfTestFreed = (nint)block;
        ((delegate* unmanaged<void*, void>)C.Free)(block);
    }

    private static (nint, nint, nint, nint) Bind()
    {
        if (!OperatingSystem.IsLinux()) return default;
        nint process = NativeLibrary.GetMainProgramHandle(); // dlsym's global lookup, the PLT's binding
        if (!NativeLibrary.TryGetExport(process, "malloc", out nint malloc) || !NativeLibrary.TryGetExport(process, "calloc", out nint calloc)
            || !NativeLibrary.TryGetExport(process, "free", out nint free))
            return default;
        // The library TorchSharp itself loaded, found the way TorchSharp's own imports find it.
        if (!NativeLibrary.TryLoad("LibTorchSharp", typeof(torch).Assembly, null, out nint torchSharp)
            || !NativeLibrary.TryGetExport(torchSharp, "THSTensor_new", out nint fromBlob))
            return default;
        return (malloc, calloc, free, fromBlob);
    }
}
