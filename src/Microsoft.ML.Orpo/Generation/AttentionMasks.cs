using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Generation;

/// <summary>Additive attention masks for left-padded batches.</summary>
internal static class AttentionMasks
{
    /// <summary>
    /// Mask for <paramref name="queryCount"/> new tokens at the end of <paramref name="keep"/> (B, S; true = real token):
    /// causal and blind to padding. A padded query attends to itself so its (ignored) output stays finite,
    /// since a NaN there would leak into later layers through 0 * NaN.
    /// </summary>
    public static Tensor Causal(Tensor keep, long queryCount, ScalarType dtype) // -> (B, 1, T, S)
    {
        using var scope = NewDisposeScope();
        long s = keep.shape[1];
        var queryPositions = arange(s - queryCount, s, device: keep.device).unsqueeze(1);   // (T, 1)
        var keyPositions = arange(0, s, device: keep.device).unsqueeze(0);                  // (1, S)
        var causal = keyPositions <= queryPositions;                                         // (T, S)
        var allowed = causal.unsqueeze(0) & keep.unsqueeze(1);                              // (B, T, S)
        allowed = allowed | (keyPositions == queryPositions).unsqueeze(0);
        var mask = zeros(allowed.shape, dtype, keep.device).masked_fill(allowed.logical_not(), float.NegativeInfinity);
        return mask.unsqueeze(1).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Additive (B, 1, 1, S) mask that hides padding keys: for one new token at the end of the sequence this equals
    /// <see cref="Causal"/> (every earlier key is in its past, and a generated token is never padding), so a decode
    /// loop can build it once and take a view of the first S columns per step instead of rebuilding it.
    /// </summary>
    public static Tensor KeyPadding(Tensor keep, ScalarType dtype) // (B, S) -> (B, 1, 1, S)
    {
        using var scope = NewDisposeScope();
        var mask = zeros(keep.shape, dtype, keep.device).masked_fill(keep.logical_not(), float.NegativeInfinity);
        return mask.view(keep.shape[0], 1, 1, keep.shape[1]).MoveToOuterDisposeScope();
    }
}
