using Microsoft.ML.Orpo.Kernels;
using Microsoft.ML.Orpo.Ops.Reference;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Ops;

internal static partial class Op
{
    /// <summary>(..., D) x, (D) weight -> (..., D): <see cref="ReferenceRmsNorm"/>, or one pass per row (<see cref="FusedRmsNorm"/>).</summary>
    public static Tensor RmsNorm(Tensor x, Tensor weight, double eps) =>
        KernelPolicy.Allows(CpuKernels.RmsNorm) && FusedRmsNorm.Supports(x, weight)
            ? FusedRmsNorm.Apply(x, weight, eps)
            : ReferenceRmsNorm.Forward(x, weight, eps);
}
