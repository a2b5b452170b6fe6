namespace Microsoft.ML.Orpo.Tokenization;

/// <summary>The special-token strings a Hugging Face <c>tokenizer_config.json</c> declares, and whether special tokens
/// written in text are encoded as plain text (<c>split_special_tokens</c>).</summary>
internal sealed record TokenizerConfigJson(string? BosToken, string? EosToken, string? PadToken, bool SplitSpecialTokens = false)
{
    public static readonly TokenizerConfigJson Empty = new(null, null, null);

    public static TokenizerConfigJson Parse(byte[] bytes, string source)
    {
        var root = JsonFile.ParseObject(bytes, source);
        return new TokenizerConfigJson(
            JsonFile.TokenContent(root, "bos_token", source),
            JsonFile.TokenContent(root, "eos_token", source),
            JsonFile.TokenContent(root, "pad_token", source),
            JsonFile.OptionalBool(root, "split_special_tokens", false, source));
    }
}
