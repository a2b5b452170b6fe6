using Microsoft.ML.Orpo.Modeling;
using Microsoft.ML.Tokenizers;

namespace Microsoft.ML.Orpo.Tokenization;

/// <summary>Builds an <see cref="OrpoTokenizer"/> from its files: a SentencePiece model through Microsoft.ML.Tokenizers,
/// a <c>tokenizer.json</c> BPE through <see cref="HfTokenizer"/> (Microsoft.ML.Tokenizers has no loader for it).</summary>
internal static class TokenizerFactory
{
    public static OrpoTokenizer Create(
        IReadOnlyDictionary<string, byte[]> files, IReadOnlyDictionary<string, string> sources, LlamaConfig? config)
    {
        string Source(string name) => sources.TryGetValue(name, out string? s) ? s : name;
        var kept = new Dictionary<string, byte[]>(StringComparer.Ordinal);
        TokenizerConfigJson tokenizerConfig = TokenizerConfigJson.Empty;
        if (files.TryGetValue(TokenizerFiles.TokenizerConfig, out byte[]? configBytes))
        {
            tokenizerConfig = TokenizerConfigJson.Parse(configBytes, Source(TokenizerFiles.TokenizerConfig));
            kept[TokenizerFiles.TokenizerConfig] = configBytes;
        }

        if (files.TryGetValue(TokenizerFiles.SentencePieceModel, out byte[]? model))
        {
            kept[TokenizerFiles.SentencePieceModel] = model;
            return SentencePiece(model, Source(TokenizerFiles.SentencePieceModel), tokenizerConfig,
                Source(TokenizerFiles.TokenizerConfig), config, kept);
        }
        if (files.TryGetValue(TokenizerFiles.TokenizerJson, out byte[]? json))
        {
            kept[TokenizerFiles.TokenizerJson] = json;
            return HuggingFaceBpe(json, Source(TokenizerFiles.TokenizerJson), tokenizerConfig,
                Source(TokenizerFiles.TokenizerConfig), config, kept);
        }
        throw new ArgumentException(
            $"No tokenizer among the files [{string.Join(", ", files.Keys)}]: looked for {TokenizerFiles.LookedFor}.", nameof(files));
    }

    private static OrpoTokenizer SentencePiece(byte[] model, string source, TokenizerConfigJson tokenizerConfig,
        string tokenizerConfigSource, LlamaConfig? config, Dictionary<string, byte[]> files)
    {
        SentencePieceModelInfo info = SentencePieceModelInfo.Parse(model, source);
        SentencePieceTokenizer inner;
        try
        {
            using var stream = new MemoryStream(model, writable: false);
            inner = SentencePieceTokenizer.Create(stream, addBeginningOfSentence: false, addEndOfSentence: false);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            throw new InvalidDataException($"{source}: Microsoft.ML.Tokenizers could not read the SentencePiece model ({e.Message}).", e);
        }

        int vocabularySize = Math.Max(info.PieceCount, inner.Vocabulary.Values.DefaultIfEmpty(-1).Max() + 1);
        var ids = SpecialTokenIds.Resolve(tokenizerConfig, tokenizerConfigSource,
            new SpecialTokenIds(info.BosId, info.EosId, info.PadId), config, t => Lookup(inner, t), vocabularySize);
        // Decoding without special tokens drops BOS/EOS/unknown in the library; control pieces (e.g. <pad>) are dropped here.
        return new OrpoTokenizer(text => inner.EncodeToIds(text), OrpoTokenizer.SentencePieceKind, files, vocabularySize, ids, info.ControlIds,
            kept => inner.Decode(kept, considerSpecialTokens: false));
    }

    private static OrpoTokenizer HuggingFaceBpe(byte[] json, string source, TokenizerConfigJson tokenizerConfig,
        string tokenizerConfigSource, LlamaConfig? config, Dictionary<string, byte[]> files)
    {
        HfTokenizerJson parsed = HfTokenizerJson.Parse(json, source);
        var tokenizer = new HfTokenizer(parsed, tokenizerConfig.SplitSpecialTokens);
        var vocabulary = new Dictionary<string, int>(parsed.Vocabulary, StringComparer.Ordinal);
        foreach (var t in parsed.AddedTokens) vocabulary[t.Content] = t.Id;

        int vocabularySize = vocabulary.Values.Max() + 1;
        var ids = SpecialTokenIds.Resolve(tokenizerConfig, tokenizerConfigSource, new SpecialTokenIds(null, null, null), config,
            t => vocabulary.TryGetValue(t, out int id) ? id : null, vocabularySize);
        var control = parsed.AddedTokens.Where(t => t.Special).Select(t => t.Id);
        return new OrpoTokenizer(tokenizer.Encode, OrpoTokenizer.BpeKind, files, vocabularySize, ids, control, tokenizer.Decode);
    }

    private static int? Lookup(SentencePieceTokenizer tokenizer, string token) =>
        tokenizer.Vocabulary.TryGetValue(token, out int id) ? id : null;
}
