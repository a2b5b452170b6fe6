using Microsoft.ML.Orpo.Kernels;
using TorchSharp.Modules;
using Microsoft.ML.Orpo.Ops.Reference;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Ops;

internal static partial class Op
{
    /// <summary>
    /// The SwiGLU tail <c>down(silu(gate) * up)</c>: (..., I) gate and up -> (..., D), the down projection multiplied
    /// in <paramref name="matmulType"/>, with the down projection's LoRA <paramref name="adapter"/> when given. Kernel (<see cref="FusedSwiGlu"/>): with gradients, one autograd node that
    /// keeps only gate and up for the backward pass; without, the product in one pass.
    /// </summary>
    public static Tensor SwiGlu(Tensor gate, Tensor up, Linear down, ScalarType? matmulType, LoraAdapter? adapter = null)
    {
        if (!KernelPolicy.Allows(CpuKernels.SwiGlu) || !FusedSwiGlu.Supports(gate, up, down))
            return Linear(ReferenceSwiGlu.Product(gate, up), down, matmulType, adapter);
        if (adapter is not null)
        {
            // The adapter needs the product itself: the product as one node (gate and up saved), then the projection.
            using var adapted = FusedSwiGlu.ProductWithGradient(gate, up);
            return Linear(adapted, down, matmulType, adapter);
        }
        if (is_grad_enabled() && (gate.requires_grad || up.requires_grad || down.weight!.requires_grad || down.bias?.requires_grad == true))
            return FusedSwiGlu.Apply(gate, up, down);
        using var product = FusedSwiGlu.Product(gate, up);
        return Linear(product, down, matmulType);
    }
}
