using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Microsoft.ML.Orpo.Ops.Reference;

/// <summary>The SwiGLU product <c>silu(gate) * up</c>, which the MLP's down projection then reads.</summary>
internal static class ReferenceSwiGlu
{
    /// <summary>(..., I) gate and up -> (..., I).</summary>
    public static Tensor Product(Tensor gate, Tensor up) => F.silu(gate) * up;
}
