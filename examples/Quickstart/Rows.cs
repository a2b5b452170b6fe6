using Microsoft.ML;

namespace Quickstart;

/// <summary>Small reads of a preference data view.</summary>
internal static class Rows
{
    private sealed class PromptRow
    {
        public string Prompt { get; set; } = "";
    }

    public static int Count(MLContext ml, IDataView data) => Prompts(ml, data).Count();

    public static IEnumerable<string> Prompts(MLContext ml, IDataView data) =>
        ml.Data.CreateEnumerable<PromptRow>(data, reuseRowObject: false).Select(r => r.Prompt);
}
