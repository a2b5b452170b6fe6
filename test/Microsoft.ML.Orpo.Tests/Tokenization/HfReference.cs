using System.Text.Json.Nodes;

namespace Microsoft.ML.Orpo.Tests.Tokenization;

/// <summary>
/// Hugging Face's own Rust tokenizers (through Tokenizers.DotNet), the reference the tokenizer.json tests compare
/// against. It always applies the file's post-processor, so it loads a copy of the file without one to give the raw
/// ids the library's Encode gives; its Decode skips special tokens, as the library's does.
/// </summary>
internal sealed class HfReference : IDisposable
{
    private readonly global::Tokenizers.DotNet.Tokenizer _inner;
    private readonly string _copy;

    public HfReference(string tokenizerJsonPath)
    {
        var root = JsonNode.Parse(File.ReadAllText(tokenizerJsonPath))!.AsObject();
        root["post_processor"] = null;
        _copy = Path.Combine(Path.GetTempPath(), $"orpo-hfref-{Guid.NewGuid():N}.json");
        File.WriteAllText(_copy, root.ToJsonString());
        _inner = new global::Tokenizers.DotNet.Tokenizer(_copy);
    }

    public int[] Encode(string text) => text.Length == 0 ? [] : _inner.Encode(text).Select(id => (int)id).ToArray();

    public string Decode(IEnumerable<int> ids) => _inner.Decode(ids.Select(id => (uint)id).ToArray());

    public void Dispose()
    {
        _inner.Dispose();
        File.Delete(_copy);
    }
}

/// <summary>The real tokenizer files under TestData/tokenizers (copied next to the tests).</summary>
internal static class RealTokenizers
{
    public static string Folder(string name) => Path.Combine(AppContext.BaseDirectory, "TestData", "tokenizers", name);

    public static string Json(string name) => Path.Combine(Folder(name), "tokenizer.json");

    public static IReadOnlyList<string> FixtureStrings { get; } =
        JsonNode.Parse(File.ReadAllText(Path.Combine(Folder(""), "fixture-strings.json")))!.AsArray()
            .Select(n => n!.GetValue<string>()).ToArray();
}
