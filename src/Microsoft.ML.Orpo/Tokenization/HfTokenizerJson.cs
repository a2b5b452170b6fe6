using System.Text.Json.Nodes;

namespace Microsoft.ML.Orpo.Tokenization;

/// <summary>One entry of <c>added_tokens</c>.</summary>
internal sealed record HfAddedToken(int Id, string Content, bool Special,
    bool SingleWord = false, bool LeftStrip = false, bool RightStrip = false, bool Normalized = false);

/// <summary>
/// A validated Hugging Face <c>tokenizer.json</c> describing a BPE model (byte-level or SentencePiece-style). Every structural problem
/// (malformed JSON, missing vocabulary, merges naming unknown tokens...) is an <see cref="InvalidDataException"/>
/// naming the file; features this library does not implement are a <see cref="NotSupportedException"/>.
/// </summary>
internal sealed class HfTokenizerJson
{
    public required Dictionary<string, int> Vocabulary { get; init; }
    public required IReadOnlyList<string> Merges { get; init; }
    public required IReadOnlyList<HfAddedToken> AddedTokens { get; init; }
    public required IReadOnlyList<Func<List<Piece>, List<Piece>>> PreTokenizer { get; init; }
    public required IReadOnlyList<Func<string, string>> Normalizers { get; init; }
    public Func<List<string>, List<string>>? Decoder { get; init; }
    public bool ByteFallback { get; init; }
    public bool IgnoreMerges { get; init; }
    public string? UnknownToken { get; init; }
    public string? ContinuingSubwordPrefix { get; init; }
    public string? EndOfWordSuffix { get; init; }
    public bool FuseUnknownTokens { get; init; }

    /// <summary>Ids must stay below the largest vocabulary a model config may declare (LlamaConfig's limit), so the
    /// vocabulary size (largest id + 1) can neither overflow nor describe an impossible model.</summary>
    public const int MaxId = 1 << 22;

    private static InvalidDataException TooLarge(int id, string what, string source) =>
        new($"{source}: {what} has id {id}; ids must be below {MaxId}.");

    public static HfTokenizerJson Parse(byte[] bytes, string source)
    {
        JsonObject root = JsonFile.ParseObject(bytes, source);
        if (root["model"] is not JsonObject model)
            throw new InvalidDataException($"{source}: 'model' is missing or not an object.");
        string type = JsonFile.OptionalString(model, "type", source) ?? (model["merges"] is not null ? "BPE" : "(none)");
        if (type != "BPE")
            throw new NotSupportedException($"{source}: model type '{type}' is not supported; only BPE tokenizer.json files are.");
        if (model["dropout"] is JsonValue dropout && dropout.TryGetValue(out double p) && p > 0)
            throw new NotSupportedException($"{source}: BPE dropout ({p}) is not supported.");

        var (preTokenizer, byteLevel) = HfPipelineJson.ParsePreTokenizer(root["pre_tokenizer"], source);
        Dictionary<string, int> vocab = ParseVocabulary(model, source);
        string[] missing = byteLevel ? ByteLevelAlphabet.Symbols.Where(s => !vocab.ContainsKey(s)).ToArray() : [];
        if (missing.Length > 0)
            throw new InvalidDataException(
                $"{source}: the byte-level vocabulary lacks {missing.Length} of the 256 byte symbols (first: '{missing[0]}'), so some text could not be encoded.");

        string? unknown = JsonFile.OptionalString(model, "unk_token", source);
        if (unknown is not null && !vocab.ContainsKey(unknown))
            throw new InvalidDataException($"{source}: 'model.unk_token' '{unknown}' is not in the vocabulary.");

        string? prefix = JsonFile.OptionalString(model, "continuing_subword_prefix", source);
        return new HfTokenizerJson
        {
            Vocabulary = vocab,
            Merges = ParseMerges(model, vocab, prefix?.Length ?? 0, source),
            AddedTokens = ParseAddedTokens(root, vocab, source),
            PreTokenizer = preTokenizer,
            Normalizers = HfPipelineJson.ParseNormalizer(root["normalizer"], source),
            Decoder = HfPipelineJson.ParseDecoder(root["decoder"], source),
            ByteFallback = JsonFile.OptionalBool(model, "byte_fallback", false, source),
            IgnoreMerges = JsonFile.OptionalBool(model, "ignore_merges", false, source),
            UnknownToken = unknown,
            ContinuingSubwordPrefix = prefix,
            EndOfWordSuffix = JsonFile.OptionalString(model, "end_of_word_suffix", source),
            FuseUnknownTokens = JsonFile.OptionalBool(model, "fuse_unk", false, source),
        };
    }

    private static Dictionary<string, int> ParseVocabulary(JsonObject model, string source)
    {
        if (model["vocab"] is not JsonObject vocabNode)
            throw new InvalidDataException($"{source}: 'model.vocab' is missing or not an object.");
        var vocab = new Dictionary<string, int>(vocabNode.Count, StringComparer.Ordinal);
        var owners = new Dictionary<int, string>(vocabNode.Count);
        foreach (var (token, idNode) in vocabNode)
        {
            int id = JsonFile.NonNegativeInt(idNode, $"the id of vocabulary token '{token}'", source);
            if (id >= MaxId) throw TooLarge(id, $"vocabulary token '{token}'", source);
            if (!owners.TryAdd(id, token))
                throw new InvalidDataException($"{source}: id {id} is given to both '{owners[id]}' and '{token}' in 'model.vocab'.");
            vocab[token] = id;
        }
        if (vocab.Count == 0) throw new InvalidDataException($"{source}: 'model.vocab' is empty.");
        return vocab;
    }

    private static List<string> ParseMerges(JsonObject model, Dictionary<string, int> vocab, int prefixLength, string source)
    {
        if (model["merges"] is not JsonArray mergesNode)
            throw new InvalidDataException($"{source}: 'model.merges' is missing or not an array.");
        var merges = new List<string>(mergesNode.Count);
        for (int i = 0; i < mergesNode.Count; i++)
        {
            JsonNode? node = mergesNode[i];
            string[] pair = node switch
            {
                JsonValue v when v.TryGetValue(out string? s) => s.Split(' '),
                JsonArray { Count: 2 } a when a[0] is JsonValue l && l.TryGetValue(out string? left)
                    && a[1] is JsonValue r && r.TryGetValue(out string? right) => [left, right],
                _ => [],
            };
            if (pair.Length != 2 || pair[0].Length == 0 || pair[1].Length == 0 || pair.Any(p => p.Contains(' ')))
                throw new InvalidDataException(
                    $"{source}: 'model.merges[{i}]' must be \"left right\" or [\"left\", \"right\"] with non-empty parts without spaces, found {node?.ToJsonString() ?? "null"}.");
            // The merged token drops the right part's continuing-subword prefix, as Hugging Face builds it.
            foreach (string token in pair.Append(pair[0] + pair[1][Math.Min(prefixLength, pair[1].Length)..]))
                if (!vocab.ContainsKey(token))
                    throw new InvalidDataException($"{source}: 'model.merges[{i}]' ({pair[0]} {pair[1]}) refers to '{token}', which is not in the vocabulary.");
            merges.Add(pair[0] + " " + pair[1]);
        }
        return merges;
    }

    private static List<HfAddedToken> ParseAddedTokens(JsonObject root, Dictionary<string, int> vocab, string source)
    {
        var added = new List<HfAddedToken>();
        JsonNode? node = root["added_tokens"];
        if (node is null) return added;
        if (node is not JsonArray items) throw new InvalidDataException($"{source}: 'added_tokens' must be an array.");
        var byId = vocab.ToDictionary(kv => kv.Value, kv => kv.Key);
        for (int i = 0; i < items.Count; i++)
        {
            if (items[i] is not JsonObject o)
                throw new InvalidDataException($"{source}: 'added_tokens[{i}]' must be an object.");
            int id = JsonFile.NonNegativeInt(o["id"], $"'added_tokens[{i}].id'", source);
            if (id >= MaxId) throw TooLarge(id, $"'added_tokens[{i}]'", source);
            string content = JsonFile.OptionalString(o, "content", source) is { Length: > 0 } c ? c
                : throw new InvalidDataException($"{source}: 'added_tokens[{i}]' has no non-empty 'content'.");
            if (vocab.TryGetValue(content, out int vocabId) && vocabId != id)
                throw new InvalidDataException($"{source}: added token '{content}' has id {id} but the vocabulary gives it id {vocabId}.");
            if (byId.TryGetValue(id, out string? other) && other != content)
                throw new InvalidDataException($"{source}: added token '{content}' reuses id {id} of '{other}'.");
            byId[id] = content;
            bool special = JsonFile.OptionalBool(o, "special", false, source);
            added.Add(new HfAddedToken(id, content, special,
                JsonFile.OptionalBool(o, "single_word", false, source), JsonFile.OptionalBool(o, "lstrip", false, source),
                JsonFile.OptionalBool(o, "rstrip", false, source), JsonFile.OptionalBool(o, "normalized", !special, source)));
        }
        return added;
    }
}
