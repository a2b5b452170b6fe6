namespace Microsoft.ML.Orpo.Jsonl;

/// <summary>One preference pair as text, the row type of the data view <c>LoadPreferenceJsonl</c> returns.</summary>
internal sealed class PreferenceRecord
{
    public string Prompt { get; set; } = "";
    public string Chosen { get; set; } = "";
    public string Rejected { get; set; } = "";
}

/// <summary>One chat message of the conversational shape.</summary>
internal readonly record struct ChatMessage(string Role, string Content);
