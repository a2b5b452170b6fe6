using System.Globalization;
using System.Text;

namespace Microsoft.ML.Orpo.ModelFiles.Gguf;

/// <summary>
/// The Ollama <c>Modelfile</c> written beside a GGUF file: its prompt format, stop strings and sampling defaults, and for
/// a LoRA adapter GGUF the base model it applies to (<c>FROM</c>) and the adapter (<c>ADAPTER</c>).
/// </summary>
internal static class OllamaModelfile
{
    /// <param name="from">The model GGUF, relative to the Modelfile's folder (or absolute).</param>
    /// <param name="promptTemplate">The library's prompt template (<c>{prompt}</c> placeholder), or null.</param>
    /// <param name="chatTemplate">The tokenizer's Jinja chat template, or null.</param>
    /// <param name="stops">Stop strings.</param>
    /// <param name="generation">The sampling defaults.</param>
    /// <param name="adapter">The LoRA adapter GGUF, relative to the Modelfile's folder, or null.</param>
    public static string Create(string from, string? promptTemplate, string? chatTemplate, IEnumerable<string> stops,
        GenerationOptions generation, string? adapter = null)
    {
        var s = new StringBuilder();
        s.Append("# Written by Microsoft.ML.Orpo. Use: ollama create <name> -f <this file>\n");
        s.Append("FROM ").Append(Relative(from)).Append('\n');
        if (adapter is not null) s.Append("ADAPTER ").Append(Relative(adapter)).Append('\n');
        // The library's "{prompt}" template maps to Go's {{ .Prompt }}; any text Go could read as an action is not translated.
        if (promptTemplate is not null && IsPlainText(promptTemplate.Replace("{prompt}", "", StringComparison.Ordinal)))
            s.Append("TEMPLATE \"\"\"").Append(promptTemplate.Replace("{prompt}", "{{ .Prompt }}", StringComparison.Ordinal)).Append("\"\"\"\n");
        else if (promptTemplate is null && chatTemplate is not null)
            s.Append("# TEMPLATE: none here; Ollama derives one from the GGUF's tokenizer.chat_template.\n");
        else
            s.Append("TEMPLATE \"\"\"{{ .Prompt }}\"\"\"\n");
        foreach (string stop in stops.Distinct(StringComparer.Ordinal).Where(IsQuotable))
            s.Append("PARAMETER stop \"").Append(stop).Append("\"\n");
        s.Append("PARAMETER temperature ").Append(Number(generation.Temperature)).Append('\n');
        if (generation.TopK > 0) s.Append("PARAMETER top_k ").Append(generation.TopK.ToString(CultureInfo.InvariantCulture)).Append('\n');
        s.Append("PARAMETER top_p ").Append(Number(generation.TopP)).Append('\n');
        s.Append("PARAMETER num_predict ").Append(generation.MaxNewTokens.ToString(CultureInfo.InvariantCulture)).Append('\n');
        if (generation.Temperature > 0) s.Append("PARAMETER seed ").Append(generation.Seed.ToString(CultureInfo.InvariantCulture)).Append('\n');
        return s.ToString();
    }

    private static string Relative(string path) =>
        Path.IsPathRooted(path) || path.StartsWith("./", StringComparison.Ordinal) || path.StartsWith("../", StringComparison.Ordinal) ? path : "./" + path;

    private static bool IsPlainText(string text) =>
        !text.Contains("{{", StringComparison.Ordinal) && !text.Contains("}}", StringComparison.Ordinal) && !text.Contains("\"\"\"", StringComparison.Ordinal);

    // A stop string Ollama's "..." value reads back unchanged.
    private static bool IsQuotable(string stop) => stop.Length > 0 && !stop.Any(c => c is '"' or '\\' || char.IsControl(c));

    private static string Number(double value) => value.ToString("R", CultureInfo.InvariantCulture);
}
