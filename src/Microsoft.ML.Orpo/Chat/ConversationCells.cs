using System.Text.Json;
using Microsoft.ML.Orpo.Preferences;

namespace Microsoft.ML.Orpo.Chat;

/// <summary>
/// The conversational column shape read when a chat template is set: a text cell holding a JSON array of
/// <c>{"role", "content"}</c> messages is a conversation; any other text is one message (a prompt: the user's; a
/// response: the assistant's). A pair is the prompt's messages followed by each response's messages; the last message
/// of each is the response and everything before it must be the same in both (so chosen and rejected may be whole
/// conversations sharing a prefix, TRL's implicit-prompt form, with an empty prompt).
/// </summary>
internal static class ConversationCells
{
    /// <summary>The roles a conversational row may use.</summary>
    public static readonly IReadOnlyList<string> Roles = ["system", "user", "assistant"];

    /// <summary>The messages of a cell: a JSON message list, or the text as one message of <paramref name="plainRole"/>
    /// (none when the text is empty).</summary>
    /// <exception cref="FormatException">A message list with an unknown role, empty content or a malformed message.</exception>
    public static ChatTurn[] Messages(string cell, string plainRole, string column)
    {
        if (!LooksLikeMessageList(cell)) return cell.Length == 0 ? [] : [new ChatTurn(plainRole, cell)];
        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(cell);
        }
        catch (JsonException)
        {
            return [new ChatTurn(plainRole, cell)];
        }
        using (document)
        {
            var list = document.RootElement;
            // Text such as "[1, 2]" or "[note]" is a plain message; an array of objects is meant as messages.
            if (list.EnumerateArray().Any(item => item.ValueKind != JsonValueKind.Object)) return [new ChatTurn(plainRole, cell)];
            return list.EnumerateArray().Select((item, i) => Validated(Message(item, $"column '{column}', message {i}"), $"column '{column}', message {i}")).ToArray();
        }
    }

    /// <summary>Checks a message's role and content; the error starts with <paramref name="where"/> (which message).</summary>
    public static ChatTurn Validated(ChatTurn message, string where)
    {
        if (!Roles.Contains(message.Role))
            throw new FormatException($"{where}: unknown role \"{message.Role}\" (expected {string.Join(", ", Roles.Select(r => $"\"{r}\""))}).");
        if (message.Content.Length == 0)
            throw new FormatException($"{where} ({message.Role}): the content is empty.");
        return message;
    }

    /// <summary>A <c>{"role", "content"}</c> object as a message; the error starts with <paramref name="where"/>.</summary>
    public static ChatTurn Message(JsonElement item, string where)
    {
        if (item.ValueKind != JsonValueKind.Object)
            throw new FormatException($"{where} must be an object with \"role\" and \"content\", found {item.ValueKind}.");
        return new ChatTurn(StringField(item, "role", where), StringField(item, "content", where));
    }

    /// <summary>
    /// Splits a row into its shared context and the two assistant responses.
    /// </summary>
    /// <exception cref="FormatException">A response that is not an assistant turn, or conversations that differ before it.</exception>
    public static (IReadOnlyList<ChatTurn> Context, string Chosen, string Rejected) Pair(string prompt, string chosen, string rejected,
        (string Prompt, string Chosen, string Rejected) columns)
    {
        var context = Messages(prompt, "user", columns.Prompt);
        var (chosenContext, chosenText) = Response(context, Messages(chosen, "assistant", columns.Chosen), columns.Chosen);
        var (rejectedContext, rejectedText) = Response(context, Messages(rejected, "assistant", columns.Rejected), columns.Rejected);
        if (!chosenContext.SequenceEqual(rejectedContext))
            throw new FormatException($"the conversations of columns '{columns.Chosen}' and '{columns.Rejected}' differ before their last message; only the final assistant response may differ.");
        return (chosenContext, chosenText, rejectedText);
    }

    /// <summary>The messages of a prompt cell for generation: they must not end with an assistant turn.</summary>
    public static IReadOnlyList<ChatTurn> Prompt(string prompt, string column)
    {
        var messages = Messages(prompt, "user", column);
        if (messages.Length > 0 && messages[^1].Role == "assistant")
            throw new FormatException($"column '{column}': the conversation ends with an assistant message; a prompt must end with a user (or system) turn.");
        return messages;
    }

    private static (ChatTurn[] Context, string Response) Response(ChatTurn[] context, ChatTurn[] response, string column)
    {
        if (response.Length == 0) throw new FormatException($"column '{column}' has no response message.");
        if (response[^1].Role != "assistant")
            throw new FormatException($"column '{column}': the response (last message) has role \"{response[^1].Role}\"; it must be an \"assistant\" turn.");
        var all = context.Concat(response).ToArray();
        return (all[..^1], all[^1].Content);
    }

    private static bool LooksLikeMessageList(string cell)
    {
        var text = cell.AsSpan().Trim();
        return text.Length >= 2 && text[0] == '[' && text[^1] == ']';
    }

    private static string StringField(JsonElement message, string name, string where)
    {
        if (!message.TryGetProperty(name, out var value) || value.ValueKind != JsonValueKind.String)
            throw new FormatException($"{where} needs a string \"{name}\".");
        return value.GetString()!;
    }

    /// <summary>A message list as the JSON text a conversational cell holds.</summary>
    public static string ToJson(IEnumerable<ChatTurn> messages) =>
        JsonSerializer.Serialize(messages.Select(m => new Dictionary<string, string> { ["role"] = m.Role, ["content"] = m.Content }));
}
