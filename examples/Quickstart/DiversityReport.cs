using System.Globalization;
using Microsoft.ML.Orpo;
using Microsoft.ML.Orpo.Embeddings;

namespace Quickstart;

/// <summary>
/// The ORPO paper's Table 4 shape: Per-Input and Across-Input Diversity of the base and the fine-tuned model on the
/// held-out prompts, with all-MiniLM-L6-v2 (as the paper, an external embedding model) and with each model's own
/// hidden states (the library's default embedding). Lower is more diverse.
/// </summary>
internal static class DiversityReport
{
    public static void Print(OrpoTransformer baseModel, OrpoTransformer tuned, IReadOnlyList<string> prompts)
    {
        var c = CultureInfo.InvariantCulture;
        using var miniLm = MiniLmEmbedder.Create();
        var defaults = new OrpoDiversityOptions();
        Console.WriteLine();
        Console.WriteLine($"Diversity (paper Table 4 shape): {prompts.Count} held-out prompts, {defaults.SamplesPerPrompt} samples each, " +
                          $"temperature {defaults.Generation.Temperature.ToString(c)}, {defaults.Generation.MaxNewTokens} new tokens; mean pairwise cosine, lower = more diverse");
        Console.WriteLine($"  {"model",-8}{"embedding",-24}{"PID",8}{"AID",8}");
        foreach (var (name, model) in new[] { ("base", baseModel), ("ORPO", tuned) })
        {
            var withMiniLm = model.EvaluateDiversity(prompts, new OrpoDiversityOptions().WithMiniLm(miniLm));
            var withHidden = model.EvaluateDiversity(prompts);
            Console.WriteLine($"  {name,-8}{"all-MiniLM-L6-v2",-24}{withMiniLm.PerInputDiversity.ToString("F4", c),8}{withMiniLm.AcrossInputDiversity.ToString("F4", c),8}");
            Console.WriteLine($"  {name,-8}{"own hidden states",-24}{withHidden.PerInputDiversity.ToString("F4", c),8}{withHidden.AcrossInputDiversity.ToString("F4", c),8}");
        }
    }
}
