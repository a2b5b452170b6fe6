using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Microsoft.ML.Orpo.Ops.Reference;

/// <summary>
/// Rotary embedding and causal grouped-query attention in every layout, from libtorch's scaled dot-product attention:
/// <c>softmax(rope(q) rope(k)^T / sqrt(d) + mask) v</c>, query head h reading key/value head h / (H / K).
/// </summary>
internal static class ReferenceAttention
{
    /// <summary>
    /// (B, H, T, d) queries and (B, K, T, d) keys before rotation, (B, K, T, d) values, (B, 1, T, d) cos and sin
    /// -> (B, T, H * d), the layout the output projection reads.
    /// </summary>
    public static Tensor Forward(Tensor q, Tensor k, Tensor v, Tensor cos, Tensor sin, AttentionHeads heads, AttentionLayout layout, int layer)
    {
        q = ReferenceRotary.Forward(q, cos, sin);
        k = ReferenceRotary.Forward(k, cos, sin);
        if (layout.Cache is { } cache) (k, v) = cache.Append(layer, k, v);              // (B, K, S, d)
        if (heads.KvHeads != heads.Heads && layout.Length == 1)
            return GroupedQueryAttention.OneQuery(q, k, v, layout.Mask);                  // decoding: no cache copy
        if (heads.KvHeads != heads.Heads)
        {
            k = k.repeat_interleave(heads.Heads / heads.KvHeads, dim: 1);                  // (B, H, S, d)
            v = v.repeat_interleave(heads.Heads / heads.KvHeads, dim: 1);
        }
        if (layout.SharedPrefix is { } shared) return shared.Attend(q, k, v);
        var y = layout.Mask is null
            ? F.scaled_dot_product_attention(q, k, v, is_casual: true)
            : F.scaled_dot_product_attention(q, k, v, attn_mask: layout.Mask);           // (B, H, T, d)
        return y.transpose(1, 2).reshape(layout.Batch, layout.Length, heads.Heads * heads.HeadDim);
    }
}
