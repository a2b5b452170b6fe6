namespace Microsoft.ML.Orpo;

/// <summary>
/// The validation metric an <see cref="OrpoSweepExperiment"/> optimises (the fields of <see cref="OrpoPreferenceMetrics"/>).
/// <see cref="Loss"/>, <see cref="RewardsChosen"/>, <see cref="RewardsMargin"/> and the rewards in general are scaled by
/// the trial's own lambda, so they favour large or small lambdas by construction; to compare lambdas use a metric
/// that is not scaled by it: <see cref="LogOddsRatio"/>, <see cref="OddsRatioLoss"/>, <see cref="LogOddsChosen"/>,
/// <see cref="RewardsAccuracy"/>, <see cref="LogProbabilityMargin"/>, <see cref="NllLoss"/> or <see cref="ChosenPerplexity"/>.
/// </summary>
public enum OrpoSweepMetric
{
    /// <summary>Mean log sigmoid of the log odds ratio (maximised by default). The default metric.</summary>
    LogOddsRatio,
    /// <summary>The paper's L_OR, -LogOddsRatio (minimised by default).</summary>
    OddsRatioLoss,
    /// <summary>Mean log odds ratio of chosen over rejected (maximised by default).</summary>
    LogOddsChosen,
    /// <summary>Fraction of pairs with chosen more likely than rejected (maximised by default); coarse on small sets.</summary>
    RewardsAccuracy,
    /// <summary>Mean chosen minus mean rejected per-token log-probability, not scaled by lambda (maximised by default).</summary>
    LogProbabilityMargin,
    /// <summary>Token-mean NLL of the chosen responses (minimised by default).</summary>
    NllLoss,
    /// <summary>exp(NllLoss) (minimised by default).</summary>
    ChosenPerplexity,
    /// <summary>NllLoss + lambda * OddsRatioLoss, scaled by each trial's lambda (minimised by default).</summary>
    Loss,
    /// <summary>lambda * (chosen - rejected) log-probability, scaled by each trial's lambda (maximised by default).</summary>
    RewardsMargin,
    /// <summary>lambda * chosen log-probability, scaled by each trial's lambda (maximised by default).</summary>
    RewardsChosen,
}

/// <summary>Reading a <see cref="OrpoSweepMetric"/> out of the metrics, and its natural direction.</summary>
internal static class OrpoSweepMetricExtensions
{
    public static double ValueOf(this OrpoSweepMetric metric, OrpoPreferenceMetrics m) => metric switch
    {
        OrpoSweepMetric.LogOddsRatio => m.LogOddsRatio,
        OrpoSweepMetric.OddsRatioLoss => m.OddsRatioLoss,
        OrpoSweepMetric.LogOddsChosen => m.LogOddsChosen,
        OrpoSweepMetric.RewardsAccuracy => m.RewardsAccuracy,
        OrpoSweepMetric.LogProbabilityMargin => m.ChosenLogProbability - m.RejectedLogProbability,
        OrpoSweepMetric.NllLoss => m.NllLoss,
        OrpoSweepMetric.ChosenPerplexity => m.ChosenPerplexity,
        OrpoSweepMetric.Loss => m.Loss,
        OrpoSweepMetric.RewardsMargin => m.RewardsMargin,
        OrpoSweepMetric.RewardsChosen => m.RewardsChosen,
        _ => throw new ArgumentOutOfRangeException(nameof(metric), metric, "Unknown sweep metric."),
    };

    public static bool MaximizedByDefault(this OrpoSweepMetric metric) => metric switch
    {
        OrpoSweepMetric.OddsRatioLoss or OrpoSweepMetric.NllLoss or OrpoSweepMetric.ChosenPerplexity or OrpoSweepMetric.Loss => false,
        _ => true,
    };
}
