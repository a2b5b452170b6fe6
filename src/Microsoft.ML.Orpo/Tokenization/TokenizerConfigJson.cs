using System.Text.Json.Nodes;

namespace Microsoft.ML.Orpo.Tokenization;

/// <summary>The special-token strings and chat templates a Hugging Face <c>tokenizer_config.json</c> declares, and
/// whether special tokens written in text are encoded as plain text (<c>split_special_tokens</c>).</summary>
internal sealed record TokenizerConfigJson(string? BosToken, string? EosToken, string? PadToken, bool SplitSpecialTokens = false)
{
    public static readonly TokenizerConfigJson Empty = new(null, null, null);

    /// <summary><c>chat_template</c> by name: a plain string is the one named "default"; a list of
    /// <c>{"name", "template"}</c> gives several.</summary>
    public IReadOnlyDictionary<string, string> ChatTemplates { get; init; } = new Dictionary<string, string>();

    public static TokenizerConfigJson Parse(byte[] bytes, string source)
    {
        var root = JsonFile.ParseObject(bytes, source);
        return new TokenizerConfigJson(
            JsonFile.TokenContent(root, "bos_token", source),
            JsonFile.TokenContent(root, "eos_token", source),
            JsonFile.TokenContent(root, "pad_token", source),
            JsonFile.OptionalBool(root, "split_special_tokens", false, source))
        {
            ChatTemplates = ChatTemplatesOf(root, source),
        };
    }

    private static Dictionary<string, string> ChatTemplatesOf(JsonObject root, string source)
    {
        var templates = new Dictionary<string, string>(StringComparer.Ordinal);
        switch (root["chat_template"])
        {
            case null: break;
            case JsonArray list:
                foreach (var item in list)
                {
                    if (item is not JsonObject named)
                        throw new InvalidDataException($"{source}: 'chat_template' list items must be objects with 'name' and 'template'.");
                    string name = JsonFile.OptionalString(named, "name", source)
                        ?? throw new InvalidDataException($"{source}: a 'chat_template' list item has no 'name'.");
                    templates[name] = JsonFile.OptionalString(named, "template", source)
                        ?? throw new InvalidDataException($"{source}: chat template '{name}' has no 'template'.");
                }
                break;
            default:
                templates["default"] = JsonFile.OptionalString(root, "chat_template", source)!;
                break;
        }
        return templates;
    }
}
