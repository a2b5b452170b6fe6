using System.Text.Json.Nodes;
using Microsoft.ML.Orpo.Modeling;
using Microsoft.ML.Orpo.Tests.Infrastructure;
using Microsoft.ML.Orpo.Tokenization;

namespace Microsoft.ML.Orpo.Tests.Tokenization;

[TestClass]
public sealed class TokenizerErrorTests
{
    private static JsonObject Model(JsonObject root) => root["model"]!.AsObject();

    private static string Broken(string problem)
    {
        JsonObject root = TinyBpe.Json();
        switch (problem)
        {
            case "not json": return "{\"model\": {\"vocab\": ";
            case "array at top level": return "[1, 2]";
            case "no model": root.Remove("model"); break;
            case "no vocab": Model(root).Remove("vocab"); break;
            case "vocab is a list": Model(root)["vocab"] = new JsonArray("a", "b"); break;
            case "empty vocab": Model(root)["vocab"] = new JsonObject(); break;
            case "negative id": Model(root)["vocab"]!["hello"] = -4; break;
            case "string id": Model(root)["vocab"]!["hello"] = "259"; break;
            case "duplicate id": Model(root)["vocab"]!["hello"] = 258; break;
            case "no merges": Model(root).Remove("merges"); break;
            case "merge of unknown token": Model(root)["merges"]!.AsArray().Add("h zz"); break;
            case "merge result unknown": Model(root)["merges"]!.AsArray().Add("o r"); break;
            case "merge with one part": Model(root)["merges"]!.AsArray().Add("hello"); break;
            case "merge is a number": Model(root)["merges"]!.AsArray().Add(7); break;
            case "merge pair of three": Model(root)["merges"]!.AsArray().Add(new JsonArray("h", "e", "l")); break;
            case "missing byte symbol": Model(root)["vocab"]!.AsObject().Remove(TinyBpe.Symbol(0)); break;
            case "added token without content": root["added_tokens"]!.AsArray().Add(new JsonObject { ["id"] = 300 }); break;
            case "added token without id": root["added_tokens"]!.AsArray().Add(new JsonObject { ["content"] = "<x>" }); break;
            case "added token id clash": root["added_tokens"]!.AsArray().Add(new JsonObject { ["id"] = 5, ["content"] = "<x>" }); break;
            case "added token vs vocab": root["added_tokens"]!.AsArray().Add(new JsonObject { ["id"] = 300, ["content"] = "hello" }); break;
            case "pre_tokenizer without type": root["pre_tokenizer"] = new JsonObject(); break;
            case "split without pattern": root["pre_tokenizer"] = new JsonObject { ["type"] = "Split" }; break;
            case "unknown unk_token": Model(root)["unk_token"] = "<unk>"; break;
            default: throw new ArgumentException(problem);
        }
        return root.ToJsonString();
    }

    [TestMethod]
    [DataRow("not json")]
    [DataRow("array at top level")]
    [DataRow("no model")]
    [DataRow("no vocab")]
    [DataRow("vocab is a list")]
    [DataRow("empty vocab")]
    [DataRow("negative id")]
    [DataRow("string id")]
    [DataRow("duplicate id")]
    [DataRow("no merges")]
    [DataRow("merge of unknown token")]
    [DataRow("merge result unknown")]
    [DataRow("merge with one part")]
    [DataRow("merge is a number")]
    [DataRow("merge pair of three")]
    [DataRow("missing byte symbol")]
    [DataRow("added token without content")]
    [DataRow("added token without id")]
    [DataRow("added token id clash")]
    [DataRow("added token vs vocab")]
    [DataRow("pre_tokenizer without type")]
    [DataRow("split without pattern")]
    [DataRow("unknown unk_token")]
    public void MalformedTokenizerJsonIsInvalidDataNamingTheFile(string problem)
    {
        string dir = TestAssets.NewTempDirectory();
        string path = Path.Combine(dir, "tokenizer.json");
        File.WriteAllText(path, Broken(problem));

        var e = Assert.ThrowsExactly<InvalidDataException>(() => OrpoTokenizer.Load(dir));
        StringAssert.Contains(e.Message, path, problem);

        var bytes = new Dictionary<string, byte[]> { ["tokenizer.json"] = File.ReadAllBytes(path) };
        e = Assert.ThrowsExactly<InvalidDataException>(() => OrpoTokenizer.FromFiles(bytes));
        StringAssert.StartsWith(e.Message, "tokenizer.json:", problem);
    }

    [TestMethod]
    public void MergeErrorNamesTheMergeAndToken()
    {
        var bytes = new Dictionary<string, byte[]> { ["tokenizer.json"] = System.Text.Encoding.UTF8.GetBytes(Broken("merge of unknown token")) };
        var e = Assert.ThrowsExactly<InvalidDataException>(() => OrpoTokenizer.FromFiles(bytes));
        StringAssert.Contains(e.Message, "merges[6]");
        StringAssert.Contains(e.Message, "'zz'");
    }

    // Each component or option value the library cannot reproduce exactly is refused, naming it.
    [TestMethod]
    [DataRow("model", """{"type": "Unigram", "vocab": [["a", 0.0]]}""", "'Unigram'")]
    [DataRow("model", """{"type": "WordPiece", "vocab": {"a": 0}}""", "'WordPiece'")]
    [DataRow("model", """{"type": "WordLevel", "vocab": {"a": 0}}""", "'WordLevel'")]
    [DataRow("pre_tokenizer", """{"type": "BertPreTokenizer"}""", "'BertPreTokenizer'")]
    [DataRow("pre_tokenizer", """{"type": "UnicodeScripts"}""", "'UnicodeScripts'")]
    [DataRow("pre_tokenizer", """{"type": "Sequence", "pretokenizers": [{"type": "FixedLength", "length": 5}]}""", "'FixedLength'")]
    [DataRow("pre_tokenizer", """{"type": "Split", "pattern": {"Regex": "\\s"}, "behavior": "Sideways"}""", "'Sideways'")]
    [DataRow("pre_tokenizer", """{"type": "Split", "pattern": {"Regex": "(?<"}, "behavior": "Isolated"}""", "pattern")]
    [DataRow("pre_tokenizer", """{"type": "Metaspace", "replacement": "▁", "prepend_scheme": "sometimes"}""", "'sometimes'")]
    [DataRow("normalizer", """{"type": "Precompiled", "precompiled_charsmap": "AAAA"}""", "'Precompiled'")]
    [DataRow("normalizer", """{"type": "BertNormalizer"}""", "'BertNormalizer'")]
    [DataRow("normalizer", """{"type": "Sequence", "normalizers": [{"type": "Nmt"}]}""", "'Nmt'")]
    [DataRow("decoder", """{"type": "WordPiece", "prefix": "##"}""", "'WordPiece'")]
    [DataRow("decoder", """{"type": "CTC"}""", "'CTC'")]
    public void UnsupportedComponentsAreRefusedNamingThem(string section, string component, string named)
    {
        JsonObject root = TinyBpe.Json();
        root[section] = JsonNode.Parse(component);
        var bytes = new Dictionary<string, byte[]> { ["tokenizer.json"] = ByteLevelBpeTokenizerTests.Bytes(root) };
        var e = Assert.ThrowsExactly<NotSupportedException>(() => OrpoTokenizer.FromFiles(bytes));
        StringAssert.StartsWith(e.Message, "tokenizer.json:");
        StringAssert.Contains(e.Message, named);
    }

    [TestMethod]
    public void BpeDropoutIsRefused()
    {
        JsonObject root = TinyBpe.Json();
        root["model"]!["dropout"] = 0.1;
        var bytes = new Dictionary<string, byte[]> { ["tokenizer.json"] = ByteLevelBpeTokenizerTests.Bytes(root) };
        StringAssert.Contains(Assert.ThrowsExactly<NotSupportedException>(() => OrpoTokenizer.FromFiles(bytes)).Message, "dropout");
    }

    [TestMethod]
    public void UnknownTokenInTokenizerConfigNamesThatFile()
    {
        string dir = TinyBpe.WriteFolder(TinyBpe.Json(), """{"eos_token": "<|eot|>"}""");
        var e = Assert.ThrowsExactly<InvalidDataException>(() => OrpoTokenizer.Load(dir));
        StringAssert.Contains(e.Message, Path.Combine(dir, "tokenizer_config.json"));
        StringAssert.Contains(e.Message, "<|eot|>");
    }

    [TestMethod]
    public void ModelConfigIdOutsideTheVocabularyIsRejected()
    {
        var e = Assert.ThrowsExactly<InvalidDataException>(
            () => OrpoTokenizer.Load(TestAssets.Stories260KTokenizer, new LlamaConfig { PadTokenId = 512 }));
        StringAssert.Contains(e.Message, "pad_token_id");
    }

    [TestMethod]
    [DataRow("not a protobuf at all, just text")]
    [DataRow("\n\u00ff")]
    public void GarbageSentencePieceModelIsInvalidDataNamingTheFile(string content)
    {
        string path = Path.Combine(TestAssets.NewTempDirectory(), "tokenizer.model");
        File.WriteAllText(path, content);
        var e = Assert.ThrowsExactly<InvalidDataException>(() => OrpoTokenizer.Load(path));
        StringAssert.Contains(e.Message, path);
    }

    [TestMethod]
    public void TruncatedSentencePieceModelIsInvalidData()
    {
        byte[] model = File.ReadAllBytes(TestAssets.Stories260KTokenizer);
        var files = new Dictionary<string, byte[]> { ["tokenizer.model"] = model[..(model.Length / 2)] };
        var e = Assert.ThrowsExactly<InvalidDataException>(() => OrpoTokenizer.FromFiles(files));
        StringAssert.StartsWith(e.Message, "tokenizer.model:");
    }

    [TestMethod]
    public void MissingFileNamesIt()
    {
        string path = Path.Combine(TestAssets.NewTempDirectory(), "tokenizer.model");
        var e = Assert.ThrowsExactly<FileNotFoundException>(() => OrpoTokenizer.Load(path));
        StringAssert.Contains(e.Message, path);
    }

    [TestMethod]
    public void MissingFolderNamesIt()
    {
        string path = Path.Combine(TestAssets.NewTempDirectory(), "no-such-model");
        var e = Assert.ThrowsExactly<DirectoryNotFoundException>(() => OrpoTokenizer.Load(path));
        StringAssert.Contains(e.Message, path);
    }

    [TestMethod]
    public void FolderWithoutTokenizerListsWhatWasLookedFor()
    {
        string dir = TestAssets.NewTempDirectory();
        File.WriteAllText(Path.Combine(dir, "config.json"), "{}");
        var e = Assert.ThrowsExactly<FileNotFoundException>(() => OrpoTokenizer.Load(dir));
        StringAssert.Contains(e.Message, dir);
        StringAssert.Contains(e.Message, "tokenizer.model");
        StringAssert.Contains(e.Message, "tokenizer.json");
    }

    [TestMethod]
    public void FromFilesWithoutTokenizerListsWhatWasLookedFor()
    {
        var e = Assert.ThrowsExactly<ArgumentException>(
            () => OrpoTokenizer.FromFiles(new Dictionary<string, byte[]> { ["config.json"] = [] }));
        StringAssert.Contains(e.Message, "tokenizer.model");
        StringAssert.Contains(e.Message, "tokenizer.json");
    }
}
