using TorchSharp;
using Microsoft.ML.Orpo.Training;
using Microsoft.ML.Orpo.Preferences;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Tests.Infrastructure;

/// <summary>
/// The ORPO formula written directly from the paper (eq. 2-7) over <see cref="ReferenceLlama"/>, pair by pair,
/// in float64, for comparison with the batched production path.
/// </summary>
internal static class ReferenceOrpo
{
    /// <summary>Per-token log-probabilities of ids[1..] given the prefix, float64 (T-1).</summary>
    public static Tensor TokenLogProbs(ReferenceLlama model, IReadOnlyList<int> ids)
    {
        var logp = model.Logits(ids).log_softmax(-1);
        var next = tensor(ids.Skip(1).Select(i => (long)i).ToArray());
        return logp.narrow(0, 0, ids.Count - 1).gather(1, next.unsqueeze(1)).squeeze(1);
    }

    public sealed record Terms(Tensor Loss, double Nll, double OddsRatioLoss, double LogOddsRatio, double LogOddsChosen,
        double RewardsChosen, double RewardsRejected, double Accuracy, double Margin);

    /// <summary>The loss (differentiable) and TRL metrics over a set of pairs.</summary>
    public static Terms Compute(ReferenceLlama model, IReadOnlyList<EncodedPair> pairs, double lambda, bool includePromptInNll = false)
    {
        Tensor nllSum = zeros(1, dtype: ScalarType.Float64).squeeze();
        Tensor orSum = zeros(1, dtype: ScalarType.Float64).squeeze();
        double nllTokens = 0, logOddsSum = 0, logSigSum = 0, chosenSum = 0, rejectedSum = 0, correct = 0;
        foreach (var pair in pairs)
        {
            int p = pair.PromptIds.Count;
            var chosen = TokenLogProbs(model, pair.PromptIds.Concat(pair.ChosenIds).ToList());
            var rejected = TokenLogProbs(model, pair.PromptIds.Concat(pair.RejectedIds).ToList());
            var lpW = chosen.narrow(0, p - 1, pair.ChosenIds.Count).mean();
            var lpL = rejected.narrow(0, p - 1, pair.RejectedIds.Count).mean();
            var scored = includePromptInNll ? chosen : chosen.narrow(0, p - 1, pair.ChosenIds.Count);
            nllSum = nllSum - scored.sum();
            nllTokens += scored.shape[0];
            // log odds = log(P_w / (1 - P_w)) - log(P_l / (1 - P_l)), with P = exp(mean log-prob).
            var logOdds = (lpW - (1 - lpW.exp()).log()) - (lpL - (1 - lpL.exp()).log());
            var logSigmoid = (1 / (1 + (-logOdds).exp())).log();
            orSum = orSum - logSigmoid;
            logOddsSum += logOdds.ToDouble();
            logSigSum += logSigmoid.ToDouble();
            chosenSum += lpW.ToDouble();
            rejectedSum += lpL.ToDouble();
            correct += lpW.ToDouble() > lpL.ToDouble() ? 1 : 0;
        }
        int n = pairs.Count;
        var loss = nllSum / nllTokens + lambda * orSum / n;
        return new Terms(loss, nllSum.ToDouble() / nllTokens, -logSigSum / n, logSigSum / n, logOddsSum / n,
            lambda * chosenSum / n, lambda * rejectedSum / n, correct / n, lambda * (chosenSum - rejectedSum) / n);
    }
}
