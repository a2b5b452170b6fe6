using Microsoft.ML.Orpo.Kernels;
using TorchSharp.Modules;
using Microsoft.ML.Orpo.Ops.Reference;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Ops;

internal static partial class Op
{
    /// <summary>
    /// The SwiGLU tail <c>down(silu(gate) * up)</c>: (..., I) gate and up -> (..., D), the down projection multiplied
    /// in <paramref name="matmulType"/>, with the down projection's LoRA <paramref name="adapter"/> when given. Kernel
    /// (<see cref="FusedSwiGlu"/>): with gradients, one autograd node that keeps only gate and up for the backward pass;
    /// without, the product in one pass.
    /// </summary>
    public static Tensor SwiGlu(Tensor gate, Tensor up, Linear down, ScalarType? matmulType, LoraAdapter? adapter = null)
    {
        if (!KernelPolicy.Allows(CpuKernels.SwiGlu) || !FusedSwiGlu.SupportsProduct(gate, up))
            return Linear(ReferenceSwiGlu.Product(gate, up), down, matmulType, adapter);
        if (adapter is not null || !FusedSwiGlu.SupportsProjection(down))
        {
            // An adapter needs the product itself, and a frozen down weight stored in bfloat16 (LoraOptions.BFloat16Base)
            // goes through Linear's frozen path: the product as one node (gate and up saved), then the projection. The
            // composed product would also keep silu(gate) and the product: two (tokens x MLP width) tensors per layer.
            using var multiplied = FusedSwiGlu.ProductWithGradient(gate, up);
            return Linear(multiplied, down, matmulType, adapter);
        }
        if (is_grad_enabled() && (gate.requires_grad || up.requires_grad || down.weight!.requires_grad || down.bias?.requires_grad == true))
            return FusedSwiGlu.Apply(gate, up, down);
        using var product = FusedSwiGlu.Product(gate, up);
        return Linear(product, down, matmulType);
    }
}
