using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Microsoft.ML.Orpo.Ops;

/// <summary>Grouped-query attention of one new token against a key/value cache, without copying the cache.</summary>
internal static class GroupedQueryAttention
{
    /// <summary>
    /// (B, H, 1, d) queries against (B, K, S, d) keys/values, query head h reading key/value head h / (H / K), with an
    /// optional additive (B, 1, 1, S) mask -> (B, 1, H * d). Repeating the cache to H heads copied all of it for every
    /// decoded token. Here the heads at the same position of every group (h = kv * H/K + g) are one (B, K, 1, d) query
    /// against the cache as it is: per head, the same one-row attention as before, so logits stay bit-identical (one
    /// (B, K, H/K, d) call would batch the rows differently inside the kernel and change the last bits).
    /// </summary>
    public static Tensor OneQuery(Tensor q, Tensor k, Tensor v, Tensor? mask)
    {
        using var scope = NewDisposeScope();
        long b = q.shape[0], heads = q.shape[1], d = q.shape[3], kvHeads = k.shape[1], groups = heads / kvHeads;
        var byGroup = q.view(b, kvHeads, groups, 1, d);
        var perGroup = new Tensor[groups];
        for (int g = 0; g < groups; g++)
            perGroup[g] = F.scaled_dot_product_attention(byGroup.select(2, g), k, v, attn_mask: mask);  // (B, K, 1, d)
        return stack(perGroup, 2).reshape(b, 1, heads * d).MoveToOuterDisposeScope();                   // (B, K, H/K, 1, d)
    }
}
