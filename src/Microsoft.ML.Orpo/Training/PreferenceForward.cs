using Microsoft.ML.Orpo.Modeling;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Training;

/// <summary>
/// The ORPO loss of a <see cref="PreferenceBatch"/>: one forward pass over chosen and rejected rows together.
/// <c>matmulType</c> (null: the weights' own type) is the mixed-precision switch: the decoder's Linear layers and
/// the LM head multiply in it, while log-probabilities and the objective are computed in the weights' type (float32).
/// </summary>
internal static class PreferenceForward
{
    public static OrpoLossTerms Loss(LlamaForCausalLM network, PreferenceBatch batch, double lambda,
        double stepNllTokens, double stepPairs, int logitsChunkRows = 0, bool recomputeActivations = false,
        ScalarType? matmulType = null, LogitsScratch? scratch = null)
    {
        using var scope = NewDisposeScope();
        if (UsesFusedLoss(network, logitsChunkRows))
        {
            long steps = batch.Targets.shape[1];
            var hidden = network.HiddenStates(batch.InputIds, recomputeActivations: recomputeActivations, matmulType: matmulType).narrow(1, 0, steps); // (2B, L-1, D)
            var index = ScoredIndex(batch);                                                        // (N)
            using var rows = ScoredRows.Create(index, batch.Targets.reshape(-1).index_select(0, index),
                index.div(steps, rounding_mode: RoundingMode.floor), batch.ResponseMask.reshape(-1).index_select(0, index) > 0, batch.Pairs);
            return Fused(network, hidden.reshape(-1, hidden.shape[^1]), rows, batch.ResponseMask.sum(1), batch.NllTokens,
                new OrpoLossScale(stepNllTokens, stepPairs, lambda), logitsChunkRows, matmulType, scratch);
        }
        var (chosen, rejected, nllSum) = Score(network, batch, logitsChunkRows, recomputeActivations, matmulType);
        var terms = OrpoObjective.Loss(chosen, rejected, nllSum, batch.NllTokens, stepNllTokens, stepPairs, lambda);
        return terms with { Loss = terms.Loss.MoveToOuterDisposeScope() };
    }

    /// <summary>Training (gradients recorded) with the chunked LM head goes through <see cref="FusedOrpoLoss"/>.</summary>
    private static bool UsesFusedLoss(LlamaForCausalLM network, int logitsChunkRows) =>
        logitsChunkRows > 0 && is_grad_enabled() && network.LmHeadWeight.requires_grad;

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
    /// The loss through <see cref="FusedOrpoLoss"/> (training with the chunked LM head), with the same statistics as
    /// <see cref="OrpoObjective.Loss"/>. <paramref name="responseCounts"/> is (2B): chosen rows, then rejected.
    /// </summary>
    private static OrpoLossTerms Fused(LlamaForCausalLM network, Tensor hidden, ScoredRows rows, Tensor responseCounts,
        double nllTokens, OrpoLossScale scale, int logitsChunkRows, ScalarType? matmulType, LogitsScratch? scratch)
    {
        long b = rows.Pairs;
        var (loss, sums) = FusedOrpoLoss.Compute(hidden, network.LmHeadWeight, rows, scale, logitsChunkRows, matmulType, scratch); // sums (B, 3)
        var chosen = sums.select(1, ScoredRows.ChosenResponse) / responseCounts.narrow(0, 0, b);
        var rejected = sums.select(1, ScoredRows.RejectedResponse) / responseCounts.narrow(0, b, b);
        var nllSum = (sums.select(1, ScoredRows.ChosenResponse).sum() + sums.select(1, ScoredRows.PromptNll).sum()).neg();
        var statistics = OrpoObjective.Loss(chosen, rejected, nllSum, nllTokens, scale.StepNllTokens, scale.StepPairs, scale.Lambda).Statistics;
        return new OrpoLossTerms(loss.MoveToOuterDisposeScope(), statistics);
    }

    /// <summary>The ORPO loss of a shared-prompt batch (same value and gradients as the concatenated layout).</summary>
    public static OrpoLossTerms Loss(LlamaForCausalLM network, SharedPromptBatch batch, double lambda,
        double stepNllTokens, double stepPairs, int logitsChunkRows = 0, bool recomputeActivations = false,
        ScalarType? matmulType = null, LogitsScratch? scratch = null)
    {
        using var scope = NewDisposeScope();
        if (UsesFusedLoss(network, logitsChunkRows))
        {
            var hidden = SharedHiddenStates(network, batch, recomputeActivations, matmulType);                      // (B, L, D)
            using var rows = ScoredRows.Create(batch.Sources, batch.Targets, batch.Rows, batch.ResponseMask > 0, batch.Pairs);
            return Fused(network, hidden.reshape(-1, hidden.shape[^1]), rows, batch.ResponseCounts, batch.NllTokens,
                new OrpoLossScale(stepNllTokens, stepPairs, lambda), logitsChunkRows, matmulType, scratch);
        }
        var (chosen, rejected, nllSum) = Score(network, batch, logitsChunkRows, recomputeActivations, matmulType);
        var terms = OrpoObjective.Loss(chosen, rejected, nllSum, batch.NllTokens, stepNllTokens, stepPairs, lambda);
        return terms with { Loss = terms.Loss.MoveToOuterDisposeScope() };
    }

    /// <summary>
    /// The loss of one micro-batch of pairs in the layout and precision <paramref name="settings"/> select, and the
    /// tokens it stands for (the concatenated layout's count, so throughput is comparable across layouts).
    /// <paramref name="scratch"/>: the training run's logits block (null: one per call).
    /// </summary>
    public static (OrpoLossTerms Terms, long Tokens) Loss(LlamaForCausalLM network, IReadOnlyList<EncodedPair> pairs,
        TrainingSettings settings, Device device, double stepNllTokens, double stepPairs, LogitsScratch? scratch = null)
    {
        var matmulType = settings.Precision.MatmulType();
        if (settings.SharedPromptForward)
        {
            using var shared = SharedPromptBatch.Create(pairs, settings.IncludePromptInNll, device);
            return (Loss(network, shared, settings.Lambda, stepNllTokens, stepPairs, settings.LogitsChunkRows,
                settings.RecomputeActivations, matmulType, scratch), shared.EquivalentTokens);
        }
        using var batch = PreferenceBatch.Create(pairs, settings.IncludePromptInNll, device);
        return (Loss(network, batch, settings.Lambda, stepNllTokens, stepPairs, settings.LogitsChunkRows,
            settings.RecomputeActivations, matmulType, scratch), batch.RealTokens);
    }

    /// <summary>Mean response log-probabilities of chosen (B) and rejected (B) rows, and the summed chosen NLL.</summary>
    public static (Tensor ChosenLogp, Tensor RejectedLogp, Tensor NllSum) Score(LlamaForCausalLM network, PreferenceBatch batch,
        int logitsChunkRows = 0, bool recomputeActivations = false, ScalarType? matmulType = null)
    {
        using var scope = NewDisposeScope();
        long b = batch.Pairs, steps = batch.Targets.shape[1];
        var hidden = network.HiddenStates(batch.InputIds, recomputeActivations: recomputeActivations, matmulType: matmulType)
            .narrow(1, 0, steps);                                                              // (2B, L-1, D)
        var tokenLogp = logitsChunkRows > 0
            ? ScoredTokenLogProbs(network, hidden, batch, logitsChunkRows, matmulType)
            : TokenLogProbs(network, hidden, batch.Targets, 0, matmulType);            // (2B, L-1)
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
        var logp = ChunkedLogProbs.Compute(picked, network.LmHeadWeight, batch.Targets.reshape(-1).index_select(0, index), logitsChunkRows, matmulType);
        return zeros(rows * steps, logp.dtype, logp.device).index_copy(0, index, logp).view(rows, steps).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Mean response log-probabilities of chosen (B) and rejected (B) rows, and the summed chosen NLL, from a
    /// shared-prompt batch: one prompt per pair, only scored predictions through the LM head.
    /// </summary>
    public static (Tensor ChosenLogp, Tensor RejectedLogp, Tensor NllSum) Score(LlamaForCausalLM network, SharedPromptBatch batch,
        int logitsChunkRows = 0, bool recomputeActivations = false, ScalarType? matmulType = null)
    {
        using var scope = NewDisposeScope();
        long b = batch.Pairs;
        var hidden = SharedHiddenStates(network, batch, recomputeActivations, matmulType);      // (B, L, D)
        var scored = hidden.reshape(-1, hidden.shape[^1]).index_select(0, batch.Sources);      // (N, D)
        var tokenLogp = TokenLogProbs(network, scored, batch.Targets, logitsChunkRows, matmulType); // (N)
        var rowSums = zeros(2 * b, tokenLogp.dtype, tokenLogp.device).index_add(0, batch.Rows, tokenLogp * batch.ResponseMask, 1);
        var meanLogp = rowSums / batch.ResponseCounts;                                         // (2B)
        var nllSum = (tokenLogp * batch.NllMask).sum().neg();
        return (meanLogp.narrow(0, 0, b).MoveToOuterDisposeScope(), meanLogp.narrow(0, b, b).MoveToOuterDisposeScope(),
            nllSum.MoveToOuterDisposeScope());
    }

    private static Tensor SharedHiddenStates(LlamaForCausalLM network, SharedPromptBatch batch, bool recomputeActivations,
        ScalarType? matmulType) =>
        network.HiddenStates(batch.InputIds, batch.PositionIds, sharedPrefix: batch.Attention,
            recomputeActivations: recomputeActivations, matmulType: matmulType);                // (B, L, D)

    /// <summary>
    /// log p(target) per position, without keeping a full-vocabulary log-softmax copy. With
    /// <paramref name="logitsChunkRows"/> &gt; 0 the logits are never materialised whole (<see cref="ChunkedLogProbs"/>).
    /// The LM head multiplies in <paramref name="matmulType"/> when given; logsumexp runs in the hidden states' type.
    /// </summary>
    public static Tensor TokenLogProbs(LlamaForCausalLM network, Tensor hidden, Tensor targets, int logitsChunkRows = 0,
        ScalarType? matmulType = null) // (..., D), (...) -> (...)
    {
        if (logitsChunkRows > 0) return ChunkedLogProbs.Compute(hidden, network.LmHeadWeight, targets, logitsChunkRows, matmulType);
        using var scope = NewDisposeScope();
        var logits = network.Logits(hidden, matmulType);                               // (N, T, V)
        var picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1);
        return (picked - logits.logsumexp(-1)).MoveToOuterDisposeScope();
    }
}
