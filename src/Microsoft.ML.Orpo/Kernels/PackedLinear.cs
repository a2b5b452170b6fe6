using TorchSharp;
using Microsoft.ML.Orpo.Native;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Kernels;

/// <summary>
/// <c>F.linear(x, weight, bias)</c> for float32 CPU tensors with many rows (training, evaluation, prompt prefill) through
/// <see cref="PackedGemm"/>: the forward product and both backward products (input gradient <c>dy W</c>, weight
/// gradient <c>dy^T x</c>). Decoding's few rows stay with <see cref="FewRowsLinear"/>; other types and devices, and
/// machines without AVX-512, with libtorch.
/// </summary>
internal static class PackedLinear
{
    /// <summary>The product through the kernel, or null where it does not apply (the caller uses libtorch).</summary>
    public static Tensor? TryApply(Tensor x, Tensor weight, Tensor? bias)
    {
        if (!PackedGemm.IsEnabled || x.dtype != ScalarType.Float32 || weight.dtype != ScalarType.Float32
            || x.device_type != DeviceType.CPU || weight.device_type != DeviceType.CPU
            || (bias is not null && (bias.dtype != ScalarType.Float32 || bias.device_type != DeviceType.CPU)))
            return null;
        long[] shape = x.shape;
        if (shape.Length < 2 || shape[^1] != weight.shape[1]) return null;
        long rows = shape.Aggregate(1L, (a, b) => a * b) / shape[^1];
        if (rows <= KernelThresholds.FewRowsMaxRows) return null;
        if (is_grad_enabled() && (x.requires_grad || weight.requires_grad || bias?.requires_grad == true))
            return PackedLinearFunction.apply(x, weight, bias!);
        return Forward(x, weight, bias);
    }

    /// <summary>(..., in) x, (out, in) weight, (out) bias -> (..., out).</summary>
    public static Tensor Forward(Tensor x, Tensor weight, Tensor? bias)
    {
        long[] shape = x.shape;
        using var flat = x.reshape(-1, shape[^1]).contiguous();
        using var w = weight.contiguous();
        var outputShape = (long[])shape.Clone();
        outputShape[^1] = weight.shape[0];
        // The result is its own tensor, not a view of a 2-D product: the decoder adds the residual stream into it in
        // place, which autograd forbids on a view made inside a custom node.
        var y = HostTensors.Empty(outputShape);
        using var product = y.view(flat.shape[0], outputShape[^1]);           // (N, out)
        CpuMatmul.MultiplyInto(product, flat, false, w, true, accumulate: false);
        if (bias is not null) product.add_(bias);
        return y;
    }
}

/// <summary>The autograd node behind <see cref="PackedLinear"/>: saves the input and the weight.</summary>
internal sealed class PackedLinearFunction : autograd.SingleTensorFunction<PackedLinearFunction>
{
    public override string Name => "PackedLinear";

    public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
    {
        CustomBackward.Starting(ctx);
        var x = (Tensor)vars[0];
        var weight = (Tensor)vars[1];
        var bias = (Tensor?)vars[2];
        ctx.save_for_backward(new List<Tensor> { x, weight });
        ctx.save_data("needs", new[] { x.requires_grad, weight.requires_grad, bias?.requires_grad == true });
        using var noGrad = no_grad();
        return PackedLinear.Forward(x, weight, bias);
    }

    public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor grad_output) => CustomBackward.Run(ctx, grad_output, saved =>
    {
        var (x, weight) = (saved[0], saved[1]);
        var needs = (bool[])ctx.get_data("needs");
        long[] shape = x.shape;
        long outputs = weight.shape[0];
        using var dy = grad_output.reshape(-1, outputs).contiguous();               // (N, out)
        using var w = weight.contiguous();
        Tensor? inputGradient = null, weightGradient = null, biasGradient = null;
        if (needs[0])
            using (var dx = CpuMatmul.Multiply(dy, false, w, false))                // (N, in)
                inputGradient = dx.view(shape);
        if (needs[1])
            using (var flat = x.reshape(-1, shape[^1]).contiguous())
                weightGradient = CpuMatmul.Multiply(dy, true, flat, false);         // (out, in)
        if (needs[2]) biasGradient = dy.sum(dim: 0);                                // (out)
        return new List<Tensor> { inputGradient!, weightGradient!, biasGradient! };
    });
}
