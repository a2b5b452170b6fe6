using System.Globalization;
using System.Text;
using System.Text.Json.Nodes;

namespace Microsoft.ML.Orpo.Tokenization;

/// <summary>
/// Translates the <c>normalizer</c>, <c>pre_tokenizer</c> and <c>decoder</c> sections of a Hugging Face
/// <c>tokenizer.json</c> into functions with the semantics Hugging Face's tokenizers documents for each component.
/// A component or option value this library does not reproduce exactly is refused with a
/// <see cref="NotSupportedException"/> naming it, never approximated.
/// </summary>
internal static class HfPipelineJson
{
    /// <summary>GPT-2's split pattern, used by a <c>ByteLevel</c> pre-tokenizer with <c>use_regex</c>.</summary>
    public const string Gpt2Pattern = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

    private const string DefaultMetaspace = "\u2581";

    private static string Type(JsonObject o, string where, string source) =>
        JsonFile.OptionalString(o, "type", source) ?? throw new InvalidDataException($"{source}: '{where}' has no 'type'.");

    private static IEnumerable<(JsonObject Item, string Where)> Items(JsonObject o, string key, string where, string source)
    {
        if (o[key] is not JsonArray items)
            throw new InvalidDataException($"{source}: '{where}' of type Sequence has no '{key}' array.");
        for (int i = 0; i < items.Count; i++)
            yield return (items[i] as JsonObject
                ?? throw new InvalidDataException($"{source}: '{where}.{key}[{i}]' must be an object."), $"{where}.{key}[{i}]");
    }

    private static JsonObject Object(JsonNode n, string where, string source) => n as JsonObject
        ?? throw new InvalidDataException($"{source}: '{where}' must be an object, found {n.ToJsonString()}.");

    /// <summary>Calls <paramref name="handle"/> (object, type, where) on each component, flattening Sequences.</summary>
    private static void Visit(JsonNode? node, string where, string sequenceKey, string source, Action<JsonObject, string, string> handle)
    {
        if (node is null) return;
        JsonObject o = Object(node, where, source);
        string type = Type(o, where, source);
        if (type != "Sequence") handle(o, type, where);
        else foreach (var (item, at) in Items(o, sequenceKey, where, source)) Visit(item, at, sequenceKey, source, handle);
    }

    /// <summary>A <c>{"String": ...}</c> or <c>{"Regex": ...}</c> pattern as a matcher.</summary>
    private static Func<string, List<(int Start, int End)>> Pattern(JsonObject o, string where, string source)
    {
        if (o["pattern"] is not JsonObject pattern)
            throw new InvalidDataException($"{source}: '{where}' has no 'pattern' object.");
        if (JsonFile.OptionalString(pattern, "Regex", source) is { } regex) return new CodePointRegex(regex, where, source).Matches;
        if (JsonFile.OptionalString(pattern, "String", source) is { } literal) return text => Literal(text, literal);
        throw new InvalidDataException($"{source}: '{where}.pattern' has neither 'Regex' nor 'String'.");
    }

    private static List<(int, int)> Literal(string text, string literal)
    {
        var matches = new List<(int, int)>();
        if (literal.Length == 0) return matches;
        for (int at = text.IndexOf(literal, StringComparison.Ordinal); at >= 0; at = text.IndexOf(literal, at + literal.Length, StringComparison.Ordinal))
            matches.Add((at, at + literal.Length));
        return matches;
    }

    private static string ReplaceAll(string text, List<(int Start, int End)> matches, string content)
    {
        var sb = new StringBuilder();
        int at = 0;
        foreach (var (start, end) in matches)
        {
            sb.Append(text, at, start - at).Append(content);
            at = end;
        }
        return sb.Append(text, at, text.Length - at).ToString();
    }

    private static string Replacement(JsonObject o, string where, string source) =>
        JsonFile.OptionalString(o, "replacement", source) is { } r
            ? (r.EnumerateRunes().Count() == 1 ? r : throw new NotSupportedException($"{source}: '{where}' replacement '{r}' is not one character."))
            : DefaultMetaspace;

    private static string PrependScheme(JsonObject o, string where, string source)
    {
        string scheme = JsonFile.OptionalString(o, "prepend_scheme", source)
            ?? (JsonFile.OptionalBool(o, "add_prefix_space", true, source) ? "always" : "never");
        return scheme is "always" or "first" or "never" ? scheme
            : throw new NotSupportedException($"{source}: '{where}' Metaspace prepend_scheme '{scheme}' is not supported.");
    }

    private static string Normalize(string s, NormalizationForm form) => s.IsNormalized(form) ? s : s.Normalize(form);

    private static string RemoveMarks(string s)
    {
        var sb = new StringBuilder(s.Length);
        foreach (Rune r in s.EnumerateRunes())
            if (Rune.GetUnicodeCategory(r) is not (UnicodeCategory.NonSpacingMark or UnicodeCategory.SpacingCombiningMark or UnicodeCategory.EnclosingMark))
                sb.Append(r.ToString());
        return sb.ToString();
    }

    // Rust's to_lowercase is the full mapping; .NET's invariant one is simple, which differs only for U+0130.
    private static string Lowercase(string s) => s.Contains('\u0130')
        ? s.Replace("\u0130", "i\u0307", StringComparison.Ordinal).ToLowerInvariant() : s.ToLowerInvariant();

    private static string Strip(string s, bool left, bool right)
    {
        int start = 0, end = s.Length;
        while (left && start < end && HfSplit.IsWhitespace(char.ConvertToUtf32(s, start))) start += char.IsSurrogatePair(s, start) ? 2 : 1;
        while (right && end > start && HfSplit.IsWhitespace(char.IsLowSurrogate(s[end - 1]) && end >= 2 ? char.ConvertToUtf32(s[end - 2], s[end - 1]) : s[end - 1]))
            end -= char.IsLowSurrogate(s[end - 1]) && end >= 2 ? 2 : 1;
        return s[start..end];
    }

    public static IReadOnlyList<Func<string, string>> ParseNormalizer(JsonNode? node, string source)
    {
        var steps = new List<Func<string, string>>();
        Visit(node, "normalizer", "normalizers", source, Add);
        return steps;

        void Add(JsonObject o, string type, string where)
        {
            switch (type)
            {
                case "NFC": steps.Add(s => Normalize(s, NormalizationForm.FormC)); break;
                case "NFD": steps.Add(s => Normalize(s, NormalizationForm.FormD)); break;
                case "NFKC": steps.Add(s => Normalize(s, NormalizationForm.FormKC)); break;
                case "NFKD": steps.Add(s => Normalize(s, NormalizationForm.FormKD)); break;
                case "Lowercase": steps.Add(Lowercase); break;
                case "StripAccents": steps.Add(RemoveMarks); break;
                case "Strip":
                {
                    bool left = JsonFile.OptionalBool(o, "strip_left", true, source), right = JsonFile.OptionalBool(o, "strip_right", true, source);
                    steps.Add(s => Strip(s, left, right));
                    break;
                }
                case "Prepend":
                {
                    string prepend = JsonFile.OptionalString(o, "prepend", source)
                        ?? throw new InvalidDataException($"{source}: '{where}' Prepend has no 'prepend'.");
                    steps.Add(s => s.Length == 0 ? s : prepend + s);
                    break;
                }
                case "Replace":
                {
                    var pattern = Pattern(o, where, source);
                    string content = JsonFile.OptionalString(o, "content", source)
                        ?? throw new InvalidDataException($"{source}: '{where}' Replace has no 'content'.");
                    steps.Add(s => ReplaceAll(s, pattern(s), content));
                    break;
                }
                case "ByteLevel": steps.Add(ByteLevelAlphabet.Encode); break;
                default:
                    throw new NotSupportedException(
                        $"{source}: '{where}' normalizer type '{type}' is not supported (supported: NFC, NFD, NFKC, NFKD, Lowercase, StripAccents, Strip, Prepend, Replace, ByteLevel, Sequence).");
            }
        }
    }

    /// <summary>The pre-tokenizer as steps over the pieces; <c>ByteLevel</c> is whether one maps text to the byte alphabet.</summary>
    public static (IReadOnlyList<Func<List<Piece>, List<Piece>>> Steps, bool ByteLevel) ParsePreTokenizer(JsonNode? node, string source)
    {
        var steps = new List<Func<List<Piece>, List<Piece>>>();
        bool byteLevel = false;
        Visit(node, "pre_tokenizer", "pretokenizers", source, Add);
        return (steps, byteLevel);

        void SplitEach(Func<string, List<(int, int)>> matcher, SplitBehavior behavior, bool invert, Func<Piece, Piece>? before = null) =>
            steps.Add(pieces =>
            {
                var output = new List<Piece>(pieces.Count);
                foreach (Piece p in pieces)
                {
                    Piece piece = before is null ? p : before(p);
                    HfSplit.Split(piece, matcher(piece.Text), behavior, invert, output);
                }
                return output;
            });

        void Add(JsonObject o, string type, string where)
        {
            switch (type)
            {
                case "ByteLevel":
                {
                    bool prefix = JsonFile.OptionalBool(o, "add_prefix_space", false, source);
                    Func<Piece, Piece> addPrefix = p => prefix && p.Text.Length > 0 && p.Text[0] != ' ' ? p with { Text = " " + p.Text } : p;
                    if (JsonFile.OptionalBool(o, "use_regex", true, source))
                        SplitEach(new CodePointRegex(Gpt2Pattern, where, source).Matches, SplitBehavior.Isolated, false, addPrefix);
                    else if (prefix) steps.Add(pieces => pieces.Select(addPrefix).ToList());
                    steps.Add(pieces => pieces.Select(p => p with { Text = ByteLevelAlphabet.Encode(p.Text) }).ToList());
                    byteLevel = true;
                    break;
                }
                case "Split":
                    SplitEach(Pattern(o, where, source),
                        HfSplit.ParseBehavior(JsonFile.OptionalString(o, "behavior", source), where, source),
                        JsonFile.OptionalBool(o, "invert", false, source));
                    break;
                case "Digits":
                    if (JsonFile.OptionalBool(o, "individual_digits", false, source))
                        SplitEach(t => HfSplit.CharMatches(t, HfSplit.IsNumeric), SplitBehavior.Isolated, false);
                    else SplitEach(t => HfSplit.CharMatches(t, HfSplit.IsNumeric), SplitBehavior.Contiguous, false);
                    break;
                case "Punctuation":
                    SplitEach(t => HfSplit.CharMatches(t, HfSplit.IsPunctuation),
                        HfSplit.ParseBehavior(JsonFile.OptionalString(o, "behavior", source), where, source), false);
                    break;
                case "WhitespaceSplit":
                    SplitEach(t => HfSplit.CharMatches(t, HfSplit.IsWhitespace), SplitBehavior.Removed, false);
                    break;
                case "Whitespace":
                    SplitEach(new CodePointRegex(@"\w+|[^\w\s]+", where, source).Matches, SplitBehavior.Removed, true);
                    break;
                case "CharDelimiterSplit":
                {
                    string delimiter = JsonFile.OptionalString(o, "delimiter", source) is { Length: 1 } d ? d
                        : throw new NotSupportedException($"{source}: '{where}' CharDelimiterSplit needs a one-character 'delimiter'.");
                    SplitEach(t => Literal(t, delimiter), SplitBehavior.Removed, false);
                    break;
                }
                case "Metaspace":
                {
                    string replacement = Replacement(o, where, source);
                    string scheme = PrependScheme(o, where, source);
                    bool split = JsonFile.OptionalBool(o, "split", true, source);
                    Func<Piece, Piece> prepare = p =>
                    {
                        string text = p.Text.Replace(" ", replacement, StringComparison.Ordinal);
                        bool prepend = text.Length > 0 && !text.StartsWith(replacement, StringComparison.Ordinal)
                            && (scheme == "always" || (scheme == "first" && p.Start == 0));
                        return p with { Text = prepend ? replacement + text : text };
                    };
                    if (split) SplitEach(t => Literal(t, replacement), SplitBehavior.MergedWithNext, false, prepare);
                    else steps.Add(pieces => pieces.Select(prepare).ToList());
                    break;
                }
                default:
                    throw new NotSupportedException(
                        $"{source}: '{where}' pre-tokenizer type '{type}' is not supported (supported: ByteLevel, Split, Digits, Punctuation, Whitespace, WhitespaceSplit, CharDelimiterSplit, Metaspace, Sequence).");
            }
        }
    }

    /// <summary>The decoder as one function from tokens to text; null when the file has none (tokens are joined by spaces).</summary>
    public static Func<List<string>, List<string>>? ParseDecoder(JsonNode? node, string source)
    {
        if (node is null) return null;
        var steps = new List<Func<List<string>, List<string>>>();
        Visit(node, "decoder", "decoders", source, Add);
        return tokens => steps.Aggregate(tokens, (t, step) => step(t));

        void Add(JsonObject o, string type, string where)
        {
            switch (type)
            {
                case "ByteLevel": steps.Add(tokens => [ByteLevelAlphabet.Decode(tokens)]); break;
                case "ByteFallback": steps.Add(ByteFallback); break;
                case "Fuse": steps.Add(tokens => [string.Concat(tokens)]); break;
                case "Replace":
                {
                    var pattern = Pattern(o, where, source);
                    string content = JsonFile.OptionalString(o, "content", source)
                        ?? throw new InvalidDataException($"{source}: '{where}' Replace has no 'content'.");
                    steps.Add(tokens => tokens.Select(t => ReplaceAll(t, pattern(t), content)).ToList());
                    break;
                }
                case "Strip":
                {
                    string content = JsonFile.OptionalString(o, "content", source) is { Length: 1 } c ? c
                        : throw new NotSupportedException($"{source}: '{where}' Strip needs a one-character 'content'.");
                    int start = JsonFile.NonNegativeInt(o["start"] ?? 0, $"'{where}.start'", source);
                    int stop = JsonFile.NonNegativeInt(o["stop"] ?? 0, $"'{where}.stop'", source);
                    steps.Add(tokens => tokens.Select(t => StripChars(t, content[0], start, stop)).ToList());
                    break;
                }
                case "Metaspace":
                {
                    string replacement = Replacement(o, where, source);
                    bool dropFirst = PrependScheme(o, where, source) != "never";
                    steps.Add(tokens => tokens.Select((t, i) =>
                        t.Replace(replacement, i == 0 && dropFirst ? "" : " ", StringComparison.Ordinal)).ToList());
                    break;
                }
                case "BPEDecoder":
                {
                    string suffix = JsonFile.OptionalString(o, "suffix", source) ?? "</w>";
                    steps.Add(tokens => tokens.Select((t, i) =>
                        t.Replace(suffix, i == tokens.Count - 1 ? "" : " ", StringComparison.Ordinal)).ToList());
                    break;
                }
                default:
                    throw new NotSupportedException(
                        $"{source}: '{where}' decoder type '{type}' is not supported (supported: ByteLevel, ByteFallback, Fuse, Replace, Strip, Metaspace, BPEDecoder, Sequence).");
            }
        }
    }

    private static string StripChars(string token, char c, int start, int stop)
    {
        int from = 0, to = token.Length;
        while (from < start && from < to && token[from] == c) from++;
        while (token.Length - to < stop && to > from && token[to - 1] == c) to--;
        return token[from..to];
    }

    /// <summary>Runs of <c>&lt;0xXX&gt;</c> tokens become the text their bytes spell, or one U+FFFD per byte when invalid UTF-8.</summary>
    private static List<string> ByteFallback(List<string> tokens)
    {
        var output = new List<string>(tokens.Count);
        var bytes = new List<byte>();
        foreach (string token in tokens)
        {
            if (token.Length == 6 && token.StartsWith("<0x", StringComparison.Ordinal) && token[5] == '>'
                && byte.TryParse(token.AsSpan(3, 2), NumberStyles.HexNumber, CultureInfo.InvariantCulture, out byte b))
            {
                bytes.Add(b);
                continue;
            }
            Flush();
            output.Add(token);
        }
        Flush();
        return output;

        void Flush()
        {
            if (bytes.Count == 0) return;
            try { output.Add(new UTF8Encoding(false, throwOnInvalidBytes: true).GetString(bytes.ToArray())); }
            catch (DecoderFallbackException) { output.AddRange(Enumerable.Repeat("\uFFFD", bytes.Count)); }
            bytes.Clear();
        }
    }
}
