using Microsoft.ML.Orpo.Native;
using Microsoft.ML.Orpo.Ops;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Modeling;

/// <summary>
/// Activation recomputation ("gradient checkpointing"): a decoder layer runs its forward without recording a graph
/// and keeps only its input; the backward pass runs the layer again with gradients on and backpropagates through that
/// one-layer graph, which also accumulates the layer's parameter gradients. Peak training memory then holds one
/// layer's activations instead of all of them, for one extra layer forward per layer. The layers are deterministic
/// (no dropout), so the recomputed graph is the original one.
/// </summary>
internal static class RecomputedLayer
{
    /// <summary>(B, T, D) -> (B, T, D), the same values and gradients as <c>layer.Forward(x, cos, sin, layout, matmulType)</c>
    /// (a layout without a cache).</summary>
    public static Tensor Apply(LlamaDecoderLayer layer, Tensor x, Tensor cos, Tensor sin, AttentionLayout layout, ScalarType? matmulType) =>
        RecomputedLayerFunction.apply(x, layer, cos, sin, layout.Mask!, layout.SharedPrefix!, matmulType ?? x.dtype, layout.Batch, layout.Length);
}

/// <summary>The autograd node behind <see cref="RecomputedLayer.Apply"/>.</summary>
internal sealed class RecomputedLayerFunction : autograd.SingleTensorFunction<RecomputedLayerFunction>
{
    public override string Name => "RecomputedLayer";

    public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
    {
        CustomBackward.Starting(ctx);
        var x = (Tensor)vars[0];
        var mask = (Tensor?)vars[4];
        // Saved through autograd, not as managed references: the caller disposes its cos/sin/mask handles when the
        // forward's dispose scope ends, long before the backward pass.
        var saved = new List<Tensor> { x, (Tensor)vars[2], (Tensor)vars[3] };
        if (mask is not null) saved.Add(mask);
        ctx.save_for_backward(saved);
        ctx.save_data("layer", vars[1]);
        // The caller disposes its SharedPrefixAttention with its batch, before the backward pass: keep an alias.
        var sharedPrefix = (SharedPrefixAttention?)vars[5];
        ctx.save_data("sharedPrefix", sharedPrefix?.Retain()!);
        // Without a graph nothing keeps the layer's intermediates alive except their managed handles: release them now.
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        ctx.save_data("matmulType", vars[6]);
        ctx.save_data("batch", vars[7]);
        ctx.save_data("length", vars[8]);
        var layout = new AttentionLayout((long)vars[7], (long)vars[8], mask, null, sharedPrefix);
        return ((LlamaDecoderLayer)vars[1]).Forward(x, (Tensor)vars[2], (Tensor)vars[3], layout, (ScalarType)vars[6]).MoveToOuterDisposeScope();
    }

    public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor grad_output) => CustomBackward.Run(ctx, grad_output, saved =>
    {
        var layer = (LlamaDecoderLayer)ctx.get_data("layer");
        using var sharedPrefix = (SharedPrefixAttention?)ctx.get_data("sharedPrefix");
        Tensor gradInput;
        using (var scope = NewDisposeScope())
        using (enable_grad())
        {
            var input = saved[0].detach().requires_grad_(true);
            var layout = new AttentionLayout((long)ctx.get_data("batch"), (long)ctx.get_data("length"), saved.Count > 3 ? saved[3] : null, null, sharedPrefix);
            var output = layer.Forward(input, saved[1], saved[2], layout, (ScalarType)ctx.get_data("matmulType"));
            output.backward(new[] { grad_output });
            gradInput = input.grad!.MoveToOuterDisposeScope();
        }
        return new List<Tensor> { gradInput, null!, null!, null!, null!, null!, null!, null!, null! };
    });
}
