using System.Runtime.InteropServices;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Modeling;

/// <summary>
/// New float32 CPU tensors for the hand-written kernels' outputs, on Linux over memory from the C library's plain
/// <c>malloc</c>/<c>calloc</c> (freed by <c>free</c>) instead of libtorch's allocator. libtorch asks for every block
/// with <c>posix_memalign(64)</c>, and glibc (2.36 here) carves such a request out of a free chunk of at least size +
/// 64 + 32 bytes: a freed block is never big enough for the next request of its own size, so a training step's
/// same-sized activations keep landing above the holes the previous ones left. On the 41.7M step the heap spanned
/// 1.43 GB around 0.74 GB of live tensors; with the kernels' outputs here (and the decoder's RoPE temporaries and
/// residual sums gone) peak RSS fell from 1910-2000 to 1475-1495 MiB at the same speed. <c>malloc</c> pointers are
/// 16-byte aligned; libtorch's kernels and ours read with unaligned vector loads (measured: no speed change). Other
/// platforms, or a process whose allocator cannot be bound, get libtorch's tensors as before.
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

    /// <summary>Whether tensors of these bytes come from the C library (false: from libtorch).</summary>
    public static bool Serves(long bytes) => C.FromBlob != 0 && bytes >= MinBytes;

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
        nint handle;
        fixed (long* sizes = shape)
            handle = ((delegate* unmanaged<nint, nint, long*, int, sbyte, sbyte, int, int, byte, nint>)C.FromBlob)(
                (nint)data, C.Free, sizes, shape.Length, (sbyte)ScalarType.Float32, (sbyte)ScalarType.Float32, (int)DeviceType.CPU, -1, 0);
        if (handle == 0)
        {
            ((delegate* unmanaged<void*, void>)C.Free)(data);
            CheckForErrors(); // libtorch's own message, and its error state cleared
            throw new InvalidOperationException($"libtorch could not wrap a {bytes}-byte host buffer as a tensor of shape [{string.Join(", ", shape)}].");
        }
        return Tensor.UnsafeCreateTensor(handle);
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
