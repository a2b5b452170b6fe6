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
    // Three sampling seeds, so the table shows how much of a difference is sampling noise.
    private static readonly int[] Seeds = [0, 100, 200];

    public static void Print(OrpoTransformer baseModel, OrpoTransformer tuned, IReadOnlyList<string> prompts)
    {
        var c = CultureInfo.InvariantCulture;
        using var miniLm = MiniLmEmbedder.Create();
        var defaults = new OrpoDiversityOptions();
        Console.WriteLine();
        Console.WriteLine($"Diversity (paper Table 4 shape): {prompts.Count} held-out prompts, {defaults.SamplesPerPrompt} samples each, " +
                          $"temperature {defaults.Generation.Temperature.ToString(c)}, {defaults.Generation.MaxNewTokens} new tokens, seeds {string.Join("/", Seeds)}");
        Console.WriteLine("  mean pairwise cosine (lower = more diverse), mean over the seeds [min, max]");
        Console.WriteLine($"  {"model",-8}{"embedding",-20}{"PID",-26}AID");
        string Cell(IReadOnlyList<double> v) =>
            $"{v.Average().ToString("F4", c)} [{v.Min().ToString("F4", c)}, {v.Max().ToString("F4", c)}]";
        foreach (var (name, model) in new[] { ("base", baseModel), ("ORPO", tuned) })
        {
            foreach (var (embedding, embed) in new[] { ("all-MiniLM-L6-v2", (Func<IReadOnlyList<string>, float[][]>)miniLm.Embed), ("own hidden states", model.HiddenStateEmbedding()) })
            {
                var runs = Seeds.Select(seed =>
                {
                    var options = new OrpoDiversityOptions { Embedding = embed };
                    options.Generation.Seed = seed;
                    return model.EvaluateDiversity(prompts, options);
                }).ToList();
                Console.WriteLine($"  {name,-8}{embedding,-20}{Cell(runs.Select(r => r.PerInputDiversity).ToList()),-26}{Cell(runs.Select(r => r.AcrossInputDiversity).ToList())}");
            }
        }
    }
}
