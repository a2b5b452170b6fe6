using System.Globalization;
using System.Text;

namespace Microsoft.ML.Orpo.ModelFiles.Gguf;

/// <summary>The Ollama <c>Modelfile</c> written beside a GGUF file: its prompt format, stop strings and sampling defaults.</summary>
internal static class OllamaModelfile
{
    public static string Create(string ggufFileName, string? promptTemplate, string? chatTemplate, IEnumerable<string> stops,
        GenerationOptions generation)
    {
        var s = new StringBuilder();
        s.Append("# Written by Microsoft.ML.Orpo. Use: ollama create <name> -f <this file>\n");
        s.Append("FROM ./").Append(ggufFileName).Append('\n');
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

    private static bool IsPlainText(string text) =>
        !text.Contains("{{", StringComparison.Ordinal) && !text.Contains("}}", StringComparison.Ordinal) && !text.Contains("\"\"\"", StringComparison.Ordinal);

    // A stop string Ollama's "..." value reads back unchanged.
    private static bool IsQuotable(string stop) => stop.Length > 0 && !stop.Any(c => c is '"' or '\\' || char.IsControl(c));

    private static string Number(double value) => value.ToString("R", CultureInfo.InvariantCulture);
}
