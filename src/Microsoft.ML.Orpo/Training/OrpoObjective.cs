using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Microsoft.ML.Orpo.Training;

/// <summary>
/// The ORPO objective (Hong, Lee &amp; Thorne 2024, arXiv 2403.07691, section 4), as pure tensor functions.
/// </summary>
internal static class OrpoObjective
{
    /// <summary>
    /// log(1 - e^x) for x &lt; 0, without cancellation: log(-expm1(x)) near 0, log1p(-exp(x)) further out
    /// (Mächler 2012). The naive form is -inf/NaN as x -> 0, i.e. for a response the model finds near-certain.
    /// </summary>
    public static Tensor Log1mexp(Tensor x)
    {
        using var scope = NewDisposeScope();
        // A mean log-probability of exactly 0 (a float32 certainty) would give log(0); clamp just below it.
        x = x.clamp_max(-1e-15);
        var nearZero = x > -Math.Log(2);
        // Each branch only sees inputs where it is accurate, so neither produces NaN values or NaN gradients.
        var near = where(nearZero, x, full_like(x, -0.5)).expm1().neg().log();
        var far = where(nearZero, full_like(x, -1.0), x).exp().neg().log1p();
        return where(nearZero, near, far).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Eq. 4-6: log odds ratio of chosen over rejected from mean per-token log-probabilities (B each):
    /// log(odds_w / odds_l) with odds(y|x) = P / (1 - P).
    /// </summary>
    public static Tensor LogOddsRatio(Tensor chosenLogp, Tensor rejectedLogp) =>
        (chosenLogp - rejectedLogp) - (Log1mexp(chosenLogp) - Log1mexp(rejectedLogp));

    /// <summary>
    /// Eq. 6-7 for one (micro-)batch, normalised by the whole optimiser step's counts so that micro-batches
    /// sum to the large-batch loss: L = sum(token NLL) / nllTokens + lambda * sum(-log sigmoid(log odds)) / pairs.
    /// </summary>
    /// <param name="chosenLogp">(B) mean log-probability of each chosen response.</param>
    /// <param name="rejectedLogp">(B) mean log-probability of each rejected response.</param>
    /// <param name="nllSum">Scalar: summed NLL over the scored chosen tokens of this micro-batch.</param>
    /// <param name="nllTokens">Scored chosen tokens in this micro-batch.</param>
    /// <param name="stepNllTokens">Scored chosen tokens in the whole optimiser step.</param>
    /// <param name="stepPairs">Pairs in the whole optimiser step.</param>
    /// <param name="lambda">Weight of the odds-ratio term.</param>
    public static OrpoLossTerms Loss(Tensor chosenLogp, Tensor rejectedLogp, Tensor nllSum, double nllTokens,
        double stepNllTokens, double stepPairs, double lambda)
    {
        using var scope = NewDisposeScope();
        var loss = LossValue(chosenLogp, rejectedLogp, nllSum, stepNllTokens, stepPairs, lambda);

        using var noGrad = no_grad();
        var logOdds = LogOddsRatio(chosenLogp, rejectedLogp);                  // (B)
        var logSigmoid = F.logsigmoid(logOdds);                                 // (B)
        var statistics = new OrpoBatchStatistics
        {
            Pairs = chosenLogp.shape[0],
            NllTokens = nllTokens,
            NllSum = nllSum.ToDouble(),
            LogSigmoidSum = logSigmoid.sum().ToDouble(),
            LogOddsSum = logOdds.sum().ToDouble(),
            ChosenLogpSum = chosenLogp.sum().ToDouble(),
            RejectedLogpSum = rejectedLogp.sum().ToDouble(),
            CorrectCount = (chosenLogp > rejectedLogp).sum().ToDouble(),
        };
        return new OrpoLossTerms(loss.MoveToOuterDisposeScope(), statistics);
    }

    /// <summary>
    /// Eq. 6-7's value alone: sum(token NLL) / stepNllTokens + lambda * sum(-log sigmoid(log odds)) / stepPairs.
    /// A sum of per-pair terms, so any subset of pairs can be evaluated on its own (<see cref="Ops.FusedOrpoLoss"/>).
    /// </summary>
    public static Tensor LossValue(Tensor chosenLogp, Tensor rejectedLogp, Tensor nllSum, double stepNllTokens,
        double stepPairs, double lambda)
    {
        using var scope = NewDisposeScope();
        var oddsRatioLoss = F.logsigmoid(LogOddsRatio(chosenLogp, rejectedLogp)).sum().neg() / stepPairs;
        return (nllSum / stepNllTokens + oddsRatioLoss * lambda).MoveToOuterDisposeScope();
    }
}

/// <summary>The differentiable loss of a micro-batch and the sums its metrics are built from.</summary>
internal readonly record struct OrpoLossTerms(Tensor Loss, OrpoBatchStatistics Statistics);

/// <summary>Sums over pairs and tokens; micro-batches add up, then <see cref="ToMetrics"/> divides once.</summary>
internal readonly record struct OrpoBatchStatistics
{
    public double Pairs { get; init; }
    public double NllTokens { get; init; }
    public double NllSum { get; init; }
    public double LogSigmoidSum { get; init; }
    public double LogOddsSum { get; init; }
    public double ChosenLogpSum { get; init; }
    public double RejectedLogpSum { get; init; }
    public double CorrectCount { get; init; }

    public static OrpoBatchStatistics operator +(OrpoBatchStatistics a, OrpoBatchStatistics b) => new()
    {
        Pairs = a.Pairs + b.Pairs,
        NllTokens = a.NllTokens + b.NllTokens,
        NllSum = a.NllSum + b.NllSum,
        LogSigmoidSum = a.LogSigmoidSum + b.LogSigmoidSum,
        LogOddsSum = a.LogOddsSum + b.LogOddsSum,
        ChosenLogpSum = a.ChosenLogpSum + b.ChosenLogpSum,
        RejectedLogpSum = a.RejectedLogpSum + b.RejectedLogpSum,
        CorrectCount = a.CorrectCount + b.CorrectCount,
    };

    /// <summary>TRL's metric definitions (ORPOTrainer), so runs can be compared across libraries.</summary>
    public OrpoPreferenceMetrics ToMetrics(double lambda)
    {
        double pairs = Math.Max(Pairs, 1), tokens = Math.Max(NllTokens, 1);
        double nll = NllSum / tokens, oddsRatioLoss = -LogSigmoidSum / pairs;
        return new OrpoPreferenceMetrics
        {
            Loss = nll + lambda * oddsRatioLoss,
            NllLoss = nll,
            OddsRatioLoss = oddsRatioLoss,
            LogOddsRatio = LogSigmoidSum / pairs,
            LogOddsChosen = LogOddsSum / pairs,
            RewardsChosen = lambda * ChosenLogpSum / pairs,
            RewardsRejected = lambda * RejectedLogpSum / pairs,
            RewardsAccuracy = CorrectCount / pairs,
            RewardsMargin = lambda * (ChosenLogpSum - RejectedLogpSum) / pairs,
            ChosenLogProbability = ChosenLogpSum / pairs,
            RejectedLogProbability = RejectedLogpSum / pairs,
            ChosenPerplexity = Math.Exp(nll),
            Pairs = (int)Pairs,
        };
    }
}
