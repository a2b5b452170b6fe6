using System.Globalization;
using System.Text;
using Microsoft.ML.Orpo;

namespace Quickstart;

/// <summary>
/// Writes the training history as CSV, one row per optimiser step, with Hugging Face TRL ORPOTrainer's log keys as
/// column names (so the file lines up with a TRL run), plus a few extras and the held-out (eval_) metrics on the
/// steps where validation ran.
/// </summary>
internal static class MetricsCsv
{
    private static readonly (string Name, Func<OrpoStepMetrics, double?> Value)[] Columns =
    {
        ("step", m => m.Step),
        ("epoch", m => m.Epoch),
        ("loss", m => m.Loss),
        ("nll_loss", m => m.NllLoss),
        ("odds_ratio_loss", m => m.OddsRatioLoss),
        ("log_odds_ratio", m => m.LogOddsRatio),
        ("log_odds_chosen", m => m.LogOddsChosen),
        ("rewards/chosen", m => m.RewardsChosen),
        ("rewards/rejected", m => m.RewardsRejected),
        ("rewards/accuracies", m => m.RewardsAccuracy),
        ("rewards/margins", m => m.RewardsMargin),
        ("learning_rate", m => m.LearningRate),
        ("grad_norm", m => m.GradNorm),
        ("tokens_per_second", m => m.TokensPerSecond),
        ("elapsed_seconds", m => m.Elapsed.TotalSeconds),
        ("eval_loss", m => m.Validation?.Loss),
        ("eval_nll_loss", m => m.Validation?.NllLoss),
        ("eval_rewards/accuracies", m => m.Validation?.RewardsAccuracy),
        ("eval_rewards/margins", m => m.Validation?.RewardsMargin),
    };

    public static void Write(string path, IReadOnlyList<OrpoStepMetrics> history)
    {
        var text = new StringBuilder();
        text.AppendJoin(',', Columns.Select(c => c.Name)).Append('\n');
        foreach (var m in history)
            text.AppendJoin(',', Columns.Select(c => c.Value(m)?.ToString("R", CultureInfo.InvariantCulture) ?? "")).Append('\n');
        File.WriteAllText(path, text.ToString());
    }
}
