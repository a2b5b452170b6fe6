using System.Globalization;
using System.Text;

namespace Microsoft.ML.Orpo.Sweeping;

/// <summary>One flat row of the trial table, as ML.NET's <c>LoadFromEnumerable</c> needs (scalars and text only).</summary>
internal sealed class SweepTrialRow
{
    public int Trial { get; set; }
    public int Rung { get; set; }
    public double Lambda { get; set; }
    public double LearningRate { get; set; }
    public int Epochs { get; set; }
    public string Status { get; set; } = "";
    public double Metric { get; set; }
    public double Loss { get; set; }
    public double NllLoss { get; set; }
    public double OddsRatioLoss { get; set; }
    public double LogOddsRatio { get; set; }
    public double LogOddsChosen { get; set; }
    public double RewardsChosen { get; set; }
    public double RewardsRejected { get; set; }
    public double RewardsAccuracy { get; set; }
    public double RewardsMargin { get; set; }
    public double ChosenLogProbability { get; set; }
    public double RejectedLogProbability { get; set; }
    public double ChosenPerplexity { get; set; }
    public int TrainingSteps { get; set; }
    public double DurationSeconds { get; set; }
    public string Error { get; set; } = "";

    public static SweepTrialRow From(OrpoSweepTrial t)
    {
        var v = t.Validation;
        return new SweepTrialRow
        {
            Trial = t.Id, Rung = t.Rung, Lambda = t.Lambda, LearningRate = t.LearningRate, Epochs = t.Epochs, Status = t.Status.ToString(),
            Metric = t.Metric, Loss = v?.Loss ?? double.NaN, NllLoss = v?.NllLoss ?? double.NaN, OddsRatioLoss = v?.OddsRatioLoss ?? double.NaN,
            LogOddsRatio = v?.LogOddsRatio ?? double.NaN, LogOddsChosen = v?.LogOddsChosen ?? double.NaN,
            RewardsChosen = v?.RewardsChosen ?? double.NaN, RewardsRejected = v?.RewardsRejected ?? double.NaN,
            RewardsAccuracy = v?.RewardsAccuracy ?? double.NaN, RewardsMargin = v?.RewardsMargin ?? double.NaN,
            ChosenLogProbability = v?.ChosenLogProbability ?? double.NaN, RejectedLogProbability = v?.RejectedLogProbability ?? double.NaN,
            ChosenPerplexity = v?.ChosenPerplexity ?? double.NaN, TrainingSteps = t.TrainingSteps, DurationSeconds = t.Duration.TotalSeconds,
            Error = t.Error ?? "",
        };
    }
}

/// <summary>The trial table's CSV and console renderings.</summary>
internal static class SweepTrialTable
{
    /// <summary>The column names of the CSV and of <see cref="OrpoSweepResult.ToDataView"/>, in order.</summary>
    public static IReadOnlyList<string> Columns { get; } = typeof(SweepTrialRow).GetProperties().Select(p => p.Name).ToArray();

    internal static void WriteCsv(IEnumerable<OrpoSweepTrial> trials, TextWriter writer)
    {
        var properties = typeof(SweepTrialRow).GetProperties();
        writer.WriteLine(string.Join(",", properties.Select(p => p.Name)));
        foreach (var row in trials.Select(SweepTrialRow.From))
            writer.WriteLine(string.Join(",", properties.Select(p => Cell(p.GetValue(row)))));
    }

    internal static string Format(IReadOnlyList<OrpoSweepTrial> trials, OrpoSweepMetric metric, int bestId)
    {
        var text = new StringBuilder();
        text.AppendLine(string.Create(CultureInfo.InvariantCulture,
            $"{"trial",5} {"rung",4} {"lambda",8} {"lr",9} {"epochs",6} {"status",-9} {metric.ToString(),14} {"accuracy",8} {"logp(w)",8} {"logp(l)",8} {"nll",7} {"steps",5} {"seconds",7}"));
        foreach (var t in trials)
        {
            var v = t.Validation;
            double accuracy = v?.RewardsAccuracy ?? double.NaN, chosen = v?.ChosenLogProbability ?? double.NaN;
            double rejected = v?.RejectedLogProbability ?? double.NaN, nll = v?.NllLoss ?? double.NaN;
            text.Append(FormattableString.Invariant(
                $"{t.Id,5} {t.Rung,4} {t.Lambda,8:G4} {t.LearningRate,9:G3} {t.Epochs,6} {t.Status,-9} {t.Metric,14:F4} {accuracy,8:F3} {chosen,8:F3} {rejected,8:F3} {nll,7:F3} {t.TrainingSteps,5} {t.Duration.TotalSeconds,7:F2}"));
            text.AppendLine((t.Id == bestId ? "  <- best" : "") + (t.Error is null ? "" : "  " + t.Error));
        }
        return text.ToString();
    }

    private static string Cell(object? value) => value switch
    {
        null => "",
        double d => d.ToString("R", CultureInfo.InvariantCulture),
        string s when s.IndexOfAny(new[] { ',', '"', '\n', '\r' }) >= 0 => "\"" + s.Replace("\"", "\"\"", StringComparison.Ordinal) + "\"",
        IFormattable f => f.ToString(null, CultureInfo.InvariantCulture),
        _ => value.ToString() ?? "",
    };
}
