namespace Microsoft.ML.Orpo;

/// <summary>
/// One optimiser step's metrics, computed on the weights before that step's update (TRL's names).
/// </summary>
public sealed record OrpoStepMetrics
{
    /// <summary>1-based optimiser step.</summary>
    public int Step { get; init; }
    /// <summary>Fractional epoch at the end of this step (1.0 = one pass over the data).</summary>
    public double Epoch { get; init; }
    /// <summary>NllLoss + lambda * OddsRatioLoss.</summary>
    public double Loss { get; init; }
    /// <summary>Token-mean cross-entropy over the chosen responses.</summary>
    public double NllLoss { get; init; }
    /// <summary>Mean -log sigmoid(log odds ratio).</summary>
    public double OddsRatioLoss { get; init; }
    /// <summary>Mean log sigmoid(log odds ratio).</summary>
    public double LogOddsRatio { get; init; }
    /// <summary>Mean log odds ratio.</summary>
    public double LogOddsChosen { get; init; }
    /// <summary>lambda * mean chosen log-probability.</summary>
    public double RewardsChosen { get; init; }
    /// <summary>lambda * mean rejected log-probability.</summary>
    public double RewardsRejected { get; init; }
    /// <summary>Fraction of pairs with chosen more likely than rejected.</summary>
    public double RewardsAccuracy { get; init; }
    /// <summary>Mean reward margin.</summary>
    public double RewardsMargin { get; init; }
    /// <summary>Mean per-token log-probability of the chosen responses (TRL's <c>logps/chosen</c>).</summary>
    public double ChosenLogProbability { get; init; }
    /// <summary>Mean per-token log-probability of the rejected responses (TRL's <c>logps/rejected</c>).</summary>
    public double RejectedLogProbability { get; init; }
    /// <summary>Learning rate used for this step's update.</summary>
    public double LearningRate { get; init; }
    /// <summary>Global L2 norm of the gradient before clipping.</summary>
    public double GradNorm { get; init; }
    /// <summary>Training tokens (chosen + rejected, without padding) per second in this step.</summary>
    public double TokensPerSecond { get; init; }
    /// <summary>Wall time since training started.</summary>
    public TimeSpan Elapsed { get; init; }
    /// <summary>Estimated time to the end of training.</summary>
    public TimeSpan EstimatedTimeRemaining { get; init; }
    /// <summary>Total optimiser steps planned.</summary>
    public int TotalSteps { get; init; }
    /// <summary>
    /// Validation-set metrics when validation ran after this step, else null. Unlike the other metrics of the step,
    /// they are computed on the weights after this step's update.
    /// </summary>
    public OrpoPreferenceMetrics? Validation { get; init; }

    internal static OrpoStepMetrics From(OrpoPreferenceMetrics m) => new()
    {
        Loss = m.Loss, NllLoss = m.NllLoss, OddsRatioLoss = m.OddsRatioLoss, LogOddsRatio = m.LogOddsRatio,
        LogOddsChosen = m.LogOddsChosen, RewardsChosen = m.RewardsChosen, RewardsRejected = m.RewardsRejected,
        RewardsAccuracy = m.RewardsAccuracy, RewardsMargin = m.RewardsMargin,
        ChosenLogProbability = m.ChosenLogProbability, RejectedLogProbability = m.RejectedLogProbability,
    };
}
