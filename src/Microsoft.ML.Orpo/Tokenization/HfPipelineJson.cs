using System.Text;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;

namespace Microsoft.ML.Orpo.Tokenization;

/// <summary>
/// Translates the <c>normalizer</c> and <c>pre_tokenizer</c> sections of a Hugging Face <c>tokenizer.json</c>
/// into what <see cref="SplitPreTokenizer"/> and <see cref="TextNormalizer"/> run. Only the components used by
/// byte-level BPE models are accepted; anything else is refused rather than silently encoded differently.
/// </summary>
internal static class HfPipelineJson
{
    /// <summary>GPT-2's split pattern, used by a <c>ByteLevel</c> pre-tokenizer with <c>use_regex</c>.</summary>
    public const string Gpt2Pattern = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

    public static (IReadOnlyList<Regex> Splits, bool ByteLevel) ParsePreTokenizer(JsonNode? node, string source)
    {
        var splits = new List<Regex>();
        bool byteLevel = false;
        if (node is not null) Add(node, "pre_tokenizer");
        return (splits, byteLevel);

        void Add(JsonNode n, string where)
        {
            if (n is not JsonObject o)
                throw new InvalidDataException($"{source}: '{where}' must be an object, found {n.ToJsonString()}.");
            string type = JsonFile.OptionalString(o, "type", source)
                ?? throw new InvalidDataException($"{source}: '{where}' has no 'type'.");
            switch (type)
            {
                case "Sequence":
                    if (o["pretokenizers"] is not JsonArray items)
                        throw new InvalidDataException($"{source}: '{where}' of type Sequence has no 'pretokenizers' array.");
                    for (int i = 0; i < items.Count; i++)
                        Add(items[i] ?? throw new InvalidDataException($"{source}: '{where}.pretokenizers[{i}]' is null."),
                            $"{where}.pretokenizers[{i}]");
                    break;
                case "ByteLevel":
                    if (JsonFile.OptionalBool(o, "add_prefix_space", false, source))
                        throw new NotSupportedException($"{source}: '{where}' ByteLevel with add_prefix_space = true is not supported.");
                    byteLevel = true;
                    if (JsonFile.OptionalBool(o, "use_regex", true, source)) splits.Add(Compile(Gpt2Pattern, where));
                    break;
                case "Split":
                    splits.Add(ParseSplit(o, where));
                    break;
                case "Digits":
                    splits.Add(Compile(JsonFile.OptionalBool(o, "individual_digits", false, source) ? @"\p{N}" : @"\p{N}+", where));
                    break;
                default:
                    throw new NotSupportedException(
                        $"{source}: '{where}' type '{type}' is not supported (supported: ByteLevel, Split, Digits, Sequence).");
            }
        }

        Regex ParseSplit(JsonObject o, string where)
        {
            string behavior = JsonFile.OptionalString(o, "behavior", source) ?? "Isolated";
            if (behavior != "Isolated" || JsonFile.OptionalBool(o, "invert", false, source))
                throw new NotSupportedException(
                    $"{source}: '{where}' Split with behavior '{behavior}' (or invert) is not supported; only Isolated, not inverted.");
            if (o["pattern"] is not JsonObject pattern)
                throw new InvalidDataException($"{source}: '{where}' Split has no 'pattern' object.");
            if (JsonFile.OptionalString(pattern, "Regex", source) is { } regex) return Compile(regex, where);
            if (JsonFile.OptionalString(pattern, "String", source) is { } literal) return Compile(Regex.Escape(literal), where);
            throw new InvalidDataException($"{source}: '{where}.pattern' has neither 'Regex' nor 'String'.");
        }

        Regex Compile(string pattern, string where)
        {
            // A pattern from a file is untrusted: a match timeout bounds catastrophic backtracking.
            try { return new Regex(pattern, RegexOptions.Compiled | RegexOptions.CultureInvariant, SplitPreTokenizer.MatchTimeout); }
            catch (ArgumentException e)
            {
                throw new NotSupportedException($"{source}: '{where}' pattern is not a valid .NET regular expression ({e.Message}).", e);
            }
        }
    }

    public static IReadOnlyList<Func<string, string>> ParseNormalizer(JsonNode? node, string source)
    {
        var steps = new List<Func<string, string>>();
        if (node is not null) Add(node, "normalizer");
        return steps;

        void Add(JsonNode n, string where)
        {
            if (n is not JsonObject o)
                throw new InvalidDataException($"{source}: '{where}' must be an object, found {n.ToJsonString()}.");
            string type = JsonFile.OptionalString(o, "type", source)
                ?? throw new InvalidDataException($"{source}: '{where}' has no 'type'.");
            switch (type)
            {
                case "Sequence":
                    if (o["normalizers"] is not JsonArray items)
                        throw new InvalidDataException($"{source}: '{where}' of type Sequence has no 'normalizers' array.");
                    for (int i = 0; i < items.Count; i++)
                        Add(items[i] ?? throw new InvalidDataException($"{source}: '{where}.normalizers[{i}]' is null."),
                            $"{where}.normalizers[{i}]");
                    break;
                case "NFC": steps.Add(s => s.Normalize(NormalizationForm.FormC)); break;
                case "NFD": steps.Add(s => s.Normalize(NormalizationForm.FormD)); break;
                case "NFKC": steps.Add(s => s.Normalize(NormalizationForm.FormKC)); break;
                case "NFKD": steps.Add(s => s.Normalize(NormalizationForm.FormKD)); break;
                case "Lowercase": steps.Add(s => s.ToLowerInvariant()); break;
                default:
                    throw new NotSupportedException(
                        $"{source}: '{where}' type '{type}' is not supported (supported: NFC, NFD, NFKC, NFKD, Lowercase, Sequence).");
            }
        }
    }
}
