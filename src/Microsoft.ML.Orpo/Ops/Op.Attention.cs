using Microsoft.ML.Orpo.Kernels;
using Microsoft.ML.Orpo.Ops.Reference;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Ops;

internal static partial class Op
{
    /// <summary>
    /// Rotary embedding and causal grouped-query attention: (B, H, T, d) queries and (B, K, T, d) keys before
    /// rotation, (B, K, T, d) values, (B, 1, T, d) cos and sin -> (B, T, H * d). Both run in the rotary tables' type
    /// (float32 under mixed precision too). Kernels serve the plain causal layout: small heads with the rotation fused
    /// (<see cref="CausalAttention"/>), wider ones blocked (<see cref="BlockedCausalAttention"/>); masks, caches and
    /// shared prefixes take <see cref="ReferenceAttention"/>.
    /// </summary>
    public static Tensor Attention(Tensor q, Tensor k, Tensor v, Tensor cos, Tensor sin, AttentionHeads heads, AttentionLayout layout, int layer)
    {
        (q, k, v) = (q.to_type(cos.dtype), k.to_type(cos.dtype), v.to_type(cos.dtype));
        if (layout.IsCausal && KernelPolicy.Allows(CpuKernels.Attention))
        {
            if (CausalAttention.Supports(q, k, v, cos)) return CausalAttention.Apply(q, k, v, cos, sin);
            if (BlockedCausalAttention.Supports(q, k, v))
                return BlockedCausalAttention.SupportsRotation(q, cos)
                    ? BlockedCausalAttention.Apply(q, k, v, cos, sin)
                    : BlockedCausalAttention.Apply(Rotary(q, cos, sin), Rotary(k, cos, sin), v);
        }
        return ReferenceAttention.Forward(q, k, v, cos, sin, heads, layout, layer);
    }

    /// <summary>(B, heads, T, d) x, (B, 1, T, d) cos and sin -> x rotated (<see cref="ReferenceRotary"/>; the kernels fuse it into attention).</summary>
    public static Tensor Rotary(Tensor x, Tensor cos, Tensor sin) => ReferenceRotary.Forward(x, cos, sin);
}
