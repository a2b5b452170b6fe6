using Microsoft.ML.Orpo.Kernels;
using TorchSharp;
using Microsoft.ML.Orpo.Native;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Microsoft.ML.Orpo.Ops.Reference;

/// <summary>
/// <c>y = x W^T + b</c> for a frozen weight stored in another type than the product runs in (a bfloat16 base under
/// LoRA, multiplied in float32), or multiplied in another type than the input's (bfloat16 products under LoRA): the
/// weight is converted for the product and again for the input gradient, never kept converted, and the output and
/// input gradient come back in the input's type. Through <see cref="ReferenceLinear"/> autograd would save every layer's converted weight until the
/// backward pass, giving back the memory the low-precision base saves. Device-agnostic libtorch calls, except that
/// many float32 rows on the CPU go through <see cref="PackedGemm"/> (as an unconverted float32 weight does) where it
/// is enabled, which widens the weight as it packs it instead of converting a copy.
/// </summary>
internal static class FrozenLinear
{
    /// <summary>(..., in) x, (out, in) frozen weight and bias -> (..., out) in x's type, multiplied in <paramref name="type"/>.</summary>
    public static Tensor Forward(Tensor x, Tensor weight, Tensor? bias, ScalarType type) =>
        is_grad_enabled() && x.requires_grad
            ? FrozenLinearFunction.apply(x, weight, bias!, type)
            : Product(x, weight, bias, type);

    internal static Tensor Product(Tensor x, Tensor weight, Tensor? bias, ScalarType type)
    {
        using var scope = NewDisposeScope();
        var input = x.to_type(type);
        // Many float32 rows on the CPU: the packed GEMM, as an unconverted float32 weight would take (Op.Linear); it
        // widens a bfloat16 weight as it packs it, so no converted copy is made.
        if (UsesPackedGemm(input, weight)) return PackedLinear.Forward(input, weight, bias?.to_type(type)).MoveToOuterDisposeScope();
        if (type == x.dtype) return F.linear(input, weight.to_type(type), bias?.to_type(type)).MoveToOuterDisposeScope();
        // Widened first, the bias added in the output's type (as LoraLinear adds it).
        var y = F.linear(input, weight.to_type(type)).to_type(x.dtype);
        return (bias is null ? y : y.add_(bias.to_type(x.dtype))).MoveToOuterDisposeScope();
    }

    /// <summary>dy (..., out) -> dx (..., in) = dy W in <paramref name="type"/>, W converted for this product only.</summary>
    internal static Tensor InputGradient(Tensor gradOutput, Tensor weight, ScalarType type)
    {
        using var scope = NewDisposeScope();
        var dy = gradOutput.to_type(type);
        if (!UsesPackedGemm(dy, weight)) return dy.matmul(weight.to_type(type)).MoveToOuterDisposeScope();
        long[] shape = (long[])dy.shape.Clone();
        shape[^1] = weight.shape[1];
        return CpuMatmul.Multiply(dy.reshape(-1, weight.shape[0]).contiguous(), false, weight.contiguous(), false).view(shape).MoveToOuterDisposeScope();
    }

    private static bool UsesPackedGemm(Tensor rows, Tensor weight) =>
        PackedGemm.IsEnabled && rows.dtype == ScalarType.Float32 && rows.device_type == DeviceType.CPU
        && weight.dtype is ScalarType.Float32 or ScalarType.BFloat16 && weight.device_type == DeviceType.CPU
        && weight.numel() >= KernelThresholds.PackedLinearMinWeightElements && rows.numel() / rows.shape[^1] > KernelThresholds.FewRowsMaxRows;
}

/// <summary>The autograd node behind <see cref="FrozenLinear"/>: saves only the (already stored) weight.</summary>
internal sealed class FrozenLinearFunction : autograd.SingleTensorFunction<FrozenLinearFunction>
{
    public override string Name => "FrozenLinear";

    public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
    {
        CustomBackward.Starting(ctx);
        var x = (Tensor)vars[0];
        var weight = (Tensor)vars[1];
        var type = (ScalarType)vars[3];
        ctx.save_for_backward(new List<Tensor> { weight });
        ctx.save_data("inputType", x.dtype);
        ctx.save_data("type", type);
        using var noGrad = no_grad();
        return FrozenLinear.Product(x, weight, (Tensor?)vars[2], type);
    }

    public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor grad_output) => CustomBackward.Run(ctx, grad_output, saved =>
    {
        var type = (ScalarType)ctx.get_data("type");
        var inputType = (ScalarType)ctx.get_data("inputType");
        var dx = FrozenLinear.InputGradient(grad_output, saved[0], type);     // (..., in)
        if (dx.dtype != inputType)
            using (var product = dx)
                dx = product.to_type(inputType);
        return new List<Tensor> { dx, null!, null!, null! };
    });
}
