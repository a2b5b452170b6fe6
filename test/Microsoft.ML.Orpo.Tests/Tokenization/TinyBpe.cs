using System.Text.Json.Nodes;

namespace Microsoft.ML.Orpo.Tests.Tokenization;

/// <summary>
/// A hand-made byte-level BPE <c>tokenizer.json</c>: ids 0-255 are the 256 byte symbols (id = byte value),
/// then six merges and two added tokens.
/// </summary>
internal static class TinyBpe
{
    public const int Hello = 259, SpaceW = 260, EAcute = 261, End = 262, Tool = 263;

    /// <summary>GPT-2's byte-to-symbol table, written out from its definition (printable Latin-1 bytes stand for
    /// themselves; the others take U+0100, U+0101, ... in byte order).</summary>
    public static string Symbol(int b)
    {
        bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        if (printable) return ((char)b).ToString();
        int rank = Enumerable.Range(0, b).Count(x => !((x >= 0x21 && x <= 0x7E) || (x >= 0xA1 && x <= 0xAC) || (x >= 0xAE && x <= 0xFF)));
        return ((char)(0x100 + rank)).ToString();
    }

    public static JsonObject Json(JsonNode? preTokenizer = null)
    {
        var vocab = new JsonObject();
        for (int b = 0; b < 256; b++) vocab[Symbol(b)] = b;
        vocab["he"] = 256;
        vocab["ll"] = 257;
        vocab["hell"] = 258;
        vocab["hello"] = Hello;
        vocab["Ġw"] = SpaceW;
        vocab["Ã©"] = EAcute;
        return new JsonObject
        {
            ["version"] = "1.0",
            ["added_tokens"] = new JsonArray(
                new JsonObject { ["id"] = End, ["content"] = "<|end|>", ["special"] = true },
                new JsonObject { ["id"] = Tool, ["content"] = "<tool>", ["special"] = false }),
            ["normalizer"] = null,
            ["pre_tokenizer"] = preTokenizer ?? new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["use_regex"] = true },
            ["decoder"] = new JsonObject { ["type"] = "ByteLevel" },
            ["model"] = new JsonObject
            {
                ["type"] = "BPE",
                ["dropout"] = null,
                ["unk_token"] = null,
                ["vocab"] = vocab,
                // Both merge spellings Hugging Face writes: "a b" strings and ["a", "b"] pairs.
                ["merges"] = new JsonArray("h e", "l l", new JsonArray("he", "ll"), "hell o", "Ġ w", new JsonArray("Ã", "©")),
            },
        };
    }

    /// <summary>Writes the files into a new folder and returns it.</summary>
    public static string WriteFolder(JsonObject tokenizerJson, string? tokenizerConfigJson = null)
    {
        string dir = Infrastructure.TestAssets.NewTempDirectory("orpo-bpe");
        File.WriteAllText(Path.Combine(dir, "tokenizer.json"), tokenizerJson.ToJsonString());
        if (tokenizerConfigJson is not null) File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), tokenizerConfigJson);
        return dir;
    }
}
