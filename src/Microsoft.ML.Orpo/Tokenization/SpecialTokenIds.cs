using Microsoft.ML.Orpo.Modeling;

namespace Microsoft.ML.Orpo.Tokenization;

/// <summary>
/// Decides BOS/EOS/pad ids. Precedence: the token strings of <c>tokenizer_config.json</c>, then ids the tokenizer
/// file itself defines (a SentencePiece model's trainer spec), then the model config.
/// </summary>
internal sealed record SpecialTokenIds(int? Bos, int? Eos, int? Pad)
{
    public static SpecialTokenIds Resolve(
        TokenizerConfigJson tokenizerConfig, string tokenizerConfigSource,
        SpecialTokenIds fromTokenizerFile, LlamaConfig? modelConfig,
        Func<string, int?> lookup, int vocabularySize)
    {
        int? Pick(string? token, string key, int? own, int? fromModel, string modelKey)
        {
            if (token is not null)
                return lookup(token) ?? throw new InvalidDataException(
                    $"{tokenizerConfigSource}: '{key}' is '{token}', which the tokenizer does not know.");
            if (own is not null) return own;
            if (fromModel is int id && (id < 0 || id >= vocabularySize))
                throw new InvalidDataException(
                    $"Model config '{modelKey}' is {id}, outside the tokenizer's {vocabularySize} ids.");
            return fromModel;
        }

        return new SpecialTokenIds(
            Pick(tokenizerConfig.BosToken, "bos_token", fromTokenizerFile.Bos, modelConfig?.BosTokenId, "bos_token_id"),
            Pick(tokenizerConfig.EosToken, "eos_token", fromTokenizerFile.Eos, modelConfig?.EosTokenId, "eos_token_id"),
            Pick(tokenizerConfig.PadToken, "pad_token", fromTokenizerFile.Pad, modelConfig?.PadTokenId, "pad_token_id"));
    }
}
