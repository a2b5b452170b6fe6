using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Microsoft.ML.Orpo.Ops.Reference;

/// <summary>
/// <c>y = x W^T + b</c>. With a matmul type other than the weight's or the input's (mixed precision, PyTorch autocast's rule for
/// <c>linear</c>), the input, weight and bias are cast to it first and the output stays in it; the casts are autograd
/// ops, so the gradient reaching the float32 weight is cast back to its type.
/// </summary>
internal static class ReferenceLinear
{
    /// <summary>(..., in) x, (out, in) weight, (out) bias -> (..., out).</summary>
    public static Tensor Forward(Tensor x, Tensor weight, Tensor? bias, ScalarType? matmulType) =>
        matmulType is ScalarType type && (type != weight.dtype || type != x.dtype)
            ? F.linear(x.to_type(type), weight.to_type(type), bias?.to_type(type))
            : F.linear(x, weight, bias);
}
