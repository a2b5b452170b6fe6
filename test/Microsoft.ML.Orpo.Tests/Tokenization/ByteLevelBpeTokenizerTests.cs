using System.Text.Json.Nodes;
using Microsoft.ML.Orpo.Modeling;
using Microsoft.ML.Orpo.Tokenization;
using static Microsoft.ML.Orpo.Tests.Tokenization.TinyBpe;

namespace Microsoft.ML.Orpo.Tests.Tokenization;

[TestClass]
public sealed class ByteLevelBpeTokenizerTests
{
    // Expected ids worked out by hand from TinyBpe: a byte's id is its value; GPT-2 splitting gives the pieces.
    public static IEnumerable<object[]> Cases =>
    [
        ["hello", new[] { Hello }],
        // "hello" | " world": "Ġworld" merges only "Ġ w"; o r l d stay single bytes.
        ["hello world", new[] { Hello, SpaceW, 'o', 'r', 'l', 'd' }],
        ["hello<|end|>", new[] { Hello, End }],
        ["<tool>hello", new[] { Tool, Hello }],
        // é is C3 A9, i.e. symbols "Ã" "©", merged to one token; "!" is a separate piece.
        ["hé!", new[] { 'h', EAcute, '!' }],
        ["a\nb", new int[] { 'a', '\n', 'b' }],
        ["🙂", new[] { 0xF0, 0x9F, 0x99, 0x82 }],
        ["", Array.Empty<int>()],
    ];

    [TestMethod]
    [DynamicData(nameof(Cases))]
    public void EncodesAndRoundTrips(string text, int[] expected)
    {
        var tokenizer = OrpoTokenizer.Load(WriteFolder(Json()));
        CollectionAssert.AreEqual(expected, tokenizer.Encode(text).ToArray(), $"ids of {text}");
        Assert.AreEqual(text.Replace("<|end|>", ""), tokenizer.Decode(expected));
    }

    [TestMethod]
    [DynamicData(nameof(Cases))]
    public void SplitSequenceMatchesPlainByteLevel(string text, int[] expected)
    {
        var sequence = new JsonObject
        {
            ["type"] = "Sequence",
            ["pretokenizers"] = new JsonArray(
                new JsonObject
                {
                    ["type"] = "Split",
                    ["pattern"] = new JsonObject { ["Regex"] = @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+" },
                    ["behavior"] = "Isolated",
                    ["invert"] = false,
                },
                new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["use_regex"] = false }),
        };
        var tokenizer = OrpoTokenizer.FromFiles(new Dictionary<string, byte[]> { ["tokenizer.json"] = Bytes(Json(sequence)) });
        CollectionAssert.AreEqual(expected, tokenizer.Encode(text).ToArray(), $"ids of {text}");
    }

    [TestMethod]
    public void IsolatedSplitKeepsTheTextBetweenMatches()
    {
        // Splitting "hello" around the literal "ll" gives "he" | "ll" | "o", which cannot merge into "hello".
        var split = new JsonObject
        {
            ["type"] = "Sequence",
            ["pretokenizers"] = new JsonArray(
                new JsonObject { ["type"] = "Split", ["pattern"] = new JsonObject { ["String"] = "ll" }, ["behavior"] = "Isolated" },
                new JsonObject { ["type"] = "ByteLevel", ["use_regex"] = false }),
        };
        var tokenizer = OrpoTokenizer.FromFiles(new Dictionary<string, byte[]> { ["tokenizer.json"] = Bytes(Json(split)) });
        CollectionAssert.AreEqual(new int[] { 256, 257, 'o' }, tokenizer.Encode("hello").ToArray());
    }

    [TestMethod]
    public void CatastrophicSplitPatternTimesOutWithAClearError()
    {
        // (a+)+$ backtracks exponentially on "aaa...a!": a hostile tokenizer.json must not hang encoding.
        var split = new JsonObject
        {
            ["type"] = "Sequence",
            ["pretokenizers"] = new JsonArray(
                new JsonObject { ["type"] = "Split", ["pattern"] = new JsonObject { ["Regex"] = "(a+)+$" }, ["behavior"] = "Isolated" },
                new JsonObject { ["type"] = "ByteLevel", ["use_regex"] = false }),
        };
        var tokenizer = OrpoTokenizer.FromFiles(new Dictionary<string, byte[]> { ["tokenizer.json"] = Bytes(Json(split)) });
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var e = Assert.ThrowsExactly<InvalidOperationException>(() => tokenizer.Encode(new string('a', 40) + "!"));
        StringAssert.Contains(e.Message, "catastrophic backtracking");
        Assert.IsLessThan(30.0, clock.Elapsed.TotalSeconds);
    }

    [TestMethod]
    public void NfcNormalizerComposesBeforeEncoding()
    {
        JsonObject json = Json();
        const string decomposed = "e\u0301"; // e + COMBINING ACUTE ACCENT (CC 81)
        var plain = OrpoTokenizer.FromFiles(new Dictionary<string, byte[]> { ["tokenizer.json"] = Bytes(json) });
        CollectionAssert.AreEqual(new int[] { 'e', 0xCC, 0x81 }, plain.Encode(decomposed).ToArray());
        json["normalizer"] = new JsonObject { ["type"] = "Sequence", ["normalizers"] = new JsonArray(new JsonObject { ["type"] = "NFC" }) };
        var nfc = OrpoTokenizer.FromFiles(new Dictionary<string, byte[]> { ["tokenizer.json"] = Bytes(json) });
        CollectionAssert.AreEqual(new[] { EAcute }, nfc.Encode(decomposed).ToArray());
    }

    [TestMethod]
    public void DescribesTheTokenizer()
    {
        var tokenizer = OrpoTokenizer.Load(Path.Combine(WriteFolder(Json()), "tokenizer.json"), new LlamaConfig { BosTokenId = 3 });
        Assert.AreEqual("bpe", tokenizer.Kind);
        Assert.AreEqual(264, tokenizer.VocabularySize);
        Assert.AreEqual<(int?, int?, int?)>((3, null, null), (tokenizer.BosId, tokenizer.EosId, tokenizer.PadId));
        CollectionAssert.AreEquivalent(new[] { "tokenizer.json" }, tokenizer.Files.Keys.ToArray());
    }

    [TestMethod]
    public void DecodeSkipsSpecialTokensButKeepsOtherAddedTokens()
    {
        var tokenizer = OrpoTokenizer.Load(WriteFolder(Json()));
        Assert.AreEqual("hello<tool>hello", tokenizer.Decode([End, Hello, Tool, Hello, End]));
        // A character split over two tokens (the bytes of é) decodes whole.
        Assert.AreEqual("é", tokenizer.Decode([0xC3, 0xA9]));
    }

    [TestMethod]
    public void TokenizerConfigNamesSpecialTokens()
    {
        string dir = WriteFolder(Json(), """{"bos_token": null, "eos_token": {"content": "<|end|>"}, "pad_token": "<|end|>"}""");
        var tokenizer = OrpoTokenizer.Load(dir, new LlamaConfig { BosTokenId = 1, EosTokenId = 2 });
        Assert.AreEqual<(int?, int?, int?)>((1, End, End), (tokenizer.BosId, tokenizer.EosId, tokenizer.PadId));
    }

    [TestMethod]
    public void FromFilesEncodesLikeLoad()
    {
        string dir = WriteFolder(Json(), """{"eos_token": "<|end|>"}""");
        var loaded = OrpoTokenizer.Load(dir);
        var rebuilt = OrpoTokenizer.FromFiles(loaded.Files);
        CollectionAssert.AreEquivalent(new[] { "tokenizer.json", "tokenizer_config.json" }, rebuilt.Files.Keys.ToArray());
        Assert.AreEqual(End, rebuilt.EosId);
        foreach (object[] row in Cases)
            CollectionAssert.AreEqual(loaded.Encode((string)row[0]).ToArray(), rebuilt.Encode((string)row[0]).ToArray());
    }

    internal static byte[] Bytes(JsonObject json) => System.Text.Encoding.UTF8.GetBytes(json.ToJsonString());
}
