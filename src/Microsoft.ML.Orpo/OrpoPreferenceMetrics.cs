namespace Microsoft.ML.Orpo;

/// <summary>
/// The ORPO objective's metrics over a set of preference pairs (TRL's names and meanings), for a training step,
/// a validation pass or a held-out evaluation. A training step's <see cref="OrpoStepMetrics"/> are these plus the
/// step's own fields.
/// </summary>
public record OrpoPreferenceMetrics
{
    /// <summary>NllLoss + lambda * OddsRatioLoss.</summary>
    public double Loss { get; init; }
    /// <summary>Token-mean cross-entropy over the chosen responses (plus prompts when IncludePromptInNll).</summary>
    public double NllLoss { get; init; }
    /// <summary>Mean of -log sigmoid(log odds ratio): the paper's L_OR.</summary>
    public double OddsRatioLoss { get; init; }
    /// <summary>Mean of log sigmoid(log odds ratio).</summary>
    public double LogOddsRatio { get; init; }
    /// <summary>Mean log odds ratio of chosen over rejected.</summary>
    public double LogOddsChosen { get; init; }
    /// <summary>lambda * mean per-token log-probability of the chosen responses.</summary>
    public double RewardsChosen { get; init; }
    /// <summary>lambda * mean per-token log-probability of the rejected responses.</summary>
    public double RewardsRejected { get; init; }
    /// <summary>Fraction of pairs whose chosen response is more likely (per token) than the rejected one.</summary>
    public double RewardsAccuracy { get; init; }
    /// <summary>Mean of RewardsChosen - RewardsRejected per pair.</summary>
    public double RewardsMargin { get; init; }
    /// <summary>Mean per-token log-probability of the chosen responses (TRL's <c>logps/chosen</c>; not scaled by lambda).</summary>
    public double ChosenLogProbability { get; init; }
    /// <summary>Mean per-token log-probability of the rejected responses (TRL's <c>logps/rejected</c>; not scaled by lambda).</summary>
    public double RejectedLogProbability { get; init; }
    /// <summary>exp(NllLoss).</summary>
    public double ChosenPerplexity { get; init; }
    /// <summary>Number of pairs the metrics cover.</summary>
    public int Pairs { get; init; }
}
