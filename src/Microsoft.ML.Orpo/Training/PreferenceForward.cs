using Microsoft.ML.Orpo.Modeling;
using Microsoft.ML.Orpo.Ops;
using Microsoft.ML.Orpo.Preferences;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Training;

/// <summary>
/// The ORPO loss of a micro-batch of pairs: one forward pass over chosen and rejected rows together, in the layout
/// the settings select (concatenated <see cref="PreferenceBatch"/> or <see cref="SharedPromptBatch"/>), then the LM
/// head and the objective: fused (<see cref="Op.OrpoHead"/>) when training with a chunked head, else token
/// log-probabilities (<see cref="Op.TokenLogProbs"/>) and <see cref="OrpoObjective.Loss"/>. The matmul type
/// (null: the weights' own) is the mixed-precision switch: the decoder's Linear layers and the LM head multiply in
/// it, while log-probabilities and the objective are computed in the weights' type (float32).
/// </summary>
internal static class PreferenceForward
{
    /// <summary>
    /// The loss of one micro-batch of pairs and the tokens it stands for (the concatenated layout's count, so
    /// throughput is comparable across layouts). <paramref name="stepNllTokens"/> and <paramref name="stepPairs"/>
    /// normalise over the whole optimiser step (gradient accumulation sums micro-batch losses).
    /// <paramref name="scratch"/>: the training run's logits block (null: one per call).
    /// </summary>
    public static (OrpoLossTerms Terms, long Tokens) Loss(LlamaForCausalLM network, IReadOnlyList<EncodedPair> pairs,
        TrainingSettings settings, Device device, double stepNllTokens, double stepPairs, LogitsScratch? scratch = null)
    {
        var head = new Head(new OrpoLossScale(stepNllTokens, stepPairs, settings.Lambda), settings.LogitsChunkRows,
            settings.RecomputeActivations, settings.Precision.MatmulType(), scratch);
        if (settings.SharedPromptForward)
        {
            using var shared = SharedPromptBatch.Create(pairs, settings.IncludePromptInNll, device);
            return (Loss(network, shared, head), shared.EquivalentTokens);
        }
        using var batch = PreferenceBatch.Create(pairs, settings.IncludePromptInNll, device);
        return (Loss(network, batch, head), batch.RealTokens);
    }

    /// <summary>How one micro-batch's loss is computed: the step's scale, the head's chunking, recomputation, matmul type.</summary>
    private readonly record struct Head(OrpoLossScale Scale, int ChunkRows, bool Recompute, ScalarType? MatmulType, LogitsScratch? Scratch);

    private static OrpoLossTerms Loss(LlamaForCausalLM network, PreferenceBatch batch, Head head)
    {
        using var scope = NewDisposeScope();
        if (UsesFusedLoss(network, head.ChunkRows))
        {
            long steps = batch.Targets.shape[1];
            var hidden = network.HiddenStates(batch.InputIds, recomputeActivations: head.Recompute, matmulType: head.MatmulType).narrow(1, 0, steps); // (2B, L-1, D)
            var index = ScoredIndex(batch);                                                        // (N)
            using var rows = ScoredRows.Create(index, batch.Targets.reshape(-1).index_select(0, index),
                index.div(steps, rounding_mode: RoundingMode.floor), batch.ResponseMask.reshape(-1).index_select(0, index) > 0, batch.Pairs);
            return Fused(network, hidden.reshape(-1, hidden.shape[^1]), rows, batch.ResponseMask.sum(1), batch.NllTokens, head);
        }
        var (chosen, rejected, nllSum) = Score(network, batch, head);
        var terms = OrpoObjective.Loss(chosen, rejected, nllSum, batch.NllTokens, head.Scale.StepNllTokens, head.Scale.StepPairs, head.Scale.Lambda);
        return terms with { Loss = terms.Loss.MoveToOuterDisposeScope() };
    }

    /// <summary>
    /// Training (gradients recorded) with the chunked LM head goes through <see cref="FusedOrpoLoss"/>, also with a
    /// frozen head under LoRA (then without the head's weight-gradient product: two LM-head products per row, against
    /// three forward and backward through <see cref="ChunkedLogProbs"/>).
    /// </summary>
    private static bool UsesFusedLoss(LlamaForCausalLM network, int logitsChunkRows) =>
        logitsChunkRows > 0 && is_grad_enabled() && (network.LmHeadWeight.requires_grad || network.Adapters is not null);

    /// <summary>
    /// (N) flat index into the (2B x (L-1)) predictions of the scored ones: every response token, plus the chosen
    /// prompt's tokens when they count in the NLL.
    /// </summary>
    private static Tensor ScoredIndex(PreferenceBatch batch)
    {
        using var scope = NewDisposeScope();
        var scored = batch.ResponseMask.clone();
        scored.narrow(0, 0, batch.Pairs).add_(batch.NllMask);
        return scored.reshape(-1).nonzero().squeeze(1).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The loss through the fused head (training with the chunked LM head), with the same statistics as
    /// <see cref="OrpoObjective.Loss"/>. <paramref name="responseCounts"/> is (2B): chosen rows, then rejected.
    /// </summary>
    private static OrpoLossTerms Fused(LlamaForCausalLM network, Tensor hidden, ScoredRows rows, Tensor responseCounts, double nllTokens, Head head)
    {
        long b = rows.Pairs;
        var scale = head.Scale;
        var (loss, sums) = Op.OrpoHead(hidden, network.LmHeadWeight, rows, scale.Objective, head.ChunkRows, head.MatmulType, head.Scratch); // sums (B, 3)
        var chosen = sums.select(1, ScoredRows.ChosenResponse) / responseCounts.narrow(0, 0, b);
        var rejected = sums.select(1, ScoredRows.RejectedResponse) / responseCounts.narrow(0, b, b);
        var nllSum = (sums.select(1, ScoredRows.ChosenResponse).sum() + sums.select(1, ScoredRows.PromptNll).sum()).neg();
        var statistics = OrpoObjective.Loss(chosen, rejected, nllSum, nllTokens, scale.StepNllTokens, scale.StepPairs, scale.Lambda).Statistics;
        return new OrpoLossTerms(loss.MoveToOuterDisposeScope(), statistics);
    }

    /// <summary>The ORPO loss of a shared-prompt batch (same value and gradients as the concatenated layout).</summary>
    private static OrpoLossTerms Loss(LlamaForCausalLM network, SharedPromptBatch batch, Head head)
    {
        using var scope = NewDisposeScope();
        if (UsesFusedLoss(network, head.ChunkRows))
        {
            var hidden = SharedHiddenStates(network, batch, head);                                 // (B, L, D)
            using var rows = ScoredRows.Create(batch.Sources, batch.Targets, batch.Rows, batch.ResponseMask > 0, batch.Pairs);
            return Fused(network, hidden.reshape(-1, hidden.shape[^1]), rows, batch.ResponseCounts, batch.NllTokens, head);
        }
        var (chosen, rejected, nllSum) = Score(network, batch, head);
        var terms = OrpoObjective.Loss(chosen, rejected, nllSum, batch.NllTokens, head.Scale.StepNllTokens, head.Scale.StepPairs, head.Scale.Lambda);
        return terms with { Loss = terms.Loss.MoveToOuterDisposeScope() };
    }

    /// <summary>Mean response log-probabilities of chosen (B) and rejected (B) rows, and the summed chosen NLL.</summary>
    private static (Tensor ChosenLogp, Tensor RejectedLogp, Tensor NllSum) Score(LlamaForCausalLM network, PreferenceBatch batch, Head head)
    {
        using var scope = NewDisposeScope();
        long b = batch.Pairs, steps = batch.Targets.shape[1];
        var hidden = network.HiddenStates(batch.InputIds, recomputeActivations: head.Recompute, matmulType: head.MatmulType)
            .narrow(1, 0, steps);                                                              // (2B, L-1, D)
        var tokenLogp = head.ChunkRows > 0
            ? ScoredTokenLogProbs(network, hidden, batch, head.ChunkRows, head.MatmulType)
            : TokenLogProbs(network, hidden, batch.Targets, 0, head.MatmulType);       // (2B, L-1)
        var meanLogp = (tokenLogp * batch.ResponseMask).sum(1) / batch.ResponseMask.sum(1);  // (2B)
        var nllSum = (tokenLogp.narrow(0, 0, b) * batch.NllMask).sum().neg();
        return (meanLogp.narrow(0, 0, b).MoveToOuterDisposeScope(), meanLogp.narrow(0, b, b).MoveToOuterDisposeScope(),
            nllSum.MoveToOuterDisposeScope());
    }

    /// <summary>
    /// (2B, L-1) token log-probabilities where only the scored predictions (response, and the chosen prompt when it
    /// counts in the NLL) go through the chunked LM head; unscored entries are 0 and are masked out by the caller.
    /// </summary>
    private static Tensor ScoredTokenLogProbs(LlamaForCausalLM network, Tensor hidden, PreferenceBatch batch, int logitsChunkRows,
        ScalarType? matmulType)
    {
        using var scope = NewDisposeScope();
        long b = batch.Pairs, rows = 2 * b, steps = batch.Targets.shape[1];
        var index = ScoredIndex(batch);                                                       // (N)
        var picked = hidden.reshape(rows * steps, hidden.shape[^1]).index_select(0, index);  // (N, D)
        var logp = TokenLogProbs(network, picked, batch.Targets.reshape(-1).index_select(0, index), logitsChunkRows, matmulType);
        return zeros(rows * steps, logp.dtype, logp.device).index_copy(0, index, logp).view(rows, steps).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Mean response log-probabilities of chosen (B) and rejected (B) rows, and the summed chosen NLL, from a
    /// shared-prompt batch: one prompt per pair, only scored predictions through the LM head.
    /// </summary>
    private static (Tensor ChosenLogp, Tensor RejectedLogp, Tensor NllSum) Score(LlamaForCausalLM network, SharedPromptBatch batch, Head head)
    {
        using var scope = NewDisposeScope();
        long b = batch.Pairs;
        var hidden = SharedHiddenStates(network, batch, head);                                 // (B, L, D)
        var scored = hidden.reshape(-1, hidden.shape[^1]).index_select(0, batch.Sources);      // (N, D)
        var tokenLogp = TokenLogProbs(network, scored, batch.Targets, head.ChunkRows, head.MatmulType); // (N)
        var rowSums = zeros(2 * b, tokenLogp.dtype, tokenLogp.device).index_add(0, batch.Rows, tokenLogp * batch.ResponseMask, 1);
        var meanLogp = rowSums / batch.ResponseCounts;                                         // (2B)
        var nllSum = (tokenLogp * batch.NllMask).sum().neg();
        return (meanLogp.narrow(0, 0, b).MoveToOuterDisposeScope(), meanLogp.narrow(0, b, b).MoveToOuterDisposeScope(),
            nllSum.MoveToOuterDisposeScope());
    }

    private static Tensor SharedHiddenStates(LlamaForCausalLM network, SharedPromptBatch batch, Head head) =>
        network.HiddenStates(batch.InputIds, batch.PositionIds, sharedPrefix: batch.Attention,
            recomputeActivations: head.Recompute, matmulType: head.MatmulType);                 // (B, L, D)

    /// <summary>log p(target) per position through the network's LM head (<see cref="Op.TokenLogProbs"/>).</summary>
    private static Tensor TokenLogProbs(LlamaForCausalLM network, Tensor hidden, Tensor targets, int logitsChunkRows, ScalarType? matmulType) =>
        Op.TokenLogProbs(hidden, network.LmHeadWeight, network.LmHeadElements, targets, logitsChunkRows, matmulType); // (..., D), (...) -> (...)
}

/// <summary>The step-level constants of <see cref="OrpoObjective.LossValue"/>.</summary>
internal readonly record struct OrpoLossScale(double StepNllTokens, double StepPairs, double Lambda)
{
    /// <summary>The objective with these constants, as the fused head takes it.</summary>
    public PairObjective Objective
    {
        get
        {
            var (nllTokens, pairs, lambda) = (StepNllTokens, StepPairs, Lambda);
            return (chosen, rejected, nllSum) => OrpoObjective.LossValue(chosen, rejected, nllSum, nllTokens, pairs, lambda);
        }
    }
}
