using Microsoft.ML;
using System.Globalization;
using Microsoft.ML.Orpo;

namespace Quickstart;

/// <summary>The held-out metrics and greedy generations of one model (the base model, or the fine-tuned one).</summary>
internal sealed record ModelSnapshot(OrpoPreferenceMetrics HeldOut, IReadOnlyList<string> Generations)
{
    public static readonly GenerationOptions Greedy = new() { MaxNewTokens = 24, Temperature = 0 };

    public static ModelSnapshot Take(OrpoTransformer model, IDataView heldOut, IReadOnlyList<string> prompts) =>
        new(model.Evaluate(heldOut), model.Generate(prompts, Greedy));
}

/// <summary>Prints the before/after table: held-out preference metrics, then greedy generations side by side.</summary>
internal static class BeforeAfterReport
{
    public static void Print(ModelSnapshot before, ModelSnapshot after, IReadOnlyList<string> prompts)
    {
        var c = CultureInfo.InvariantCulture;
        Console.WriteLine();
        Console.WriteLine($"Held-out preference metrics ({after.HeldOut.Pairs} pairs never seen in training)");
        Console.WriteLine($"  {"metric",-34}{"before",10}{"after",10}");
        void Row(string name, Func<OrpoPreferenceMetrics, double> value, string format) =>
            Console.WriteLine($"  {name,-34}{value(before.HeldOut).ToString(format, c),10}{value(after.HeldOut).ToString(format, c),10}");
        Row("rewards/accuracies", m => m.RewardsAccuracy, "F2");
        Row("rewards/margins", m => m.RewardsMargin, "+0.0000;-0.0000");
        Row("rewards/chosen", m => m.RewardsChosen, "F4");
        Row("rewards/rejected", m => m.RewardsRejected, "F4");
        Row("chosen NLL (nll_loss)", m => m.NllLoss, "F4");
        Row("odds_ratio_loss", m => m.OddsRatioLoss, "F4");
        Row("loss", m => m.Loss, "F4");

        Console.WriteLine();
        Console.WriteLine($"Greedy generations ({ModelSnapshot.Greedy.MaxNewTokens} new tokens, temperature 0)");
        for (int i = 0; i < prompts.Count; i++)
        {
            Console.WriteLine($"  prompt: {prompts[i]}");
            Console.WriteLine($"    before: {OneLine(before.Generations[i])}");
            Console.WriteLine($"    after:  {OneLine(after.Generations[i])}");
        }
    }

    private static string OneLine(string text) => text.ReplaceLineEndings(" / ").Trim();
}
