namespace Microsoft.ML.Orpo.Chat;

/// <summary>One chat message of the conversational shape (role and text), as the JSONL reader and the chat templates see it.</summary>
internal readonly record struct ChatTurn(string Role, string Content);
