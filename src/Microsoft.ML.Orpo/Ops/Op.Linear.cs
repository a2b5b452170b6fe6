using Microsoft.ML.Orpo.Kernels;
using TorchSharp.Modules;
using Microsoft.ML.Orpo.Ops.Reference;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Ops;

internal static partial class Op
{
    /// <summary>
    /// <c>module(x)</c> multiplied in <paramref name="matmulType"/> (null: the input's type), see
    /// <see cref="ReferenceLinear"/>, plus the low-rank update <c>Scale * B (A dropout(x))</c> of an
    /// <paramref name="adapter"/> (<see cref="LoraAdapter.Update"/>) multiplied the same way. Kernels: a frozen projection
    /// with its adapter on many float32 rows as one node (<see cref="LoraLinear"/>); many float32 rows through the packed
    /// GEMM (<see cref="PackedLinear"/>); decoding's few rows through <see cref="FewRowsLinear"/>, which also reads a
    /// bfloat16 base as stored. Otherwise a frozen weight stored in another type than the product's (a bfloat16 base)
    /// goes through <see cref="FrozenLinear"/>, which keeps no converted copy for the backward pass. The weight's size
    /// comes from the module's own fields: reading a TorchSharp shape costs as much as a small decoding product.
    /// </summary>
    public static Tensor Linear(Tensor x, Linear module, ScalarType? matmulType, LoraAdapter? adapter = null)
    {
        if (adapter is not null && KernelPolicy.Allows(CpuKernels.Lora)
            && LoraLinear.Supports(x, module.weight!, module.bias, adapter.A, adapter.B, matmulType))
            return LoraLinear.Apply(x, module.weight!, module.bias, adapter.A, adapter.B, adapter.Scale,
                adapter.Dropout.StreamSeed(adapter.Index), adapter.Dropout.Probability);
        var y = BaseLinear(x, module, matmulType);
        if (adapter is null) return y;
        using var update = adapter.Update(x, matmulType);
        return y.add_(update);
    }

    private static Tensor BaseLinear(Tensor x, Linear module, ScalarType? matmulType)
    {
        var weight = module.weight!;
        var type = matmulType ?? x.dtype;
        if (type != weight.dtype && !weight.requires_grad && module.bias?.requires_grad != true)
        {
            // Decoding reads a frozen bfloat16 base as stored (half the bytes) in the few-rows kernel.
            if (type == x.dtype && KernelPolicy.Allows(CpuKernels.FewRowsProduct) && module.in_features * module.out_features >= KernelThresholds.FewRowsMinWeightElements
                && FewRowsLinear.TryApply(x, weight) is { } few)
                return module.bias is null ? few : few.add_(module.bias);
            return FrozenLinear.Forward(x, weight, module.bias, type);
        }
        if (type != weight.dtype || type != x.dtype) return ReferenceLinear.Forward(x, weight, module.bias, type);
        long weightElements = module.in_features * module.out_features;
        if (weightElements >= KernelThresholds.PackedLinearMinWeightElements && PackedLinear.TryApply(x, weight, module.bias) is { } y) return y;
        return FewRowsOrReference(x, weight, module.bias, weightElements);
    }

    /// <summary>
    /// The LM head: (..., D) hidden states and the (V, D) head matrix -> (..., V) logits in the hidden states' type,
    /// multiplied in <paramref name="matmulType"/> when given. <paramref name="weightElements"/> is V x D.
    /// </summary>
    public static Tensor Logits(Tensor hidden, Tensor weight, long weightElements, ScalarType? matmulType)
    {
        if (matmulType is ScalarType type && type != weight.dtype)
        {
            using var scope = NewDisposeScope();
            return ReferenceLinear.Forward(hidden, weight, null, type).to_type(hidden.dtype).MoveToOuterDisposeScope();
        }
        return FewRowsOrReference(hidden, weight, null, weightElements);
    }

    private static Tensor FewRowsOrReference(Tensor x, Tensor weight, Tensor? bias, long weightElements)
    {
        if (weightElements >= KernelThresholds.FewRowsMinWeightElements && KernelPolicy.Allows(CpuKernels.FewRowsProduct)
            && FewRowsLinear.TryApply(x, weight) is { } y)
            return bias is null ? y : y.add_(bias);
        return ReferenceLinear.Forward(x, weight, bias, null);
    }
}
