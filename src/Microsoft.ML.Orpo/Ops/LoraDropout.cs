using Microsoft.ML.Orpo.Kernels;
using Microsoft.ML.Orpo.Ops.Reference;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Ops;

/// <summary>
/// The dropout of a model's LoRA adapters. Off (identity) unless a training step turned it on with
/// <see cref="During"/>; then every adapter's mask is a function of the step's seed, the adapter's index and the
/// element's position (<see cref="ReferenceDropout"/>, the definition; <see cref="HashedDropout"/>, its CPU kernel, draws
/// the same mask), so the same micro-batch draws the same masks again: when activations are recomputed in the backward
/// pass, when a resumed run replays a step, and on every device and kernel policy.
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

    /// <summary>The seed of adapter <paramref name="index"/>'s mask, or null while dropout is off.</summary>
    public long? StreamSeed(int index) => seed is long s && Probability > 0 ? Mix(s, index) : null;

    /// <summary>x itself when dropout is off, else x with each element zeroed with probability p and the rest scaled by 1/(1-p).</summary>
    public Tensor Apply(Tensor x, int index)
    {
        if (StreamSeed(index) is not long s) return x.alias();
        return KernelPolicy.Allows(CpuKernels.Lora) && HashedDropout.Supports(x)
            ? HashedDropout.Apply(x, s, Probability)
            : ReferenceDropout.Apply(x, s, Probability);
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
