using System.Diagnostics;
using System.Text.Json.Nodes;
using Microsoft.ML.Orpo.Tokenization;

namespace Microsoft.ML.Orpo.Tests.Tokenization;

/// <summary>
/// The tokenizer.json pipeline against two independent implementations of Hugging Face's tokenizers: the Rust crate
/// itself (through Tokenizers.DotNet) on the fixed strings and thousands of generated ones, and the committed ids of
/// the JavaScript one (@huggingface/tokenizers, see TestData/tokenizers/make-fixture.mjs).
/// </summary>
[TestClass]
public sealed class HfTokenizerParityTests
{
    public static IEnumerable<object[]> Files =>
    [
        ["qwen3"], ["llama3"], ["mistral-7b-v0.1"], ["mistral-7b-v0.1-metaspace"], ["yi"],
    ];

    private static readonly Dictionary<string, OrpoTokenizer> Loaded = new();

    private static OrpoTokenizer Load(string name)
    {
        lock (Loaded)
        {
            if (!Loaded.TryGetValue(name, out var tokenizer))
                Loaded[name] = tokenizer = OrpoTokenizer.Load(RealTokenizers.Json(name));
            return tokenizer;
        }
    }

    private static string Show(IEnumerable<int> ids) => "[" + string.Join(", ", ids) + "]";

    private static void AssertMatches(string name, IEnumerable<string> texts, HfReference reference, int minimum) =>
        AssertMatches(name, Load(name), texts, reference, minimum);

    internal static void AssertMatches(string name, OrpoTokenizer tokenizer, IEnumerable<string> texts, HfReference reference, int minimum)
    {
        int count = 0;
        var failures = new List<string>();
        foreach (string text in texts)
        {
            count++;
            int[] expected = reference.Encode(text);
            int[] actual = tokenizer.Encode(text).ToArray();
            if (!expected.SequenceEqual(actual))
                failures.Add($"ids of {JsonValue.Create(text).ToJsonString()}: expected {Show(expected)}, got {Show(actual)}");
            else if (reference.Decode(expected) is var decoded && tokenizer.Decode(actual) != decoded)
                failures.Add($"decoding of {JsonValue.Create(text).ToJsonString()}: expected {JsonValue.Create(decoded).ToJsonString()}, got {JsonValue.Create(tokenizer.Decode(actual)).ToJsonString()}");
        }
        Assert.IsTrue(count >= minimum, $"only {count} strings");
        Assert.AreEqual(0, failures.Count, $"{name}: {failures.Count} of {count} differ from Hugging Face's tokenizers:\n" + string.Join("\n", failures.Take(15)));
    }

    [TestMethod]
    [DynamicData(nameof(Files))]
    public void FixedStringsMatchTheRustReference(string name)
    {
        using var reference = new HfReference(RealTokenizers.Json(name));
        AssertMatches(name, RealTokenizers.FixtureStrings, reference, 40);
    }

    [TestMethod]
    [DynamicData(nameof(Files))]
    public void GeneratedStringsMatchTheRustReference(string name)
    {
        using var reference = new HfReference(RealTokenizers.Json(name));
        AssertMatches(name, GeneratedText.Strings(seed: 20, count: 3000), reference, 3000);
    }

    [TestMethod]
    [DynamicData(nameof(Files))]
    public void FixtureIdsMatchTheJavaScriptReference(string name)
    {
        var fixture = JsonNode.Parse(File.ReadAllText(Path.Combine(RealTokenizers.Folder(name), "expected-ids.json")))!;
        var tokenizer = Load(name);
        using var rust = new HfReference(RealTokenizers.Json(name));
        var cases = fixture["cases"]!.AsArray();
        Assert.IsTrue(cases.Count >= 40);
        var failures = new List<string>();
        foreach (var c in cases)
        {
            string text = c!["text"]!.GetValue<string>();
            int[] expected = c["ids"]!.AsArray().Select(n => n!.GetValue<int>()).ToArray();
            int[] actual = tokenizer.Encode(text).ToArray();
            if (!expected.SequenceEqual(actual))
                failures.Add($"{JsonValue.Create(text).ToJsonString()}: expected {Show(expected)}, got {Show(actual)}");
            else if (tokenizer.Decode(actual) is var decoded && decoded != c["decoded"]!.GetValue<string>()
                // The JavaScript Metaspace decoder strips only the first "▁" of the first token, the Rust one all of them.
                && decoded != rust.Decode(actual))
                failures.Add($"decoding of {JsonValue.Create(text).ToJsonString()}: expected {c["decoded"]!.ToJsonString()}, got {JsonValue.Create(tokenizer.Decode(actual)).ToJsonString()}");
        }
        Assert.AreEqual(0, failures.Count, $"{name}: {failures.Count} of {cases.Count} differ from {fixture["generator"]}:\n" + string.Join("\n", failures.Take(15)));
    }

    [TestMethod]
    public void MetaspaceThatSplitsMatchesTheRustReference()
    {
        // Split at every "▁" (MergedWithNext), prepended to every piece: the older Metaspace layout. The JavaScript
        // reference does not implement that behaviour, so only the Rust one checks it.
        var root = JsonNode.Parse(File.ReadAllText(RealTokenizers.Json("mistral-7b-v0.1-metaspace")))!.AsObject();
        root["pre_tokenizer"] = new JsonObject { ["type"] = "Metaspace", ["replacement"] = "\u2581", ["prepend_scheme"] = "always", ["split"] = true };
        root["decoder"] = new JsonObject { ["type"] = "Metaspace", ["replacement"] = "\u2581", ["prepend_scheme"] = "always", ["split"] = true };
        string path = Path.Combine(Path.GetTempPath(), $"orpo-metaspace-{Guid.NewGuid():N}.json");
        File.WriteAllText(path, root.ToJsonString());
        try
        {
            using var reference = new HfReference(path);
            AssertMatches("metaspace split", OrpoTokenizer.Load(path),
                RealTokenizers.FixtureStrings.Concat(GeneratedText.Strings(seed: 21, count: 1000)), reference, 1000);
        }
        finally { File.Delete(path); }
    }

    [TestMethod]
    public void Llama3KeepsAPreTokenThatIsInTheVocabularyWhole()
    {
        // ignore_merges: "ệt" is a Llama-3 token; merging by rank would give [11655, 26298, 83].
        CollectionAssert.AreEqual(new[] { 34, 91163, 101798 }, Load("llama3").Encode("Cửa Việt").ToArray());
    }

    [TestMethod]
    [DynamicData(nameof(Files))]
    public void WhitespaceOnlyTextHasIdsAndRoundTrips(string name)
    {
        var tokenizer = Load(name);
        foreach (string text in new[] { "\n\n", " ", "\t", "  \n " })
        {
            var ids = tokenizer.Encode(text);
            Assert.IsTrue(ids.Count > 0, $"{name}: no ids for {JsonValue.Create(text).ToJsonString()}");
            // Byte-level files, and Yi (no dummy prefix, no Strip decoder), give whitespace back exactly.
            if (name is "qwen3" or "llama3" or "yi") Assert.AreEqual(text, tokenizer.Decode(ids));
        }
    }

    [TestMethod]
    [DynamicData(nameof(Files))]
    public void DecodesACharacterSplitAcrossTokens(string name)
    {
        var tokenizer = Load(name);
        string text = "a🤖b 𠀀 ខ្មែរ";
        var ids = tokenizer.Encode(text).ToList();
        using var reference = new HfReference(RealTokenizers.Json(name));
        Assert.AreEqual(reference.Decode(ids), tokenizer.Decode(ids));
        // A prefix ending inside a character decodes its complete part and a replacement character, as Hugging Face does.
        for (int n = 1; n < ids.Count; n++)
            Assert.AreEqual(reference.Decode(ids.Take(n)), tokenizer.Decode(ids.Take(n)), $"first {n} ids");
    }

    [TestMethod]
    [DynamicData(nameof(Files))]
    public void EncodesAFewKilobytesInMilliseconds(string name)
    {
        var tokenizer = Load(name);
        string text = string.Concat(GeneratedText.Strings(seed: 7, count: 400));
        tokenizer.Encode(text);
        var watch = Stopwatch.StartNew();
        var ids = tokenizer.Encode(text);
        watch.Stop();
        using var reference = new HfReference(RealTokenizers.Json(name));
        CollectionAssert.AreEqual(reference.Encode(text), ids.ToArray());
        // Generous for a shared 2-core machine; a quadratic merge takes seconds here.
        Assert.IsTrue(watch.ElapsedMilliseconds < 500, $"{text.Length} characters took {watch.ElapsedMilliseconds} ms");
    }
}
