using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using Microsoft.ML.Orpo.Native;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Kernels;

/// <summary>
/// The CPU kernel of the LoRA dropout mask (Ops.Reference.ReferenceDropout defines it): element i of a tensor is kept
/// when a 32-bit hash of (i, seed) (murmur3's finaliser, vectorised) is at or above p * 2^32, so the mask is a function
/// of the seed and the position. The standalone node therefore stores nothing: its backward pass hashes the positions
/// again, where a drawn mask (libtorch's <c>bernoulli_</c>) is kept for the backward pass.
/// <see cref="MaskRows(ReadOnlySpan{float}, Span{float}, long, long, double, bool)"/> applies it to a block of rows, which <see cref="LoraLinear"/> uses to drop x a chunk at a time;
/// on its AVX-512 path the forward pass records the mask as bits (<see cref="MaskRowRecording"/>, 1/32 of x) and the
/// backward pass applies those (<see cref="MaskRowFromBits"/>): reading them is cheaper than hashing again.
/// </summary>
internal static class HashedDropout
{
    private const int ChunkElements = 1 << 16;
    private static readonly Vector<uint> Lanes = new(Enumerable.Range(0, Vector<uint>.Count).Select(i => (uint)i).ToArray());

    public static bool Supports(Tensor x) => x.dtype == ScalarType.Float32 && x.device_type == DeviceType.CPU;

    /// <summary>The hash threshold of keep probability 1 - p: kept where hash &gt;= p * 2^32.</summary>
    public static uint Threshold(double probability) => (uint)Math.Min(uint.MaxValue, Math.Round(probability * 4294967296.0));

    /// <summary>x with the dropped elements zeroed and the rest scaled by 1 / (1 - p); differentiable in x.</summary>
    public static Tensor Apply(Tensor x, long seed, double probability) =>
        is_grad_enabled() && x.requires_grad ? HashedDropoutFunction.apply(x, seed, probability) : Masked(x, seed, probability);

    /// <summary>A new contiguous tensor: x (or a gradient of its shape) through the mask of <paramref name="seed"/>.</summary>
    internal static Tensor Masked(Tensor x, long seed, double probability)
    {
        using var input = x.contiguous();
        var output = HostTensors.EmptyLike(input);
        long elements = input.numel();
        if (elements > uint.MaxValue) throw new ArgumentException("LoRA dropout: more than 2^32 elements in one tensor.", nameof(x));
        uint threshold = Threshold(probability);
        float scale = (float)(1 / (1 - probability));
        CpuKernel.ForEachBlock((int)((elements + ChunkElements - 1) / ChunkElements), block =>
        {
            long start = (long)block * ChunkElements;
            int length = (int)Math.Min(ChunkElements, elements - start);
            Chunk(CpuKernel.Floats(input).Slice((int)start, length), CpuKernel.Floats(output).Slice((int)start, length),
                (uint)start, (uint)seed, (uint)((ulong)seed >> 32), threshold, scale);
        });
        return output;
    }

    /// <summary>
    /// Rows of a flattened (rows, width) tensor through the mask: <paramref name="target"/> = mask * source, or
    /// target += mask * source when <paramref name="accumulate"/>; <paramref name="firstElement"/> is the position of
    /// source[0] in the whole tensor.
    /// </summary>
    public static void MaskRows(ReadOnlySpan<float> source, Span<float> target, long firstElement, long seed, double probability, bool accumulate)
    {
        MaskRows(source, target, accumulate, default, default, firstElement, seed, probability);
    }

    /// <summary>
    /// As the other overload, and with the same mask (hashed once) <paramref name="addTarget"/> += mask *
    /// <paramref name="addSource"/>, a second row set of source's length (empty: none).
    /// </summary>
    public static void MaskRows(ReadOnlySpan<float> source, Span<float> target, bool accumulate, ReadOnlySpan<float> addSource, Span<float> addTarget,
        long firstElement, long seed, double probability)
    {
        if (firstElement + source.Length > uint.MaxValue + 1L) throw new ArgumentException("LoRA dropout: more than 2^32 elements in one tensor.");
        Chunk(source, target, (uint)firstElement, (uint)seed, (uint)((ulong)seed >> 32), Threshold(probability), (float)(1 / (1 - probability)), accumulate,
            addSource, addTarget);
    }

    /// <summary>Words of mask bits per row of <paramref name="width"/> elements (<see cref="MaskRowRecording"/>): 16 elements a word.</summary>
    public static int BitWords(int width) => (width + 15) / 16;

    /// <summary>
    /// One row through the mask, target = mask * source, as <see cref="MaskRows(ReadOnlySpan{float}, Span{float}, long, long, double, bool)"/>
    /// does, with the row's mask recorded: bit p % 16 of <paramref name="bits"/>[p / 16] is set where element p is kept.
    /// A backward pass then applies the same mask from the bits (<see cref="MaskRowFromBits"/>) instead of hashing again.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    public static void MaskRowRecording(ReadOnlySpan<float> source, Span<float> target, Span<ushort> bits, long firstElement, long seed, double probability)
    {
        if (firstElement + source.Length > uint.MaxValue + 1L) throw new ArgumentException("LoRA dropout: more than 2^32 elements in one tensor.");
        uint start = (uint)firstElement, seedLow = (uint)seed, seedHigh = (uint)((ulong)seed >> 32), threshold = Threshold(probability);
        float scale = (float)(1 / (1 - probability));
        int i = 0;
        if (Vector512.IsHardwareAccelerated)
        {
            var lanes = Vector512.Create(0u, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
            var scales = Vector512.Create(scale);
            var thresholds = Vector512.Create(threshold);
            for (; i + 16 <= source.Length; i += 16)
            {
                var keep = Vector512.GreaterThanOrEqual(Hash(Vector512.Create(start + (uint)i) + lanes, seedLow, seedHigh), thresholds);
                bits[i >> 4] = (ushort)keep.ExtractMostSignificantBits();
                Apply16(keep.AsSingle(), scales, i, source, target, accumulate: false, default, default);
            }
        }
        for (; i < source.Length; i++)
        {
            if ((i & 15) == 0) bits[i >> 4] = 0;
            bool kept = Hash(new Vector<uint>(start + (uint)i), seedLow, seedHigh)[0] >= threshold;
            if (kept) bits[i >> 4] |= (ushort)(1 << (i & 15));
            Apply1(kept, scale, i, source, target, accumulate: false, default, default);
        }
    }

    /// <summary>
    /// The mask recorded by <see cref="MaskRowRecording"/> applied to one row: target = mask * source (target +=
    /// mask * source when <paramref name="accumulate"/>) and addTarget += mask * addSource (empty: none), the same
    /// operations as the hashing path, so the same bits.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    public static void MaskRowFromBits(ReadOnlySpan<ushort> bits, ReadOnlySpan<float> source, Span<float> target, bool accumulate,
        ReadOnlySpan<float> addSource, Span<float> addTarget, double probability)
    {
        float scale = (float)(1 / (1 - probability));
        int i = 0;
        if (Vector512.IsHardwareAccelerated)
        {
            var laneBits = Vector512.Create(1u, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768);
            var scales = Vector512.Create(scale);
            for (; i + 16 <= source.Length; i += 16)
                Apply16(Vector512.Equals(Vector512.Create((uint)bits[i >> 4]) & laneBits, laneBits).AsSingle(), scales, i, source, target, accumulate,
                    addSource, addTarget);
        }
        for (; i < source.Length; i++)
            Apply1(((bits[i >> 4] >> (i & 15)) & 1) != 0, scale, i, source, target, accumulate, addSource, addTarget);
    }

    /// <summary>target = mask * source, or target += mask * source when <paramref name="accumulate"/>; addTarget += mask * addSource.</summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static void Chunk(ReadOnlySpan<float> source, Span<float> target, uint start, uint seedLow, uint seedHigh, uint threshold, float scale,
        bool accumulate = false, ReadOnlySpan<float> addSource = default, Span<float> addTarget = default)
    {
        int width = Vector<uint>.Count, i = 0;
        bool both = !addSource.IsEmpty;
        if (Vector512.IsHardwareAccelerated) i = Chunk512(source, target, start, seedLow, seedHigh, threshold, scale, accumulate, addSource, addTarget);
        var scales = new Vector<float>(scale);
        var thresholds = new Vector<uint>(threshold);
        for (; i + width <= source.Length; i += width)
        {
            var h = Hash(new Vector<uint>(start + (uint)i) + Lanes, seedLow, seedHigh);
            var keep = Vector.AsVectorSingle(Vector.GreaterThanOrEqual(h, thresholds));
            var masked = Vector.ConditionalSelect(keep, new Vector<float>(source.Slice(i)) * scales, Vector<float>.Zero);
            (accumulate ? new Vector<float>(target.Slice(i)) + masked : masked).CopyTo(target.Slice(i));
            if (both)
                (new Vector<float>(addTarget.Slice(i)) + Vector.ConditionalSelect(keep, new Vector<float>(addSource.Slice(i)) * scales, Vector<float>.Zero))
                    .CopyTo(addTarget.Slice(i));
        }
        for (; i < source.Length; i++)
            Apply1(Hash(new Vector<uint>(start + (uint)i), seedLow, seedHigh)[0] >= threshold, scale, i, source, target, accumulate, addSource, addTarget);
    }

    /// <summary>
    /// <see cref="Chunk"/>'s loop 16 elements at a time where 512-bit vectors are fast (<see cref="Vector{T}"/> is 256
    /// bits there): each element's mask depends only on its index, so the width changes no bit. Returns how many
    /// elements it did.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static int Chunk512(ReadOnlySpan<float> source, Span<float> target, uint start, uint seedLow, uint seedHigh, uint threshold, float scale,
        bool accumulate, ReadOnlySpan<float> addSource, Span<float> addTarget)
    {
        var lanes = Vector512.Create(0u, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        var scales = Vector512.Create(scale);
        var thresholds = Vector512.Create(threshold);
        int i = 0;
        for (; i + 16 <= source.Length; i += 16)
            Apply16(Vector512.GreaterThanOrEqual(Hash(Vector512.Create(start + (uint)i) + lanes, seedLow, seedHigh), thresholds).AsSingle(), scales, i,
                source, target, accumulate, addSource, addTarget);
        return i;
    }

    /// <summary>
    /// Elements [i, i + 16) through a mask whose kept lanes are all ones: target = mask * source (target += when
    /// <paramref name="accumulate"/>), and addTarget += mask * addSource unless addSource is empty. The hashing and the
    /// recorded-bits paths share it, so they compute the same bits.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Apply16(Vector512<float> keep, Vector512<float> scales, int i, ReadOnlySpan<float> source, Span<float> target, bool accumulate,
        ReadOnlySpan<float> addSource, Span<float> addTarget)
    {
        var masked = Vector512.ConditionalSelect(keep, Vector512.Create(source.Slice(i, 16)) * scales, Vector512<float>.Zero);
        (accumulate ? Vector512.Create<float>(target.Slice(i, 16)) + masked : masked).CopyTo(target.Slice(i, 16));
        if (!addSource.IsEmpty)
            (Vector512.Create<float>(addTarget.Slice(i, 16)) + Vector512.ConditionalSelect(keep, Vector512.Create(addSource.Slice(i, 16)) * scales, Vector512<float>.Zero))
                .CopyTo(addTarget.Slice(i, 16));
    }

    /// <summary><see cref="Apply16"/> for element i alone (the loops' tails).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Apply1(bool kept, float scale, int i, ReadOnlySpan<float> source, Span<float> target, bool accumulate,
        ReadOnlySpan<float> addSource, Span<float> addTarget)
    {
        float masked = kept ? source[i] * scale : 0f;
        target[i] = accumulate ? target[i] + masked : masked;
        if (!addSource.IsEmpty) addTarget[i] += kept ? addSource[i] * scale : 0f;
    }

    /// <summary>murmur3's 32-bit finaliser of (index ^ seedHigh) * golden + seedLow, lane by lane.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector<uint> Hash(Vector<uint> index, uint seedLow, uint seedHigh)
    {
        var h = (index ^ new Vector<uint>(seedHigh)) * 0x9E3779B1u + new Vector<uint>(seedLow);
        h ^= Vector.ShiftRightLogical(h, 16);
        h *= 0x85EBCA6Bu;
        h ^= Vector.ShiftRightLogical(h, 13);
        h *= 0xC2B2AE35u;
        return h ^ Vector.ShiftRightLogical(h, 16);
    }

    /// <summary><see cref="Hash(Vector{uint}, uint, uint)"/> on 16 lanes: the same finaliser, lane by lane.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<uint> Hash(Vector512<uint> index, uint seedLow, uint seedHigh)
    {
        var h = (index ^ Vector512.Create(seedHigh)) * 0x9E3779B1u + Vector512.Create(seedLow);
        h ^= Vector512.ShiftRightLogical(h, 16);
        h *= 0x85EBCA6Bu;
        h ^= Vector512.ShiftRightLogical(h, 13);
        h *= 0xC2B2AE35u;
        return h ^ Vector512.ShiftRightLogical(h, 16);
    }
}

/// <summary>The autograd node behind <see cref="HashedDropout.Apply"/>: keeps only the seed and p.</summary>
internal sealed class HashedDropoutFunction : autograd.SingleTensorFunction<HashedDropoutFunction>
{
    public override string Name => "LoraDropout";

    public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
    {
        CustomBackward.Starting(ctx);
        ctx.save_data("seed", vars[1]);
        ctx.save_data("p", vars[2]);
        using var noGrad = no_grad();
        return HashedDropout.Masked((Tensor)vars[0], (long)vars[1], (double)vars[2]);
    }

    public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor grad_output) => CustomBackward.Run(ctx, grad_output, _ =>
        new List<Tensor> { HashedDropout.Masked(grad_output, (long)ctx.get_data("seed"), (double)ctx.get_data("p")), null!, null! });
}
