namespace Microsoft.ML.Orpo.Chat;

/// <summary>
/// Turns the conversational shape into prompt and response text: the response is the last message (it must be an
/// assistant turn); everything before it is the prompt.
/// </summary>
internal static class ConversationText
{
    /// <summary>
    /// The prompt text of the messages before the response. Only system and user turns: their contents joined by a
    /// blank line (a single user turn is its content as is). With an earlier assistant turn (multi-turn dialogue) every
    /// turn is written "role: content" so the speakers stay distinguishable.
    /// </summary>
    public static string Prompt(IReadOnlyList<ChatTurn> context)
    {
        bool multiTurn = context.Any(m => m.Role == "assistant");
        return string.Join("\n\n", context.Select(m => multiTurn ? $"{m.Role}: {m.Content}" : m.Content));
    }

    /// <summary>Splits one full conversation into its context and final assistant response.</summary>
    public static (IReadOnlyList<ChatTurn> Context, string Response) Split(IReadOnlyList<ChatTurn> conversation, string field)
    {
        if (conversation.Count == 0) throw new FormatException($"\"{field}\" has no messages.");
        var last = conversation[^1];
        if (last.Role != "assistant")
            throw new FormatException($"the last message of \"{field}\" has role \"{last.Role}\"; the response must be an \"assistant\" message.");
        return (conversation.Take(conversation.Count - 1).ToArray(), last.Content);
    }
}
