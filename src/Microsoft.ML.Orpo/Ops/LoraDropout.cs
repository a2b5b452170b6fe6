using Microsoft.ML.Orpo.Kernels;
using System.Numerics;
using System.Runtime.CompilerServices;
using TorchSharp;
using Microsoft.ML.Orpo.Native;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Ops;

/// <summary>
/// The dropout of a model's LoRA adapters. Off (identity) unless a training step turned it on with
/// <see cref="During"/>; then every adapter's mask is drawn from a generator seeded by the step's seed and the
/// adapter's index, so the same micro-batch draws the same masks again: when activations are recomputed in the
/// backward pass, and when a resumed run replays a step.
/// </summary>
internal sealed class LoraDropout
{
    private long? seed;

    public LoraDropout(double probability)
    {
        if (!(probability >= 0 && probability < 1))
            throw new ArgumentOutOfRangeException(nameof(probability), probability, "LoRA dropout must be in [0, 1).");
        Probability = probability;
    }

    public double Probability { get; }

    /// <summary>Turns dropout on for one micro-batch until the returned handle is disposed.</summary>
    public IDisposable During(int runSeed, int step, int microBatch)
    {
        seed = Mix(Mix(Mix(0x4C6F5241, runSeed), step), microBatch);
        return new Off(this);
    }

    /// <summary>The seed of adapter <paramref name="index"/>'s mask for <see cref="HashedDropout"/>, or null while dropout is off.</summary>
    public long? StreamSeed(int index) => seed is long s && Probability > 0 ? Mix(s, index) : null;

    /// <summary>x itself when dropout is off, else x with each element zeroed with probability p and the rest scaled by 1/(1-p).</summary>
    public Tensor Apply(Tensor x, int index)
    {
        if (seed is not long s || Probability == 0) return x.alias();
        if (HashedDropout.Supports(x)) return HashedDropout.Apply(x, Mix(s, index), Probability);
        using var generator = new Generator(unchecked((ulong)Mix(s, index)), x.device);
        using var scope = NewDisposeScope();
        var keep = empty_like(x).bernoulli_(1 - Probability, generator).div_(1 - Probability);
        return (x * keep).MoveToOuterDisposeScope();
    }

    /// <summary>SplitMix64's finaliser over seed + value: distinct, well-spread streams for nearby inputs.</summary>
    private static long Mix(long seed, long value)
    {
        unchecked
        {
            ulong z = (ulong)seed + 0x9E3779B97F4A7C15UL * (ulong)(value + 1);
            z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
            z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
            return (long)(z ^ (z >> 31));
        }
    }

    private sealed class Off(LoraDropout owner) : IDisposable
    {
        public void Dispose() => owner.seed = null;
    }
}

/// <summary>
/// The CPU kernel behind <see cref="LoraDropout.Apply"/> for float32 CPU tensors (where the kernels are on): element i
/// is kept when a 32-bit hash of (i, seed) (murmur3's finaliser, vectorised) is at or above p * 2^32, so the mask is a
/// function of the seed and the position. It is therefore never stored: the backward pass hashes the positions again,
/// in one autograd node that saves nothing, against libtorch's <c>bernoulli_</c> (a generator draw per element) and a
/// float32 mask kept for the backward pass.
/// </summary>
internal static class HashedDropout
{
    private const int ChunkElements = 1 << 16;
    private static readonly Vector<uint> Lanes = new(Enumerable.Range(0, Vector<uint>.Count).Select(i => (uint)i).ToArray());

    public static bool Supports(Tensor x) =>
        x.dtype == ScalarType.Float32 && x.device_type == DeviceType.CPU && KernelPolicy.Current.Mode == KernelMode.Auto;

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
        uint threshold = (uint)Math.Min(uint.MaxValue, Math.Round(probability * 4294967296.0));
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

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Chunk(ReadOnlySpan<float> source, Span<float> target, uint start, uint seedLow, uint seedHigh, uint threshold, float scale)
    {
        int width = Vector<uint>.Count, i = 0;
        var scales = new Vector<float>(scale);
        var thresholds = new Vector<uint>(threshold);
        for (; i + width <= source.Length; i += width)
        {
            var h = Hash(new Vector<uint>(start + (uint)i) + Lanes, seedLow, seedHigh);
            var keep = Vector.AsVectorSingle(Vector.GreaterThanOrEqual(h, thresholds));
            Vector.ConditionalSelect(keep, new Vector<float>(source.Slice(i)) * scales, Vector<float>.Zero).CopyTo(target.Slice(i));
        }
        for (; i < source.Length; i++)
            target[i] = Hash(new Vector<uint>(start + (uint)i), seedLow, seedHigh)[0] >= threshold ? source[i] * scale : 0f;
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
