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

    /// <summary>x itself when dropout is off, else x with each element zeroed with probability p and the rest scaled by 1/(1-p).</summary>
    public Tensor Apply(Tensor x, int index)
    {
        if (seed is not long s || Probability == 0) return x.alias();
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
