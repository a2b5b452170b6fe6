using Microsoft.ML.Orpo.Modeling;
using Microsoft.ML.Orpo.Tests.Infrastructure;
using Microsoft.ML.Orpo.Tokenization;

namespace Microsoft.ML.Orpo.Tests.Tokenization;

[TestClass]
public sealed class SentencePieceTokenizerTests
{
    // Reference ids from Google's sentencepiece 0.1.97 (Debian bookworm package python3-sentencepiece 0.1.97-3+b1),
    // computed once with:
    //   /usr/bin/python3 -c "import sentencepiece as spm; sp=spm.SentencePieceProcessor(model_file='models/stories260K/tok512.model'); print(sp.encode(TEXT), sp.decode(sp.encode(TEXT)))"
    // The third column is sp.decode(sp.encode(TEXT)): the model's normalisation folds repeated spaces and strips
    // leading/trailing ones.
    public static IEnumerable<object[]> References =>
    [
        ["Once upon a time", new[] { 403, 407, 261, 378 }, "Once upon a time"],
        ["Hello   world", new[] { 346, 306, 414, 263, 304, 341 }, "Hello world"],
        ["a\nb", new[] { 261, 13, 430 }, "a\nb"],
        ["café", new[] { 280, 412, 431, 485 }, "café"],
        ["naïve", new[] { 297, 412, 198, 178, 360 }, "naïve"],
        ["🙂", new[] { 410, 243, 162, 156, 133 }, "🙂"],
        ["", Array.Empty<int>(), ""],
        [" leading", new[] { 278, 411, 380, 299 }, "leading"],
        ["trailing  ", new[] { 259, 420, 412, 290, 299 }, "trailing"],
        ["Lily's mom said, \"Lily, let's go!\"",
            new[] { 317, 439, 419, 357, 336, 432, 313, 438, 310, 432, 278, 316, 439, 419, 298, 414, 443, 436 },
            "Lily's mom said, \"Lily, let's go!\""],
    ];

    private static readonly Lazy<OrpoTokenizer> Stories = new(() => OrpoTokenizer.Load(TestAssets.Stories260KTokenizer));

    [TestMethod]
    [DynamicData(nameof(References))]
    public void EncodeMatchesSentencePieceLibrary(string text, int[] expected, string decoded)
    {
        CollectionAssert.AreEqual(expected, Stories.Value.Encode(text).ToArray(), $"ids of {text}");
        Assert.AreEqual(decoded, Stories.Value.Decode(expected));
    }

    [TestMethod]
    public void EmojiUsesByteFallbackPieces()
    {
        // U+1F642 is F0 9F 99 82 in UTF-8; byte piece <0xNN> has id 3 + NN.
        var ids = Stories.Value.Encode("🙂").Skip(1).ToArray();
        CollectionAssert.AreEqual(new[] { 3 + 0xF0, 3 + 0x9F, 3 + 0x99, 3 + 0x82 }, ids);
    }

    [TestMethod]
    public void DescribesTheModel()
    {
        var tokenizer = Stories.Value;
        Assert.AreEqual("sentencepiece", tokenizer.Kind);
        Assert.AreEqual(512, tokenizer.VocabularySize);
        Assert.AreEqual(1, tokenizer.BosId);
        Assert.AreEqual(2, tokenizer.EosId);
        Assert.IsNull(tokenizer.PadId);
        CollectionAssert.AreEquivalent(new[] { "tokenizer.model" }, tokenizer.Files.Keys.ToArray());
        CollectionAssert.AreEqual(File.ReadAllBytes(TestAssets.Stories260KTokenizer), tokenizer.Files["tokenizer.model"]);
    }

    [TestMethod]
    public void EncodeNeverAddsBosOrEos()
    {
        var ids = Stories.Value.Encode("Once upon a time");
        Assert.IsFalse(ids.Contains(1) || ids.Contains(2));
    }

    [TestMethod]
    public void DecodeSkipsBosEosAndPad()
    {
        var tokenizer = OrpoTokenizer.Load(TestAssets.Stories260KTokenizer, new LlamaConfig { PadTokenId = 0 });
        Assert.AreEqual(0, tokenizer.PadId);
        Assert.AreEqual("Once upon", tokenizer.Decode([1, 403, 407, 2, 0]));
    }

    [TestMethod]
    public void DecodeRejectsIdsOutsideTheVocabulary()
    {
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => Stories.Value.Decode([403, 512]));
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => Stories.Value.Decode([-1]));
    }

    [TestMethod]
    public void ModelOwnIdsWinOverModelConfig()
    {
        var tokenizer = OrpoTokenizer.Load(TestAssets.Stories260KTokenizer, new LlamaConfig { BosTokenId = 5, EosTokenId = 6 });
        Assert.AreEqual(1, tokenizer.BosId);
        Assert.AreEqual(2, tokenizer.EosId);
    }

    [TestMethod]
    public void TokenizerConfigJsonWinsOverTheModel()
    {
        string dir = TestAssets.NewTempDirectory();
        File.Copy(TestAssets.Stories260KTokenizer, Path.Combine(dir, "tokenizer.model"));
        File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"),
            """{"bos_token": {"content": "<s>", "__type": "AddedToken"}, "eos_token": "<s>", "pad_token": "</s>"}""");
        var tokenizer = OrpoTokenizer.Load(dir);
        Assert.AreEqual<(int?, int?, int?)>((1, 1, 2), (tokenizer.BosId, tokenizer.EosId, tokenizer.PadId));
        CollectionAssert.AreEquivalent(new[] { "tokenizer.model", "tokenizer_config.json" }, tokenizer.Files.Keys.ToArray());
        var rebuilt = OrpoTokenizer.FromFiles(tokenizer.Files);
        Assert.AreEqual<(int?, int?, int?)>((1, 1, 2), (rebuilt.BosId, rebuilt.EosId, rebuilt.PadId));
    }

    [TestMethod]
    public void HuggingFaceFolderAndFromFilesGiveTheSameIds()
    {
        var config = LlamaConfig.FromJsonFile(Path.Combine(TestAssets.Stories260KHf, "config.json"));
        var fromFolder = OrpoTokenizer.Load(TestAssets.Stories260KHf, config);
        var fromFiles = OrpoTokenizer.FromFiles(Stories.Value.Files, config);
        foreach (object[] row in References)
        {
            var text = (string)row[0];
            CollectionAssert.AreEqual(Stories.Value.Encode(text).ToArray(), fromFolder.Encode(text).ToArray(), text);
            CollectionAssert.AreEqual(Stories.Value.Encode(text).ToArray(), fromFiles.Encode(text).ToArray(), text);
        }
        Assert.AreEqual<(int?, int?, int)>((1, 2, 512), (fromFiles.BosId, fromFiles.EosId, fromFiles.VocabularySize));
    }
}
