using System.Text.Json.Nodes;
using Microsoft.ML.Orpo.Tests.Infrastructure;
using Microsoft.ML.Orpo.Tokenization;

namespace Microsoft.ML.Orpo.Tests.Tokenization;

/// <summary>
/// Each documented normalizer, pre-tokenizer, split behaviour and added-token option, in files no sample ships
/// (Qwen3's vocabulary with the component swapped in), against Hugging Face's Rust tokenizers.
/// </summary>
[TestClass]
public sealed class HfComponentParityTests
{
    private const string ByteLevelOnly = """{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false}""";

    public static IEnumerable<object[]> Variants =>
    [
        ["gpt2 byte level with prefix space", "pre_tokenizer", """{"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true}"""],
        ["nfkc lowercase digits punctuation", "normalizer", """{"type": "Sequence", "normalizers": [{"type": "NFKC"}, {"type": "Lowercase"}]}""",
            "pre_tokenizer", """{"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": true}, {"type": "Punctuation", "behavior": "Isolated"}, {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": true}]}"""],
        ["nfd strip accents strip whitespace split", "normalizer", """{"type": "Sequence", "normalizers": [{"type": "NFD"}, {"type": "StripAccents"}, {"type": "Strip", "strip_left": true, "strip_right": true}]}""",
            "pre_tokenizer", $$"""{"type": "Sequence", "pretokenizers": [{"type": "WhitespaceSplit"}, {{ByteLevelOnly}}]}"""],
        ["whitespace", "pre_tokenizer", $$"""{"type": "Sequence", "pretokenizers": [{"type": "Whitespace"}, {{ByteLevelOnly}}]}"""],
        ["split behaviours", "pre_tokenizer", $$"""{"type": "Sequence", "pretokenizers": [ {"type": "Split", "pattern": {"String": " "}, "behavior": "MergedWithPrevious", "invert": false}, {"type": "Split", "pattern": {"Regex": "\\p{N}+"}, "behavior": "MergedWithNext", "invert": false}, {"type": "Split", "pattern": {"Regex": "\\s"}, "behavior": "Contiguous", "invert": false}, {"type": "Split", "pattern": {"Regex": "[aeiou]"}, "behavior": "Removed", "invert": false}, {"type": "Split", "pattern": {"Regex": "\\p{L}+"}, "behavior": "Isolated", "invert": true}, {{ByteLevelOnly}}]}"""],
        ["digits contiguous punctuation contiguous char delimiter", "pre_tokenizer", $$"""{"type": "Sequence", "pretokenizers": [ {"type": "Digits", "individual_digits": false}, {"type": "Punctuation", "behavior": "Contiguous"}, {"type": "CharDelimiterSplit", "delimiter": "e"}, {{ByteLevelOnly}}]}"""],
        ["replace regex and prepend", "normalizer", """{"type": "Sequence", "normalizers": [{"type": "Replace", "pattern": {"Regex": "\\s+"}, "content": " "}, {"type": "Prepend", "prepend": "> "}]}"""],
        ["byte level normalizer", "normalizer", """{"type": "ByteLevel"}""", "pre_tokenizer", """{"type": "Split", "pattern": {"Regex": "Ġ"}, "behavior": "MergedWithNext", "invert": false}"""],
    ];

    private static string Write(JsonObject root)
    {
        string path = Path.Combine(Path.GetTempPath(), $"orpo-variant-{Guid.NewGuid():N}.json");
        File.WriteAllText(path, root.ToJsonString());
        return path;
    }

    private static void AssertMatchesReference(JsonObject root, string what, IEnumerable<string> texts)
    {
        string path = Write(root);
        try
        {
            using var reference = new HfReference(path);
            HfTokenizerParityTests.AssertMatches(what, OrpoTokenizer.Load(path), texts, reference, 600);
        }
        finally { File.Delete(path); }
    }

    private static JsonObject Qwen3() => JsonNode.Parse(File.ReadAllText(RealTokenizers.Json("qwen3")))!.AsObject();

    private static IEnumerable<string> Texts(int seed) => RealTokenizers.FixtureStrings.Concat(GeneratedText.Strings(seed, 600));

    [TestMethod]
    [DynamicData(nameof(Variants))]
    public void ComponentMatchesTheRustReference(string what, string section, string component, string? section2 = null, string? component2 = null)
    {
        JsonObject root = Qwen3();
        root[section] = JsonNode.Parse(component);
        if (section2 is not null) root[section2] = JsonNode.Parse(component2!);
        AssertMatchesReference(root, what, Texts(seed: what.Length));
    }

    [TestMethod]
    public void AddedTokenOptionsMatchTheRustReference()
    {
        JsonObject root = Qwen3();
        foreach (var token in root["added_tokens"]!.AsArray().Select(t => t!.AsObject()))
        {
            string content = token["content"]!.GetValue<string>();
            if (content == "<|im_start|>") token["lstrip"] = true;
            if (content == "<|im_end|>") token["rstrip"] = true;
            if (content == "<think>") token["single_word"] = true;
            if (content == "</think>") { token["normalized"] = true; token["special"] = false; }
        }
        // A normalized, non-special added token that NFC changes: written decomposed, matched composed. Hugging Face
        // numbers an added token that is not in the vocabulary after the last one, whatever id the file gives.
        root["added_tokens"]!.AsArray().Add(new JsonObject
        {
            ["id"] = 151669, ["content"] = "cafe\u0301", ["single_word"] = false, ["lstrip"] = false, ["rstrip"] = false,
            ["normalized"] = true, ["special"] = false,
        });
        var extra = new[] { " <|im_start|>x", "a  <|im_start|>  b<|im_end|>  c", "x<think>y", "x <think> y", "<think>", "_<think>", "é</think>", "café cafe\u0301 cafécafé" };
        AssertMatchesReference(root, "added token options", extra.Concat(Texts(seed: 5)));
    }

    [TestMethod]
    public void SplitSpecialTokensEncodesSpecialTokensAsText()
    {
        string folder = TestAssets.NewTempDirectory();
        File.Copy(RealTokenizers.Json("qwen3"), Path.Combine(folder, "tokenizer.json"));
        File.WriteAllText(Path.Combine(folder, "tokenizer_config.json"), """{"split_special_tokens": true}""");
        var split = OrpoTokenizer.Load(folder);

        // The reference for text: the same file with its special added tokens spelled so that no text matches them.
        JsonObject root = Qwen3();
        foreach (var t in root["added_tokens"]!.AsArray().Where(t => t!["special"]!.GetValue<bool>()))
            t!["content"] = "\u0001\u0002" + t["content"]!.GetValue<string>();
        string path = Write(root);
        try
        {
            using var reference = new HfReference(path);
            foreach (string text in new[] { "<|im_start|>user\nhi<|im_end|>", "a<|endoftext|>b<think>c</think>" })
                CollectionAssert.AreEqual(reference.Encode(text), split.Encode(text).ToArray(), text);
            // Non-special added tokens are still matched.
            Assert.AreEqual(151667, split.Encode("<think>")[0]);
        }
        finally { File.Delete(path); }
    }
}
