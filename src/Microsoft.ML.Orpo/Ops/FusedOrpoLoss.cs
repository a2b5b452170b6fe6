using Microsoft.ML.Orpo.Kernels;
using Microsoft.ML.Orpo.Native;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Ops;

/// <summary>
/// LM head + ORPO loss in one pass, for the whole micro-batch: the scored hidden states go through the LM head a few
/// pairs at a time (about <c>chunkRows</c> rows), and because the loss is a sum of per-pair terms with step-level
/// constants (<see cref="PairObjective"/>), each chunk's gradient is known as soon as its log-probabilities
/// are: d loss / d logits = g * (onehot(target) - softmax(logits)), with g = d loss / d log p(target) taken from the
/// objective by autograd on the chunk's (pairs)-sized inputs. The forward pass therefore also produces the gradients
/// for the hidden states and the LM-head weight, and the backward pass only scales them: the full (N x V) logits never
/// exist, and unlike <see cref="ChunkedLogProbs"/> nothing is recomputed (three LM-head products per row, not four).
/// </summary>
internal static class FusedOrpoLoss
{
    /// <summary>
    /// The micro-batch loss (differentiable in <paramref name="hidden"/> and <paramref name="weight"/>) and the
    /// detached (B, 3) log-probability sums per pair: chosen response, rejected response, chosen prompt in the NLL.
    /// </summary>
    /// <param name="hidden">(M, D) the layout's hidden states, flattened.</param>
    /// <param name="weight">(V, D) LM-head matrix.</param>
    /// <param name="rows">The scored predictions, pair by pair.</param>
    /// <param name="objective">The loss as a function of per-pair mean log-probabilities and the summed NLL (the ORPO objective with its step constants).</param>
    /// <param name="chunkRows">Target rows per LM-head chunk; a chunk always holds whole pairs (at least one).</param>
    /// <param name="matmulType">Type the three LM-head products run in (mixed precision), null: the weight's own.
    /// Softmax, the loss and the gradient sums stay in the inputs' type.</param>
    /// <param name="scratch">Where the logits blocks go without mixed precision; null: one block allocated for this call.</param>
    public static (Tensor Loss, Tensor GroupSums) Compute(Tensor hidden, Tensor weight, ScoredRows rows, PairObjective objective, int chunkRows,
        ScalarType? matmulType = null, LogitsScratch? scratch = null)
    {
        if (chunkRows <= 0) throw new ArgumentOutOfRangeException(nameof(chunkRows), chunkRows, "must be > 0.");
        using var scope = NewDisposeScope();
        var picked = hidden.index_select(0, rows.Sources);                                    // (N, D)
        var sums = new GroupSumsHolder();
        var loss = FusedOrpoLossFunction.apply(picked, weight, rows, objective, chunkRows, sums, matmulType ?? weight.dtype, scratch);
        return (loss.MoveToOuterDisposeScope(), sums.Value!.view(rows.Pairs, ScoredRows.Kinds).MoveToOuterDisposeScope());
    }

    /// <summary>The forward pass's side output.</summary>
    internal sealed class GroupSumsHolder
    {
        public Tensor? Value { get; set; }
    }

    /// <summary>
    /// Loss, gradients and group sums: (N, D) hidden, (V, D) weight -> scalar loss, d loss / d hidden (N, D),
    /// d loss / d weight (V, D), sums (3B).
    /// </summary>
    internal static (Tensor Loss, Tensor GradHidden, Tensor? GradWeight, Tensor Sums) LossAndGradients(
        Tensor hidden, Tensor weight, ScoredRows rows, PairObjective objective, int chunkRows, bool needWeight, ScalarType matmulType,
        LogitsScratch? scratch = null)
    {
        var dtype = hidden.dtype;
        bool cast = matmulType != dtype || matmulType != weight.dtype;
        var loss = zeros(1, dtype, hidden.device);
        var gradHidden = HostTensors.EmptyLike(hidden);
        var gradWeight = needWeight ? HostTensors.ZerosLike(weight) : null;
        // Every chunk's logits go into one block, with mixed precision also its products (see LogitsScratch for why).
        using var ownScratch = scratch is not null ? null : new LogitsScratch();
        var logitsScratch = scratch ?? ownScratch!;
        // Cast once per call, not per chunk (no-ops without mixed precision); a frozen head (LoRA) once per run.
        var matmulHidden = hidden.to_type(matmulType);
        var matmulWeight = weight.requires_grad ? weight.to_type(matmulType) : logitsScratch.Converted(weight, matmulType);
        var sums = zeros(rows.Pairs * ScoredRows.Kinds, dtype, hidden.device);
        var chunks = Chunks(rows, chunkRows);
        long blockRows = chunks.Max(c => c.Count);
        foreach (var (first, end, start, count) in chunks)
        {
            using var scope = NewDisposeScope();
            var h = matmulHidden.narrow(0, start, count);                                      // (c, D)
            var targets = rows.Targets.narrow(0, start, count).unsqueeze(1);                   // (c, 1)
            var groups = rows.Groups.narrow(0, start, count) - first * ScoredRows.Kinds;       // (c) local group
            var logits = logitsScratch.Block(blockRows, weight.shape[0], dtype, hidden.device).narrow(0, 0, count); // (c, V)
            var product = cast ? logitsScratch.Block(blockRows, weight.shape[0], matmulType, hidden.device).narrow(0, 0, count) : null;
            if (product is null) CpuMatmul.MultiplyInto(logits, h, false, matmulWeight, true, accumulate: false);
            else logits.copy_(product.addmm_(h, matmulWeight.t(), beta: 0, alpha: 1));       // widened
            bool rowKernel = KernelPolicy.Allows(CpuKernels.Softmax) && SoftmaxRows.Supports(logits); // float32 on the CPU
            var logsumexp = rowKernel ? SoftmaxRows.LogSumExp(logits).unsqueeze(1) : logits.logsumexp(1, keepdim: true); // (c, 1)
            var logp = logits.gather(1, targets).sub_(logsumexp).squeeze(1);                   // (c)
            int pairs = end - first;
            var chunkSums = zeros(pairs * ScoredRows.Kinds, dtype, hidden.device).index_add_(0, groups, logp, 1);
            var counts = zeros(pairs * ScoredRows.Kinds, dtype, hidden.device).index_add_(0, groups, ones_like(logp), 1);
            var (chunkLoss, perGroup) = ObjectiveGradient(chunkSums.view(pairs, ScoredRows.Kinds), counts.view(pairs, ScoredRows.Kinds), objective);
            var g = perGroup.index_select(0, groups).unsqueeze(1);                             // (c, 1) d loss / d log p
            Tensor dLogits;
            if (rowKernel)
            {
                SoftmaxRows.ToLossGradient(logits, logsumexp, g, targets);                     // in place, one pass
                dLogits = logits;
            }
            else
            {
                dLogits = logits.sub_(logsumexp).exp_().mul_(g.neg());                         // -g * softmax
                dLogits.scatter_add_(1, targets, g);                                           // + g * onehot
            }
            if (product is not null)
            {
                var d = product.copy_(dLogits);                                                // narrowed in its block
                gradHidden.narrow(0, start, count).copy_(d.matmul(matmulWeight));
                gradWeight?.add_(d.t().matmul(h));                                            // summed in the weight's type
            }
            else
            {
                CpuMatmul.MultiplyInto(gradHidden.narrow(0, start, count), dLogits, false, matmulWeight, false, accumulate: false);
                if (gradWeight is not null) CpuMatmul.MultiplyInto(gradWeight, dLogits, true, h, false, accumulate: true);
            }
            loss.add_(chunkLoss);
            sums.narrow(0, first * ScoredRows.Kinds, pairs * ScoredRows.Kinds).copy_(chunkSums);
        }
        return (loss.squeeze(0), gradHidden, gradWeight, sums);
    }

    /// <summary>Whole pairs [First, End) per chunk, about <paramref name="chunkRows"/> rows (at least one pair): rows [Start, Start + Count).</summary>
    private static List<(int First, int End, long Start, long Count)> Chunks(ScoredRows rows, int chunkRows)
    {
        var chunks = new List<(int, int, long, long)>();
        for (int first = 0; first < rows.Pairs;)
        {
            int end = first + 1;
            while (end < rows.Pairs && rows.PairStarts[end + 1] - rows.PairStarts[first] <= chunkRows) end++;
            chunks.Add((first, end, rows.PairStarts[first], rows.PairStarts[end] - rows.PairStarts[first]));
            first = end;
        }
        return chunks;
    }

    /// <summary>
    /// The objective's value for some pairs and d value / d log p for each (pair, kind) group, from the (P, 3) sums
    /// and counts of log-probabilities: chosen response rows feed the mean and the NLL, rejected rows the mean,
    /// prompt rows the NLL.
    /// </summary>
    private static (Tensor Loss, Tensor PerGroup) ObjectiveGradient(Tensor sums, Tensor counts, PairObjective objective)
    {
        using var scope = NewDisposeScope();
        using var gradients = enable_grad();
        var chosenCount = counts.select(1, ScoredRows.ChosenResponse);
        var rejectedCount = counts.select(1, ScoredRows.RejectedResponse);
        var chosen = (sums.select(1, ScoredRows.ChosenResponse) / chosenCount).detach().requires_grad_(true);
        var rejected = (sums.select(1, ScoredRows.RejectedResponse) / rejectedCount).detach().requires_grad_(true);
        var nllSum = (sums.select(1, ScoredRows.ChosenResponse).sum() + sums.select(1, ScoredRows.PromptNll).sum()).neg()
            .detach().requires_grad_(true);
        var loss = objective(chosen, rejected, nllSum);
        var d = autograd.grad(new List<Tensor> { loss }, new List<Tensor> { chosen, rejected, nllSum });
        var dNll = d[2].expand_as(chosenCount);
        var perGroup = stack(new[] { d[0] / chosenCount - dNll, d[1] / rejectedCount, dNll.neg() }, 1).reshape(-1); // (P * 3)
        return (loss.detach().unsqueeze(0).MoveToOuterDisposeScope(), perGroup.MoveToOuterDisposeScope());
    }
}

/// <summary>
/// A loss that is a sum of per-pair terms of (B) chosen and (B) rejected mean response log-probabilities plus a term
/// of the summed NLL (a scalar): the ORPO objective with its step-level constants bound (Training.OrpoObjective.LossValue).
/// </summary>
internal delegate Tensor PairObjective(Tensor chosenMean, Tensor rejectedMean, Tensor nllSum);

/// <summary>The autograd node behind <see cref="FusedOrpoLoss.Compute"/>: the backward pass scales the forward's gradients.</summary>
internal sealed class FusedOrpoLossFunction : autograd.SingleTensorFunction<FusedOrpoLossFunction>
{
    public override string Name => "FusedOrpoLoss";

    public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
    {
        CustomBackward.Starting(ctx);
        var hidden = (Tensor)vars[0];
        var weight = (Tensor)vars[1];
        bool needWeight = weight.requires_grad;
        var (loss, gradHidden, gradWeight, sums) = FusedOrpoLoss.LossAndGradients(hidden, weight, (ScoredRows)vars[2],
            (PairObjective)vars[3], (int)vars[4], needWeight, (ScalarType)vars[6], (LogitsScratch?)vars[7]);
        ((FusedOrpoLoss.GroupSumsHolder)vars[5]).Value = sums;
        // Saved through autograd: the managed handles die with the caller's dispose scope before the backward pass.
        ctx.save_for_backward(needWeight ? new List<Tensor> { gradHidden, gradWeight! } : new List<Tensor> { gradHidden });
        return loss;
    }

    public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor grad_output) => CustomBackward.Run(ctx, grad_output, saved =>
    {
        var gradHidden = saved[0].mul_(grad_output);
        var gradWeight = saved.Count > 1 ? saved[1].mul_(grad_output) : null;
        return new List<Tensor> { gradHidden, gradWeight!, null!, null!, null!, null!, null!, null! };
    });
}
