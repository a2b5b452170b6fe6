using System.Text.Json.Nodes;
using Microsoft.ML.Orpo.Tokenization;

namespace Microsoft.ML.Orpo.ModelFiles.Gguf;

/// <summary>
/// The <c>tokenizer.*</c> keys of a GGUF file: a SentencePiece model as llama.cpp's <c>llama</c> tokenizer (pieces,
/// scores, types), a byte-level BPE <c>tokenizer.json</c> as <c>gpt2</c> (tokens, merges, types and the pre-tokenizer
/// name), the special ids with the library's BOS convention, and the chat template. Ids the tokenizer lacks up to the
/// model's vocabulary size are written as unused <c>[PADn]</c> tokens, as llama.cpp's converter does.
/// </summary>
internal sealed class GgufTokenizerMetadata
{
    // llama.cpp's token types (llama_token_type): SentencePiece numbers its piece types the same way.
    private const int Normal = 1, Control = 3, UserDefined = 4, Unused = 5, Byte = 6;

    // The pre-tokenizers llama.cpp recognises by name, as (Split regex or "ByteLevel(regex)" steps, allowed normalizers).
    private const string Llama3Regex = @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    private const string Qwen2Regex = @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    private static readonly (string Name, string Steps, string[] Normalizers)[] KnownPreTokenizers =
    [
        ("gpt-2", "ByteLevel(regex)", ["none"]),
        ("llama-bpe", $"Split({Llama3Regex}) ByteLevel", ["none"]),
        ("qwen2", $"Split({Qwen2Regex}) ByteLevel", ["none", "NFC"]),
    ];

    private readonly List<string> tokens = [];
    private readonly List<float> scores = [];
    private readonly List<int> types = [];
    private readonly List<string>? merges;
    private readonly string model;
    private readonly string pre;
    private readonly bool? addSpacePrefix;
    private readonly int? unknownId;
    private readonly OrpoTokenizer tokenizer;

    private GgufTokenizerMetadata(OrpoTokenizer tokenizer, int vocabSize)
    {
        this.tokenizer = tokenizer;
        if (tokenizer.Kind == OrpoTokenizer.SentencePieceKind)
        {
            var info = SentencePieceModelInfo.Parse(tokenizer.Files[TokenizerFiles.SentencePieceModel], TokenizerFiles.SentencePieceModel);
            foreach (var piece in info.Pieces.Take(vocabSize))
            {
                if (piece.Type is < Normal or > Byte)
                    throw GgufLlamaMetadata.Unsupported($"SentencePiece piece '{piece.Text}' has type {piece.Type}, which GGUF has no type for");
                Add(piece.Text, piece.Score, piece.Type);
            }
            (model, pre, unknownId, addSpacePrefix) = ("llama", "default", info.UnknownId, info.AddDummyPrefix);
        }
        else if (tokenizer.Kind == OrpoTokenizer.BpeKind)
        {
            byte[] json = tokenizer.Files[TokenizerFiles.TokenizerJson];
            var parsed = HfTokenizerJson.Parse(json, TokenizerFiles.TokenizerJson);
            pre = PreTokenizerName(JsonFile.ParseObject(json, TokenizerFiles.TokenizerJson));
            var byId = new Dictionary<int, (string Text, int Type)>();
            foreach (var (text, id) in parsed.Vocabulary) byId[id] = (text, Normal);
            foreach (var added in parsed.AddedTokens) byId[added.Id] = (added.Content, added.Special ? Control : UserDefined);
            for (int id = 0; id < Math.Min(vocabSize, byId.Keys.Max() + 1); id++)
            {
                if (byId.TryGetValue(id, out var token)) Add(token.Text, 0, token.Type);
                else Add($"[PAD{id}]", 0, Unused);
            }
            merges = [.. parsed.Merges];
            model = "gpt2";
            unknownId = parsed.UnknownToken is string unk ? parsed.Vocabulary[unk] : null;
        }
        else
        {
            throw GgufLlamaMetadata.Unsupported($"tokenizer kind '{tokenizer.Kind}' has no GGUF tokenizer model");
        }
        for (int id = tokens.Count; id < vocabSize; id++) Add($"[PAD{id}]", model == "llama" ? -10000f : 0, Unused);
        ChatTemplate = ReadChatTemplate(tokenizer);
    }

    /// <summary>Every token's text by id (<see cref="OllamaModelfile"/> names the stop tokens with them).</summary>
    public IReadOnlyList<string> Tokens => tokens;

    /// <summary>The <c>chat_template</c> of <c>tokenizer_config.json</c>, or null.</summary>
    public string? ChatTemplate { get; }

    /// <summary>Reads everything the file needs; throws <see cref="NotSupportedException"/> for what GGUF cannot express.</summary>
    public static GgufTokenizerMetadata Build(OrpoTokenizer tokenizer, int vocabSize) => new(tokenizer, vocabSize);

    public void AddTo(GgufWriter w)
    {
        w.AddString("tokenizer.ggml.model", model);
        w.AddString("tokenizer.ggml.pre", pre);
        w.AddStrings("tokenizer.ggml.tokens", tokens);
        if (model == "llama") w.AddFloats("tokenizer.ggml.scores", scores);
        w.AddInt32s("tokenizer.ggml.token_type", types);
        if (merges is not null) w.AddStrings("tokenizer.ggml.merges", merges);
        if (tokenizer.BosId is int bos) w.AddUInt32("tokenizer.ggml.bos_token_id", (uint)bos);
        if (tokenizer.EosId is int eos) w.AddUInt32("tokenizer.ggml.eos_token_id", (uint)eos);
        if (unknownId is int unk) w.AddUInt32("tokenizer.ggml.unknown_token_id", (uint)unk);
        if (tokenizer.PadId is int pad) w.AddUInt32("tokenizer.ggml.padding_token_id", (uint)pad);
        // The library starts every prompt with BOS when the tokenizer has one, and never appends EOS to a prompt.
        w.AddBool("tokenizer.ggml.add_bos_token", tokenizer.BosId is not null);
        w.AddBool("tokenizer.ggml.add_eos_token", false);
        if (addSpacePrefix is bool space) w.AddBool("tokenizer.ggml.add_space_prefix", space);
        if (ChatTemplate is not null) w.AddString("tokenizer.chat_template", ChatTemplate);
    }

    private void Add(string text, float score, int type)
    {
        tokens.Add(text);
        scores.Add(score);
        types.Add(type);
    }

    /// <summary>llama.cpp's name for the pre-tokenizer; only exact matches of pipelines it implements are accepted.</summary>
    private static string PreTokenizerName(JsonObject root)
    {
        var steps = new List<string>();
        void Walk(JsonNode? node)
        {
            if (node is not JsonObject o) { steps.Add(node?.ToJsonString() ?? "none"); return; }
            string? type = (string?)o["type"];
            if (type == "Sequence" && o["pretokenizers"] is JsonArray items) foreach (var item in items) Walk(item);
            else if (type == "ByteLevel" && !((bool?)o["add_prefix_space"] ?? false))
                steps.Add((bool?)o["use_regex"] ?? true ? "ByteLevel(regex)" : "ByteLevel");
            else if (type == "Split" && o["pattern"]?["Regex"] is JsonValue regex && ((string?)o["behavior"] ?? "Isolated") == "Isolated"
                     && !((bool?)o["invert"] ?? false))
                steps.Add($"Split({(string?)regex})");
            else steps.Add(o.ToJsonString());
        }
        Walk(root["pre_tokenizer"]);
        string signature = string.Join(" ", steps);
        string normalizer = root["normalizer"] is JsonObject n ? (string?)n["type"] ?? n.ToJsonString() : "none";
        foreach (var (name, known, normalizers) in KnownPreTokenizers)
            if (signature == known && normalizers.Contains(normalizer)) return name;
        throw GgufLlamaMetadata.Unsupported(
            $"the tokenizer.json pre-tokenizer ({signature}; normalizer {normalizer}) is not one llama.cpp implements by name " +
            "(supported: GPT-2, Llama-3 and Qwen2 byte-level BPE)");
    }

    private static string? ReadChatTemplate(OrpoTokenizer tokenizer)
    {
        if (!tokenizer.Files.TryGetValue(TokenizerFiles.TokenizerConfig, out byte[]? bytes)) return null;
        JsonNode? node = JsonFile.ParseObject(bytes, TokenizerFiles.TokenizerConfig)["chat_template"];
        if (node is JsonValue value && value.TryGetValue(out string? template)) return template;
        // Several named templates: llama.cpp's converter takes the default one.
        if (node is JsonArray named)
            return named.OfType<JsonObject>().Where(t => (string?)t["name"] == "default").Select(t => (string?)t["template"]).FirstOrDefault();
        return null;
    }
}
