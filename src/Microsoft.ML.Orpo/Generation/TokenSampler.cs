using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Generation;

/// <summary>Picks the next token from (B, V) logits: greedy, or temperature with top-k / top-p filtering.</summary>
internal static class TokenSampler
{
    public static Tensor Next(Tensor logits, GenerationOptions options, Generator? generator) // (B, V) -> (B)
    {
        if (options.Temperature == 0) return logits.argmax(-1);
        using var scope = NewDisposeScope();
        var scaled = logits.to_type(ScalarType.Float32) / options.Temperature;
        if (options.TopK > 0 && options.TopK < scaled.shape[^1])
        {
            var kth = scaled.topk(options.TopK, dim: -1).values.narrow(-1, options.TopK - 1, 1);   // (B, 1)
            scaled = scaled.masked_fill(scaled < kth, float.NegativeInfinity);
        }
        if (options.TopP < 1)
        {
            var (sorted, order) = scaled.sort(-1, descending: true);
            var probabilities = sorted.softmax(-1);
            // Drop a token when the tokens ranked above it already reach TopP; the most likely one always stays.
            var drop = (probabilities.cumsum(-1) - probabilities) >= options.TopP;
            var dropInOriginalOrder = zeros_like(drop).scatter(-1, order, drop);
            scaled = scaled.masked_fill(dropInOriginalOrder, float.NegativeInfinity);
        }
        return scaled.softmax(-1).multinomial(1, generator: generator).squeeze(-1).MoveToOuterDisposeScope();
    }
}
