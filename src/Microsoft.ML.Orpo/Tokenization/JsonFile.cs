using System.Text.Json;
using System.Text.Json.Nodes;

namespace Microsoft.ML.Orpo.Tokenization;

/// <summary>Reads tokenizer JSON files, turning every shape problem into an <see cref="InvalidDataException"/> naming the file.</summary>
internal static class JsonFile
{
    public static JsonObject ParseObject(byte[] bytes, string source)
    {
        // JsonNode validates string contents and duplicate keys lazily (as InvalidOperation/Argument exceptions deep in
        // the readers); check both here so every malformed file is one InvalidDataException naming it.
        if (!System.Text.Unicode.Utf8.IsValid(bytes))
            throw new InvalidDataException($"{source}: the file is not valid UTF-8.");
        try
        {
            return JsonNode.Parse(bytes, documentOptions: new JsonDocumentOptions { MaxDepth = 64, AllowDuplicateProperties = false }) as JsonObject
                ?? throw new InvalidDataException($"{source}: the top level is not a JSON object.");
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{source}: not valid JSON ({e.Message}).", e);
        }
    }

    public static string? OptionalString(JsonObject parent, string key, string source)
    {
        JsonNode? node = parent[key];
        if (node is null) return null;
        if (node is JsonValue v && v.TryGetValue(out string? s)) return s;
        throw new InvalidDataException($"{source}: '{key}' must be a string, found {node.ToJsonString()}.");
    }

    public static bool OptionalBool(JsonObject parent, string key, bool fallback, string source)
    {
        JsonNode? node = parent[key];
        if (node is null) return fallback;
        if (node is JsonValue v && v.TryGetValue(out bool b)) return b;
        throw new InvalidDataException($"{source}: '{key}' must be true or false, found {node.ToJsonString()}.");
    }

    public static int NonNegativeInt(JsonNode? node, string where, string source)
    {
        if (node is JsonValue v && v.TryGetValue(out int i) && i >= 0) return i;
        if (node is JsonValue d && d.TryGetValue(out double x) && x >= 0 && x <= int.MaxValue && x == Math.Floor(x)) return (int)x;
        throw new InvalidDataException(
            $"{source}: {where} must be a non-negative integer, found {node?.ToJsonString() ?? "nothing"}.");
    }

    /// <summary>A token given as a plain string or as an <c>AddedToken</c> object with a <c>content</c> field.</summary>
    public static string? TokenContent(JsonObject parent, string key, string source)
    {
        JsonNode? node = parent[key];
        return node switch
        {
            null => null,
            JsonObject o => OptionalString(o, "content", $"{source}: '{key}'")
                ?? throw new InvalidDataException($"{source}: '{key}' is an object without 'content'."),
            _ => OptionalString(parent, key, source),
        };
    }
}
