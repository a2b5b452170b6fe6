using Microsoft.ML.Orpo.Modeling;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Training;

/// <summary>The ORPO loss of a <see cref="PreferenceBatch"/>: one forward pass over chosen and rejected rows together.</summary>
internal static class PreferenceForward
{
    public static OrpoLossTerms Loss(LlamaForCausalLM network, PreferenceBatch batch, double lambda,
        double stepNllTokens, double stepPairs)
    {
        using var scope = NewDisposeScope();
        var (chosen, rejected, nllSum) = Score(network, batch);
        var terms = OrpoObjective.Loss(chosen, rejected, nllSum, batch.NllTokens, stepNllTokens, stepPairs, lambda);
        return terms with { Loss = terms.Loss.MoveToOuterDisposeScope() };
    }

    /// <summary>Mean response log-probabilities of chosen (B) and rejected (B) rows, and the summed chosen NLL.</summary>
    public static (Tensor ChosenLogp, Tensor RejectedLogp, Tensor NllSum) Score(LlamaForCausalLM network, PreferenceBatch batch)
    {
        using var scope = NewDisposeScope();
        long b = batch.Pairs, steps = batch.Targets.shape[1];
        var hidden = network.HiddenStates(batch.InputIds).narrow(1, 0, steps);         // (2B, L-1, D)
        var tokenLogp = TokenLogProbs(network, hidden, batch.Targets);                  // (2B, L-1)
        var meanLogp = (tokenLogp * batch.ResponseMask).sum(1) / batch.ResponseMask.sum(1);  // (2B)
        var nllSum = (tokenLogp.narrow(0, 0, b) * batch.NllMask).sum().neg();
        return (meanLogp.narrow(0, 0, b).MoveToOuterDisposeScope(), meanLogp.narrow(0, b, b).MoveToOuterDisposeScope(),
            nllSum.MoveToOuterDisposeScope());
    }

    /// <summary>log p(target) per position, without keeping a full-vocabulary log-softmax copy.</summary>
    public static Tensor TokenLogProbs(LlamaForCausalLM network, Tensor hidden, Tensor targets) // (N, T, D), (N, T) -> (N, T)
    {
        using var scope = NewDisposeScope();
        var logits = network.Logits(hidden);                                            // (N, T, V)
        var picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1);
        return (picked - logits.logsumexp(-1)).MoveToOuterDisposeScope();
    }
}
