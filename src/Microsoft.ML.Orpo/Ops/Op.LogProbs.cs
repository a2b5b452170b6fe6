using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Ops;

internal static partial class Op
{
    /// <summary>
    /// log p(target) per position through the LM head: (..., D) hidden, (V, D) head matrix, (...) targets -> (...).
    /// With <paramref name="chunkRows"/> &gt; 0 the logits never exist whole (<see cref="ChunkedLogProbs"/>); 0 is the
    /// reference: full logits, then <c>logit[target] - logsumexp(logits)</c>. The head multiplies in
    /// <paramref name="matmulType"/> when given; logsumexp runs in the hidden states' type.
    /// </summary>
    public static Tensor TokenLogProbs(Tensor hidden, Tensor weight, long weightElements, Tensor targets, int chunkRows, ScalarType? matmulType)
    {
        if (chunkRows > 0) return ChunkedLogProbs.Compute(hidden, weight, targets, chunkRows, matmulType);
        using var scope = NewDisposeScope();
        var logits = Logits(hidden, weight, weightElements, matmulType);                   // (..., V)
        var picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1);
        return (picked - logits.logsumexp(-1)).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The LM head and a pair objective in one pass (<see cref="FusedOrpoLoss"/>): the loss, differentiable in the
    /// (M, D) <paramref name="hidden"/> states and the (V, D) head <paramref name="weight"/>, and the detached (B, 3)
    /// per-pair log-probability sums. Its reference is <see cref="TokenLogProbs"/> without chunks followed by the
    /// objective through autograd.
    /// </summary>
    public static (Tensor Loss, Tensor GroupSums) OrpoHead(Tensor hidden, Tensor weight, ScoredRows rows, PairObjective objective,
        int chunkRows, ScalarType? matmulType, LogitsScratch? scratch) =>
        FusedOrpoLoss.Compute(hidden, weight, rows, objective, chunkRows, matmulType, scratch);
}
