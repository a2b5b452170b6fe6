using Microsoft.ML.Orpo;
using ScottPlot;

namespace Quickstart;

/// <summary>
/// Draws the training history as a 2 x 2 grid of line charts (PNG) with ScottPlot: per-step training metrics as
/// lines, held-out metrics as dots (step 0 is the base model, the others are the validation passes).
/// </summary>
internal static class TrainingCurves
{
    public static void Save(string path, IReadOnlyList<OrpoStepMetrics> history, double lambda, OrpoPreferenceMetrics baseline)
    {
        double[] steps = history.Select(m => (double)m.Step).ToArray();
        var evaluated = history.Where(m => m.Validation is not null).Select(m => (Step: (double)m.Step, Metrics: m.Validation!))
            .Prepend((Step: 0.0, Metrics: baseline)).ToArray();
        double[] evalSteps = evaluated.Select(e => e.Step).ToArray();

        var multiplot = new Multiplot();
        multiplot.AddPlots(4);
        multiplot.Layout = new ScottPlot.MultiplotLayouts.Grid(rows: 2, columns: 2);

        var losses = multiplot.GetPlot(0);
        Line(losses, steps, history.Select(m => m.Loss), "loss", Colors.Black);
        Line(losses, steps, history.Select(m => m.NllLoss), "nll_loss", Colors.Blue);
        Line(losses, steps, history.Select(m => m.OddsRatioLoss), "odds_ratio_loss", Colors.OrangeRed);
        Dots(losses, evalSteps, evaluated.Select(e => e.Metrics.Loss), "held-out loss", Colors.Gray);
        Decorate(losses, $"Loss = NLL + {lambda:G3} x odds-ratio loss", "loss");

        var rewards = multiplot.GetPlot(1);
        Line(rewards, steps, history.Select(m => m.RewardsChosen), "rewards/chosen", Colors.Green);
        Line(rewards, steps, history.Select(m => m.RewardsRejected), "rewards/rejected", Colors.Red);
        Dots(rewards, evalSteps, evaluated.Select(e => e.Metrics.RewardsChosen), "held-out chosen", Colors.DarkGreen);
        Dots(rewards, evalSteps, evaluated.Select(e => e.Metrics.RewardsRejected), "held-out rejected", Colors.DarkRed);
        Decorate(rewards, "Rewards (lambda x mean token log-prob)", "reward");

        var accuracy = multiplot.GetPlot(2);
        Line(accuracy, steps, history.Select(m => m.RewardsAccuracy), "rewards/accuracies (train batch)", Colors.Purple);
        Dots(accuracy, evalSteps, evaluated.Select(e => e.Metrics.RewardsAccuracy), "held-out", Colors.Black);
        accuracy.Axes.SetLimitsY(-0.05, 1.05);
        Decorate(accuracy, "Rewards accuracy", "fraction of pairs");

        var margins = multiplot.GetPlot(3);
        Line(margins, steps, history.Select(m => m.RewardsMargin), "rewards/margins (train batch)", Colors.Teal);
        Dots(margins, evalSteps, evaluated.Select(e => e.Metrics.RewardsMargin), "held-out", Colors.Black);
        Decorate(margins, "Reward margin (chosen - rejected)", "margin");

        multiplot.SavePng(path, 1400, 1000);
    }

    private static void Line(Plot plot, double[] xs, IEnumerable<double> ys, string label, Color color)
    {
        var line = plot.Add.Scatter(xs, ys.ToArray(), color);
        line.LegendText = label;
        line.MarkerSize = 3;
        line.LineWidth = 2;
    }

    private static void Dots(Plot plot, double[] xs, IEnumerable<double> ys, string label, Color color)
    {
        if (xs.Length == 0) return;
        var dots = plot.Add.Scatter(xs, ys.ToArray(), color);
        dots.LegendText = label;
        dots.MarkerSize = 9;
        dots.LineWidth = xs.Length > 1 ? 1 : 0;
        dots.LinePattern = LinePattern.Dashed;
    }

    private static void Decorate(Plot plot, string title, string yLabel)
    {
        plot.Title(title);
        plot.XLabel("optimiser step");
        plot.YLabel(yLabel);
        plot.ShowLegend(Edge.Bottom);
    }
}
