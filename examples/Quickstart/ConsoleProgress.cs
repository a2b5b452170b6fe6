using System.Globalization;
using Microsoft.ML.Orpo;

namespace Quickstart;

/// <summary>
/// Shows training progress: a bar redrawn in place on an interactive console, or (output redirected, CI, or a dumb
/// terminal) one plain line about every tenth of the run, so logs stay readable.
/// </summary>
internal sealed class ConsoleProgress : IProgress<OrpoStepMetrics>
{
    private const int BarWidth = 24;
    private readonly bool live = !Console.IsOutputRedirected
        && string.IsNullOrEmpty(Environment.GetEnvironmentVariable("CI"))
        && Environment.GetEnvironmentVariable("TERM") != "dumb";
    private int lastLength;

    /// <summary>Called by the trainer after every optimiser step, on the training thread.</summary>
    public void Report(OrpoStepMetrics m)
    {
        bool last = m.Step == m.TotalSteps;
        if (live)
        {
            string text = Line(m, withBar: true);
            Console.Write("\r" + text + new string(' ', Math.Max(0, lastLength - text.Length)));
            lastLength = text.Length;
            if (last) Console.WriteLine();
        }
        else if (last || m.Step == 1 || m.Step % Math.Max(1, m.TotalSteps / 10) == 0)
        {
            Console.WriteLine(Line(m, withBar: false));
        }
    }

    private static string Line(OrpoStepMetrics m, bool withBar)
    {
        var c = CultureInfo.InvariantCulture;
        double fraction = m.TotalSteps == 0 ? 1 : (double)m.Step / m.TotalSteps;
        int filled = (int)Math.Round(fraction * BarWidth);
        string bar = withBar ? $"[{new string('#', filled)}{new string('-', BarWidth - filled)}] " : "";
        string heldOut = m.Validation is { } v ? string.Format(c, " | held-out acc {0:F2}", v.RewardsAccuracy) : "";
        return string.Format(c,
            "  {0}step {1,3}/{2} ({3,3:P0}) | loss {4:F3} | acc {5:F2} | margin {6:+0.000;-0.000} | {7,6} tok/s | ETA {8}{9}",
            bar, m.Step, m.TotalSteps, fraction, m.Loss, m.RewardsAccuracy, m.RewardsMargin,
            Compact(m.TokensPerSecond), Duration(m.EstimatedTimeRemaining), heldOut);
    }

    private static string Compact(double value) =>
        value >= 1000 ? (value / 1000).ToString("F1", CultureInfo.InvariantCulture) + "k" : value.ToString("F0", CultureInfo.InvariantCulture);

    /// <summary>m:ss (or h:mm:ss).</summary>
    public static string Duration(TimeSpan t) =>
        t.TotalHours >= 1 ? t.ToString(@"h\:mm\:ss", CultureInfo.InvariantCulture) : t.ToString(@"m\:ss", CultureInfo.InvariantCulture);
}
