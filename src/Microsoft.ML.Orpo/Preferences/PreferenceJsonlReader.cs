using System.IO.Compression;
using System.Text;
using System.Text.Json;
using Microsoft.ML.Orpo.Chat;

namespace Microsoft.ML.Orpo.Preferences;

/// <summary>
/// Reads preference pairs from JSON Lines (optionally gzip-compressed) in three shapes:
/// <c>{"prompt", "chosen", "rejected"}</c> strings; the conversational shape (<c>chosen</c>/<c>rejected</c> message
/// lists, optional <c>prompt</c> string or message list); and OpenAI's preference fine-tuning shape
/// (<c>input.messages</c>, <c>preferred_output</c>, <c>non_preferred_output</c>). Errors name the file and line.
/// </summary>
internal static class PreferenceJsonlReader
{
    private static readonly UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    /// <param name="path">The file.</param>
    /// <param name="keepMessages">Whether conversational rows keep their messages as JSON message lists (the shape a chat
    /// template renders) instead of being joined into text.</param>
    public static List<PreferenceRecord> Read(string path, bool keepMessages = false)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        if (!File.Exists(path)) throw new FileNotFoundException($"Preference file not found: {path}", path);
        var records = new List<PreferenceRecord>();
        using var stream = new BufferedStream(Open(path), 1 << 16);
        var line = new MemoryStream();
        long lineNumber = 0;
        while (ReadLine(stream, line, path, lineNumber + 1))
        {
            lineNumber++;
            string text;
            try
            {
                var bytes = line.GetBuffer().AsSpan(0, (int)line.Length);
                if (lineNumber == 1 && bytes.StartsWith("\uFEFF"u8)) bytes = bytes[3..];
                text = StrictUtf8.GetString(bytes);
            }
            catch (DecoderFallbackException e)
            {
                throw new InvalidDataException($"{path}, line {lineNumber}: invalid UTF-8.", e);
            }
            if (string.IsNullOrWhiteSpace(text)) continue;
            try
            {
                records.Add(Parse(text, keepMessages));
            }
            catch (Exception e) when (e is JsonException or FormatException or InvalidOperationException)
            {
                throw new InvalidDataException($"{path}, line {lineNumber}: {e.Message}", e);
            }
        }
        return records;
    }

    /// <summary>Longest accepted line.</summary>
    internal const int MaxLineBytes = 64 << 20;

    /// <summary>Reads the bytes up to the next '\n' (dropping a '\r' before it) into <paramref name="line"/>; false at the end.</summary>
    private static bool ReadLine(Stream stream, MemoryStream line, string path, long lineNumber)
    {
        line.SetLength(0);
        int b;
        try
        {
            while ((b = stream.ReadByte()) >= 0 && b != '\n')
            {
                // A file (or a gzip bomb) without line breaks must not grow one line until memory runs out.
                if (line.Length >= MaxLineBytes)
                    throw new InvalidDataException($"{path}, line {lineNumber}: the line is longer than {MaxLineBytes >> 20} MiB.");
                line.WriteByte((byte)b);
            }
        }
        catch (InvalidDataException e)
        {
            throw new InvalidDataException($"{path}, line {lineNumber}: {e.Message}", e);
        }
        if (b < 0 && line.Length == 0) return false;
        if (line.Length > 0 && line.GetBuffer()[line.Length - 1] == '\r') line.SetLength(line.Length - 1);
        return true;
    }

    /// <summary>Opens the file, decompressing it when it starts with the gzip magic bytes.</summary>
    private static Stream Open(string path)
    {
        var file = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
        Span<byte> magic = stackalloc byte[2];
        int read = file.ReadAtLeast(magic, 2, throwOnEndOfStream: false);
        file.Position = 0;
        return read == 2 && magic[0] == 0x1f && magic[1] == 0x8b ? new GZipStream(file, CompressionMode.Decompress) : file;
    }

    public static PreferenceRecord Parse(string line, bool keepMessages = false)
    {
        using var document = JsonDocument.Parse(line);
        var root = document.RootElement;
        if (root.ValueKind != JsonValueKind.Object)
            throw new FormatException($"expected a JSON object, found {root.ValueKind}.");

        JsonElement? prompt, chosen, rejected;
        string chosenName = "chosen", rejectedName = "rejected";
        if (root.TryGetProperty("preferred_output", out _) || root.TryGetProperty("non_preferred_output", out _))
        {
            var input = Required(root, "input");
            if (input.ValueKind != JsonValueKind.Object) throw new FormatException("\"input\" must be an object with \"messages\".");
            prompt = Required(input, "messages");
            (chosenName, rejectedName) = ("preferred_output", "non_preferred_output");
            chosen = Required(root, chosenName);
            rejected = Required(root, rejectedName);
        }
        else
        {
            prompt = root.TryGetProperty("prompt", out var p) && p.ValueKind != JsonValueKind.Null ? p : null;
            chosen = Required(root, chosenName);
            rejected = Required(root, rejectedName);
        }

        if (chosen.Value.ValueKind == JsonValueKind.String && rejected.Value.ValueKind == JsonValueKind.String)
        {
            if (prompt is null) throw new FormatException("missing \"prompt\" (required when \"chosen\" and \"rejected\" are strings).");
            return new PreferenceRecord { Prompt = PromptText(prompt.Value), Chosen = chosen.Value.GetString()!, Rejected = rejected.Value.GetString()! };
        }
        if (chosen.Value.ValueKind != JsonValueKind.Array || rejected.Value.ValueKind != JsonValueKind.Array)
            throw new FormatException($"\"{chosenName}\" and \"{rejectedName}\" must both be strings or both be message lists; found {chosen.Value.ValueKind} and {rejected.Value.ValueKind}.");

        var context = prompt is null ? Array.Empty<ChatTurn>() : PromptMessages(prompt.Value);
        var (chosenContext, chosenText) = ConversationText.Split(context.Concat(Messages(chosen.Value, chosenName)).ToArray(), chosenName);
        var (rejectedContext, rejectedText) = ConversationText.Split(context.Concat(Messages(rejected.Value, rejectedName)).ToArray(), rejectedName);
        if (!chosenContext.SequenceEqual(rejectedContext))
            throw new FormatException($"the \"{chosenName}\" and \"{rejectedName}\" conversations differ before their last message; only the final assistant response may differ.");
        if (!keepMessages) return new PreferenceRecord { Prompt = ConversationText.Prompt(chosenContext), Chosen = chosenText, Rejected = rejectedText };
        var kept = chosenContext.Append(new ChatTurn("assistant", chosenText)).Append(new ChatTurn("assistant", rejectedText)).ToArray();
        for (int i = 0; i < kept.Length; i++)
            ConversationCells.Validated(kept[i], i < kept.Length - 2 ? $"prompt message {i}" : i == kept.Length - 2 ? $"the \"{chosenName}\" response" : $"the \"{rejectedName}\" response");
        return new PreferenceRecord
        {
            Prompt = ConversationCells.ToJson(chosenContext),
            Chosen = ConversationCells.ToJson([new ChatTurn("assistant", chosenText)]),
            Rejected = ConversationCells.ToJson([new ChatTurn("assistant", rejectedText)]),
        };
    }

    private static JsonElement Required(JsonElement obj, string name)
    {
        if (!obj.TryGetProperty(name, out var value) || value.ValueKind == JsonValueKind.Null)
            throw new FormatException($"missing \"{name}\".");
        return value;
    }

    private static string PromptText(JsonElement prompt) => prompt.ValueKind switch
    {
        JsonValueKind.String => prompt.GetString()!,
        JsonValueKind.Array => ConversationText.Prompt(Messages(prompt, "prompt")),
        _ => throw new FormatException($"\"prompt\" must be a string or a message list, found {prompt.ValueKind}."),
    };

    private static ChatTurn[] PromptMessages(JsonElement prompt) => prompt.ValueKind switch
    {
        JsonValueKind.String => new[] { new ChatTurn("user", prompt.GetString()!) },
        JsonValueKind.Array => Messages(prompt, "prompt"),
        _ => throw new FormatException($"\"prompt\" must be a string or a message list, found {prompt.ValueKind}."),
    };

    private static ChatTurn[] Messages(JsonElement list, string field)
    {
        if (list.ValueKind != JsonValueKind.Array) throw new FormatException($"\"{field}\" must be a message list, found {list.ValueKind}.");
        return list.EnumerateArray().Select((item, i) => ConversationCells.Message(item, $"\"{field}\"[{i}]")).ToArray();
    }
}
