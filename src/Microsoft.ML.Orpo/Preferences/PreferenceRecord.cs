namespace Microsoft.ML.Orpo.Preferences;

/// <summary>One preference pair as text, the row type of the data view <c>LoadPreferenceJsonl</c> returns.</summary>
internal sealed class PreferenceRecord
{
    public string Prompt { get; set; } = "";
    public string Chosen { get; set; } = "";
    public string Rejected { get; set; } = "";
}
