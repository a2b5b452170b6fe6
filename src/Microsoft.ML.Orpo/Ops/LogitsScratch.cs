using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Ops;

/// <summary>
/// The fused LM head's (rows x vocabulary) blocks, kept for a whole training run instead of allocated per chunk: the
/// logits, and with mixed precision the block its products run in; and a frozen head's weight converted to the
/// product's type (LoRA with bf16 products: 272 MB at the 0.5B shape, converted once instead of every micro-batch).
/// A block this size (49 MB for 384 rows at vocabulary 32000) gets a mapping of its own from glibc, so a fresh one is
/// faulted in page by page every time, which slows the LM-head product that first writes into it. The blocks are live
/// at the step's memory peak anyway (the LM head), so keeping them does not raise the peak. Owned by the trainer and
/// disposed with it; not thread-safe (one training loop at a time).
/// (benchmarks/README.md, "Measurements behind the code: LogitsScratch")
/// </summary>
internal sealed class LogitsScratch : IDisposable
{
    private readonly Dictionary<ScalarType, Tensor> buffers = new();
    private (Tensor Source, Tensor Copy)? converted;

    /// <summary>A contiguous (rows, columns) block of <paramref name="dtype"/>, valid until the next call for that type; its values are unspecified.</summary>
    public Tensor Block(long rows, long columns, ScalarType dtype, Device device)
    {
        buffers.TryGetValue(dtype, out var buffer);
        if (buffer is null || buffer.shape[0] < rows || buffer.shape[1] != columns
            || buffer.device_type != device.type || buffer.device_index != device.index)
        {
            long capacity = Math.Max(rows, buffer is not null && buffer.shape[1] == columns ? buffer.shape[0] : 0);
            buffer?.Dispose();
            buffer = empty(new[] { capacity, columns }, dtype, device).DetachFromDisposeScope();
            buffers[dtype] = buffer;
        }
        return buffer.narrow(0, 0, rows);
    }

    /// <summary>
    /// <paramref name="weight"/>, which must not change while this scratch lives (a frozen LM head during a training run),
    /// in <paramref name="dtype"/>: converted on the first call and kept (the weight itself when already of that type).
    /// Owned by the scratch: callers must not dispose it.
    /// </summary>
    public Tensor Converted(Tensor weight, ScalarType dtype)
    {
        if (weight.dtype == dtype) return weight;
        if (converted is not { } c || !ReferenceEquals(c.Source, weight) || c.Copy.dtype != dtype)
        {
            converted?.Copy.Dispose();
            converted = (weight, weight.detach().to_type(dtype).DetachFromDisposeScope());
        }
        return converted.Value.Copy;
    }

    public void Dispose()
    {
        foreach (var buffer in buffers.Values) buffer.Dispose();
        buffers.Clear();
        converted?.Copy.Dispose();
        converted = null;
    }
}
