using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Ops;

/// <summary>Per-layer key/value cache for incremental decoding, pre-allocated to a maximum length.</summary>
internal sealed class KeyValueCache : IDisposable
{
    private readonly Tensor[] keys;   // per layer (B, K, maxLength, d)
    private readonly Tensor[] values;

    public KeyValueCache(int layers, int kvHeads, int headDim, long batch, long maxLength, ScalarType dtype, Device device)
    {
        MaxLength = maxLength;
        keys = new Tensor[layers];
        values = new Tensor[layers];
        for (int i = 0; i < layers; i++)
        {
            keys[i] = zeros(new[] { batch, kvHeads, maxLength, headDim }, dtype, device);
            values[i] = zeros(new[] { batch, kvHeads, maxLength, headDim }, dtype, device);
        }
    }

    public long MaxLength { get; }

    /// <summary>Tokens already cached (the same for every layer once a forward pass completes).</summary>
    public long Length { get; set; }

    /// <summary>Writes the new (B, K, T, d) keys/values at <see cref="Length"/> and returns views of everything cached.</summary>
    public (Tensor Keys, Tensor Values) Append(int layer, Tensor newKeys, Tensor newValues)
    {
        long t = newKeys.shape[2];
        if (Length + t > MaxLength)
            throw new InvalidOperationException($"The key/value cache holds {MaxLength} tokens; cannot append {t} to {Length}.");
        keys[layer].narrow(2, Length, t).copy_(newKeys);
        values[layer].narrow(2, Length, t).copy_(newValues);
        return (keys[layer].narrow(2, 0, Length + t), values[layer].narrow(2, 0, Length + t));
    }

    public void Dispose()
    {
        foreach (var t in keys.Concat(values)) t.Dispose();
    }
}
