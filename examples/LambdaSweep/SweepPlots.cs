using System.Globalization;
using Microsoft.ML.Orpo;
using ScottPlot;

namespace LambdaSweep;

/// <summary>PNG plots of a lambda sweep: the metric vs lambda, and chosen/rejected log-probabilities (the ORPO paper's Appendix E shape).</summary>
internal static class SweepPlots
{
    private const int Width = 900, Height = 560;

    /// <summary>The optimised validation metric against lambda (log axis).</summary>
    public static void MetricVsLambda(OrpoSweepResult result, string path)
    {
        var trials = Completed(result);
        var plot = new Plot();
        var line = plot.Add.Scatter(trials.Select(t => Math.Log10(t.Lambda)).ToArray(), trials.Select(t => t.Metric).ToArray());
        line.LegendText = $"validation {result.Metric}";
        line.MarkerSize = 9;
        line.LineWidth = 2;
        var best = plot.Add.Scatter(new[] { Math.Log10(result.BestTrial.Lambda) }, new[] { result.BestTrial.Metric });
        best.LegendText = $"best: lambda {result.BestTrial.Lambda.ToString("G3", CultureInfo.InvariantCulture)}";
        best.MarkerSize = 16;
        best.MarkerShape = MarkerShape.OpenCircle;
        LambdaAxis(plot, trials);
        plot.YLabel($"validation {result.Metric} ({(result.Maximize ? "higher" : "lower")} is better)");
        plot.Title($"ORPO lambda sweep on stories260K: {result.Metric} vs lambda");
        plot.ShowLegend(Alignment.LowerRight);
        plot.SavePng(path, Width, Height);
    }

    /// <summary>Validation mean per-token log-probabilities of the chosen and rejected responses against lambda.</summary>
    public static void LogProbabilitiesVsLambda(OrpoSweepResult result, string path)
    {
        var trials = Completed(result);
        var xs = trials.Select(t => Math.Log10(t.Lambda)).ToArray();
        var plot = new Plot();
        var chosen = plot.Add.Scatter(xs, trials.Select(t => t.Validation!.ChosenLogProbability).ToArray());
        chosen.LegendText = "chosen (Sue)";
        chosen.MarkerSize = 9;
        chosen.LineWidth = 2;
        var rejected = plot.Add.Scatter(xs, trials.Select(t => t.Validation!.RejectedLogProbability).ToArray());
        rejected.LegendText = "rejected (Lily)";
        rejected.MarkerSize = 9;
        rejected.LineWidth = 2;
        rejected.LinePattern = LinePattern.Dashed;
        LambdaAxis(plot, trials);
        plot.YLabel("validation mean log-probability per token");
        plot.Title("Chosen vs rejected log-probabilities after training, per lambda");
        plot.ShowLegend(Alignment.LowerLeft);
        plot.SavePng(path, Width, Height);
    }

    /// <summary>Training log-probabilities of chosen (solid) and rejected (dashed) per optimiser step, one colour per lambda.</summary>
    public static void LogProbabilitiesPerStep(OrpoSweepResult result, string path)
    {
        var plot = new Plot();
        var palette = new ScottPlot.Palettes.Category10();
        var trials = Completed(result);
        for (int i = 0; i < trials.Count; i++)
        {
            var t = trials[i];
            var steps = t.History.Select(h => (double)h.Step).ToArray();
            var color = palette.GetColor(i);
            string lambda = t.Lambda.ToString("G3", CultureInfo.InvariantCulture);
            var chosen = plot.Add.Scatter(steps, t.History.Select(h => h.ChosenLogProbability).ToArray(), color);
            chosen.LegendText = $"lambda {lambda} chosen";
            chosen.MarkerSize = 0;
            chosen.LineWidth = 2;
            var rejected = plot.Add.Scatter(steps, t.History.Select(h => h.RejectedLogProbability).ToArray(), color);
            rejected.LegendText = $"lambda {lambda} rejected";
            rejected.MarkerSize = 0;
            rejected.LineWidth = 2;
            rejected.LinePattern = LinePattern.Dashed;
        }
        plot.XLabel("optimiser step");
        plot.YLabel("training mean log-probability per token");
        plot.Title("Log-probabilities of chosen (solid) and rejected (dashed) responses during training");
        plot.ShowLegend(Edge.Right);
        plot.SavePng(path, Width + 200, Height + 100);
    }

    private static List<OrpoSweepTrial> Completed(OrpoSweepResult result) =>
        result.Trials.Where(t => t.Status == OrpoTrialStatus.Completed).OrderBy(t => t.Lambda).ToList();

    private static void LambdaAxis(Plot plot, IReadOnlyList<OrpoSweepTrial> trials)
    {
        plot.Axes.Bottom.SetTicks(trials.Select(t => Math.Log10(t.Lambda)).ToArray(),
            trials.Select(t => t.Lambda.ToString("G3", CultureInfo.InvariantCulture)).ToArray());
        plot.XLabel("lambda (log scale)");
    }
}
