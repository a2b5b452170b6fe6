using Microsoft.ML.Orpo.Kernels;
using TorchSharp.Modules;
using Microsoft.ML.Orpo.Ops.Reference;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Ops;

internal static partial class Op
{
    /// <summary>
    /// <c>module(x)</c> multiplied in <paramref name="matmulType"/> (null: the input's type), plus the low-rank update
    /// <c>Scale * B (A dropout(x))</c> of an <paramref name="adapter"/> (<see cref="LoraAdapter.Update"/>), or DoRA's
    /// rescaled form of it. A trainable weight follows autocast's rule (<see cref="ReferenceLinear"/>: the output stays
    /// in the product's type). A frozen one (a LoRA base) returns the input's type whatever the product's
    /// (<see cref="FrozenLinear"/>, which keeps no converted copy for the backward pass), and its adapter multiplies in
    /// the adapter's own float32: under LoRA with bfloat16 products the activations stay float32 and keep the fused
    /// kernels. Kernels: a frozen projection with its adapter on many float32 rows as one node (<see cref="LoraLinear"/>,
    /// its base products in bfloat16 through libtorch when asked); many float32 rows through the packed GEMM
    /// (<see cref="PackedLinear"/>); decoding's few rows through <see cref="FewRowsLinear"/>, which also reads a bfloat16
    /// base as stored. The weight's size comes from the module's own fields: reading a TorchSharp shape costs as much
    /// as a small decoding product.
    /// </summary>
    public static Tensor Linear(Tensor x, Linear module, ScalarType? matmulType, LoraAdapter? adapter = null) =>
        adapter?.Magnitude is null ? LoraLinearOrBase(x, module, matmulType, adapter) : DoraLinear(x, module, matmulType, adapter);

    private static Tensor LoraLinearOrBase(Tensor x, Linear module, ScalarType? matmulType, LoraAdapter? adapter)
    {
        if (adapter is not null && KernelPolicy.Allows(CpuKernels.Lora)
            && LoraLinear.Supports(x, module.weight!, module.bias, adapter.A, adapter.B, matmulType))
            return LoraLinear.Apply(x, module.weight!, module.bias, adapter.A, adapter.B, adapter.Scale,
                adapter.Dropout.StreamSeed(adapter.Index), adapter.Dropout.Probability, matmulType);
        var y = BaseLinear(x, module, matmulType);
        if (adapter is null) return y;
        using var update = adapter.Update(x, AdapterProductType(y, adapter, matmulType));
        return y.add_(update);
    }

    /// <summary>
    /// DoRA as PEFT computes it, with f = m / ||W + s B A|| per output row (<see cref="LoraAdapter.DoraFactor"/>, the norm
    /// a constant). Without dropout, <c>z + (f - 1) (z - b)</c> with z the LoRA projection <c>W x + b + s B A x</c>
    /// (through the fused kernels where they apply), which is <c>f (W x + s B A x) + b</c> and exactly z while f is 1 (a
    /// new adapter). With dropout d, PEFT's training formula <c>W x + b + (f - 1) W d(x) + f s B A d(x)</c>, computed as
    /// <c>W (x - d(x)) + b + f (W d(x) + s B A d(x))</c>: the same two base products, but only the second sum is kept for
    /// m's gradient (one (N, out) tensor a projection instead of two) and it goes through the fused LoRA kernel.
    /// </summary>
    private static Tensor DoraLinear(Tensor x, Linear module, ScalarType? matmulType, LoraAdapter adapter)
    {
        using var scope = NewDisposeScope();
        var factor = DoraFactor(module, adapter);                                         // (out)
        if (adapter.Dropout.StreamSeed(adapter.Index) is null)
        {
            var z = LoraLinearOrBase(x, module, matmulType, adapter);                      // (..., out)
            var unbiased = module.bias is null ? z : z - module.bias;
            return z.addcmul(unbiased, factor - 1, 1).MoveToOuterDisposeScope();
        }
        var dropped = adapter.Dropout.Apply(x, adapter.Index);                            // d(x) (..., in)
        var rest = BaseLinear(x - dropped, module, matmulType);                            // W (x - d(x)) + b
        var directional = UndroppedLora(dropped, module, matmulType, adapter);            // W d(x) + s B A d(x)
        return rest.addcmul(directional, factor, 1).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// DoRA's (out) factor m / ||W + s B A|| of <paramref name="adapter"/> on <paramref name="module"/>
    /// (<see cref="LoraAdapter.DoraFactor"/>), or the one it holds for a generation call. <c>W A^T</c> (out, r) goes
    /// through the projection's own product (a bfloat16 base read as stored), in the adapters' type.
    /// </summary>
    public static Tensor DoraFactor(Linear module, LoraAdapter adapter)
    {
        if (adapter.HeldFactor is { } held) return held.alias();
        using var scope = NewDisposeScope();
        Tensor weightTimesAT;
        using (no_grad())
            weightTimesAT = BaseLinear(adapter.A.detach(), module, null, withBias: false).t();  // (r, out) -> (out, r)
        return adapter.DoraFactor(weightTimesAT).MoveToOuterDisposeScope();
    }

    /// <summary><c>W x + s B A x</c> without bias or dropout (x is already dropped), as one kernel where it applies.</summary>
    private static Tensor UndroppedLora(Tensor x, Linear module, ScalarType? matmulType, LoraAdapter adapter)
    {
        if (KernelPolicy.Allows(CpuKernels.Lora) && LoraLinear.Supports(x, module.weight!, null, adapter.A, adapter.B, matmulType))
            return LoraLinear.Apply(x, module.weight!, null, adapter.A, adapter.B, adapter.Scale, seed: null, adapter.Dropout.Probability, matmulType);
        var y = BaseLinear(x, module, matmulType, withBias: false);
        using var update = adapter.UpdateOfDropped(x, AdapterProductType(y, adapter, matmulType));
        return y.add_(update);
    }

    /// <summary>
    /// The adapter's products stay in its own type (float32) where the base's output is in it: a frozen base multiplied in
    /// bfloat16 returns float32 (<see cref="BaseLinear"/>), as <see cref="LoraLinear"/> does, whose rank products are float32.
    /// </summary>
    private static ScalarType? AdapterProductType(Tensor baseOutput, LoraAdapter adapter, ScalarType? matmulType) =>
        baseOutput.dtype == adapter.A.dtype ? null : matmulType;

    private static Tensor BaseLinear(Tensor x, Linear module, ScalarType? matmulType, bool withBias = true)
    {
        var weight = module.weight!;
        var bias = withBias ? module.bias : null;
        var type = matmulType ?? x.dtype;
        if ((type != weight.dtype || type != x.dtype) && !weight.requires_grad && bias?.requires_grad != true)
        {
            // Decoding reads a frozen bfloat16 base as stored (half the bytes) in the few-rows kernel.
            if (type == x.dtype && KernelPolicy.Allows(CpuKernels.FewRowsProduct) && module.in_features * module.out_features >= KernelThresholds.FewRowsMinWeightElements
                && FewRowsLinear.TryApply(x, weight) is { } few)
                return bias is null ? few : few.add_(bias);
            return FrozenLinear.Forward(x, weight, bias, type);
        }
        if (type != weight.dtype || type != x.dtype) return ReferenceLinear.Forward(x, weight, bias, type);
        long weightElements = module.in_features * module.out_features;
        if (weightElements >= KernelThresholds.PackedLinearMinWeightElements && PackedLinear.TryApply(x, weight, bias) is { } y) return y;
        return FewRowsOrReference(x, weight, bias, weightElements);
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
