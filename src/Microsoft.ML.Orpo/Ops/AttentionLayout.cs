using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Ops;

/// <summary>The head counts of one attention layer: H query heads, K key/value heads, d their width.</summary>
internal readonly record struct AttentionHeads(int Heads, int KvHeads, int HeadDim);

/// <summary>
/// How the T new tokens of the B rows of a forward pass attend: causally over themselves (no mask, no cache, no shared
/// prefix: the layout training's concatenated rows use and the one the CPU kernels serve), through an additive
/// (B, 1, T, S) mask (padding, decoding), after the keys/values of a cache, or as packed rows that share a prefix.
/// </summary>
internal readonly record struct AttentionLayout(long Batch, long Length, Tensor? Mask = null, KeyValueCache? Cache = null,
    SharedPrefixAttention? SharedPrefix = null)
{
    /// <summary>Plain causal attention of the new tokens over themselves.</summary>
    public bool IsCausal => Mask is null && Cache is null && SharedPrefix is null;
}
