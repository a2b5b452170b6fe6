using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Ops;

/// <summary>
/// The fused LM head's (rows x vocabulary) logits block, kept for a whole training run instead of allocated per chunk.
/// A block this size (49 MB for 384 rows at vocabulary 32000) gets a mapping of its own from glibc, so a fresh one is
/// faulted in page by page every time, which slows the LM-head product that first writes into it. The block is live
/// at the step's memory peak anyway (the LM head), so keeping it does not raise the peak. Owned by the trainer and
/// disposed with it; not thread-safe (one training loop at a time).
/// (benchmarks/README.md, "Measurements behind the code: LogitsScratch")
/// </summary>
internal sealed class LogitsScratch : IDisposable
{
    private Tensor? buffer;

    /// <summary>A contiguous (rows, columns) block, valid until the next call; its values are unspecified.</summary>
    public Tensor Block(long rows, long columns, ScalarType dtype, Device device)
    {
        if (buffer is null || buffer.shape[0] < rows || buffer.shape[1] != columns || buffer.dtype != dtype
            || buffer.device_type != device.type || buffer.device_index != device.index)
        {
            long capacity = Math.Max(rows, buffer is not null && buffer.shape[1] == columns ? buffer.shape[0] : 0);
            buffer?.Dispose();
            buffer = empty(new[] { capacity, columns }, dtype, device).DetachFromDisposeScope();
        }
        return buffer.narrow(0, 0, rows);
    }

    public void Dispose()
    {
        buffer?.Dispose();
        buffer = null;
    }
}
