using static TorchSharp.torch;

namespace Microsoft.ML.Orpo;

/// <summary>The arithmetic precision of training (<see cref="OrpoOptions.Precision"/>).</summary>
public enum OrpoPrecision
{
    /// <summary>Everything in float32.</summary>
    Float32,

    /// <summary>
    /// bfloat16 mixed precision, like PyTorch's <c>torch.autocast(dtype=torch.bfloat16)</c>: the matrix products of every
    /// Linear layer and of the LM head run in bfloat16, while the weights, their gradients and the AdamW state stay
    /// float32, and RMSNorm, rotary embeddings, attention, softmax/logsumexp, the residual stream and the ORPO
    /// objective are computed in float32.
    /// </summary>
    BFloat16,
}

/// <summary>What each <see cref="OrpoPrecision"/> means for the network.</summary>
internal static class OrpoPrecisionExtensions
{
    /// <summary>The type Linear layers and the LM head multiply in; null: the weights' own type (no casts).</summary>
    public static ScalarType? MatmulType(this OrpoPrecision precision) => precision switch
    {
        OrpoPrecision.Float32 => null,
        OrpoPrecision.BFloat16 => ScalarType.BFloat16,
        _ => throw new ArgumentOutOfRangeException(nameof(precision), precision, "Unknown precision."),
    };
}
