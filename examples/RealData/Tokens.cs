using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Orpo;
using Microsoft.ML.Orpo.Preferences;

namespace RealData;

/// <summary>Token statistics of a pair set and console helpers.</summary>
internal static class Tokens
{
    /// <summary>Prints how long the pairs are in the model's tokens, after the template, BOS/EOS and truncation.</summary>
    public static void Describe(string name, OrpoTransformer model, IDataView pairs)
    {
        var encoded = pairs.GetColumn<string>("Prompt").Zip(pairs.GetColumn<string>("Chosen"), pairs.GetColumn<string>("Rejected"))
            .Select(t => model.Encode(t.First, t.Second, t.Third)).ToList();
        double Mean(Func<EncodedPair, int> f) => encoded.Average(f);
        Console.WriteLine($"  {name} pairs after encoding: prompt {Mean(p => p.PromptIds.Count):F0}, chosen {Mean(p => p.ChosenIds.Count):F0}, " +
            $"rejected {Mean(p => p.RejectedIds.Count):F0} tokens on average");
    }

    /// <summary>The text on one line, cut to <paramref name="max"/> characters (keeping the end when <paramref name="tail"/>).</summary>
    public static string Short(string text, int max, bool tail = false)
    {
        string line = text.ReplaceLineEndings(" / ").Trim();
        if (line.Length <= max) return line;
        return tail ? "..." + line[^max..] : line[..max] + "...";
    }
}

/// <summary>One console line about every tenth of the run (plain lines, fine for logs).</summary>
internal sealed class LineProgress : IProgress<OrpoStepMetrics>
{
    public void Report(OrpoStepMetrics m)
    {
        if (m.Step == 1 || m.Step == m.TotalSteps || m.Step % Math.Max(1, m.TotalSteps / 10) == 0)
            Console.WriteLine($"  step {m.Step,3}/{m.TotalSteps} | loss {m.Loss:F3} | nll {m.NllLoss:F3} | acc {m.RewardsAccuracy:F2} | " +
                $"margin {m.RewardsMargin:+0.000;-0.000} | {m.TokensPerSecond:F0} tok/s | ETA {m.EstimatedTimeRemaining:m\\:ss}");
    }
}
