using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Training;

/// <summary>
/// log p(target) = logit[target] - logsumexp(logits) for hidden states and an LM-head matrix, computed a chunk of
/// rows at a time so the full (N x V) logits never exist. The backward pass recomputes each chunk's logits and
/// applies d/dlogits = g * (onehot(target) - softmax(logits)) directly, so autograd keeps only the hidden states,
/// the weight and the targets (the plain path keeps the logits, and its backward builds two more N x V tensors).
/// </summary>
internal static class ChunkedLogProbs
{
    /// <summary>(..., D) hidden, (V, D) weight, (...) int64 targets -> (...) log-probabilities.</summary>
    public static Tensor Compute(Tensor hidden, Tensor weight, Tensor targets, int chunkRows)
    {
        if (chunkRows <= 0) throw new ArgumentOutOfRangeException(nameof(chunkRows), chunkRows, "must be > 0.");
        return ChunkedLogProbsFunction.apply(hidden, weight, targets, chunkRows);
    }

    /// <summary>Forward values only: (N, D), (V, D), (N) -> (N).</summary>
    internal static Tensor Values(Tensor hidden, Tensor weight, Tensor targets, int chunkRows)
    {
        long n = hidden.shape[0];
        var result = empty(n, hidden.dtype, hidden.device);
        for (long start = 0; start < n; start += chunkRows)
        {
            using var scope = NewDisposeScope();
            long rows = Math.Min(chunkRows, n - start);
            var logits = hidden.narrow(0, start, rows).matmul(weight.t());                // (c, V)
            var picked = logits.gather(1, targets.narrow(0, start, rows).unsqueeze(1)).squeeze(1);
            result.narrow(0, start, rows).copy_(picked - logits.logsumexp(1));
        }
        return result;
    }

    /// <summary>Gradients for hidden (N, D) and weight (V, D) from the upstream gradient (N).</summary>
    internal static (Tensor Hidden, Tensor Weight) Gradients(Tensor hidden, Tensor weight, Tensor targets, Tensor upstream,
        int chunkRows, bool needHidden, bool needWeight)
    {
        long n = hidden.shape[0];
        var gradHidden = needHidden ? empty_like(hidden) : null;
        var gradWeight = needWeight ? zeros_like(weight) : null;
        for (long start = 0; start < n; start += chunkRows)
        {
            using var scope = NewDisposeScope();
            long rows = Math.Min(chunkRows, n - start);
            var h = hidden.narrow(0, start, rows);
            var g = upstream.narrow(0, start, rows).unsqueeze(1);                             // (c, 1)
            var dLogits = h.matmul(weight.t()).softmax(1).mul_(g.neg());                      // -g * softmax
            dLogits.scatter_add_(1, targets.narrow(0, start, rows).unsqueeze(1), g);          // + g * onehot
            gradHidden?.narrow(0, start, rows).copy_(dLogits.matmul(weight));
            gradWeight?.addmm_(dLogits.t(), h);
        }
        return (gradHidden!, gradWeight!);
    }
}

/// <summary>The autograd node behind <see cref="ChunkedLogProbs.Compute"/>.</summary>
internal sealed class ChunkedLogProbsFunction : autograd.SingleTensorFunction<ChunkedLogProbsFunction>
{
    public override string Name => "ChunkedLogProbs";

    public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
    {
        var hidden = (Tensor)vars[0];
        var weight = (Tensor)vars[1];
        var targets = (Tensor)vars[2];
        int chunkRows = (int)vars[3];
        long d = hidden.shape[^1];
        var flatHidden = hidden.reshape(-1, d);
        var flatTargets = targets.reshape(-1);
        ctx.save_for_backward(new List<Tensor> { flatHidden, weight, flatTargets });
        ctx.save_data("chunk", chunkRows);
        ctx.save_data("shape", hidden.shape);
        ctx.save_data("needHidden", hidden.requires_grad);
        ctx.save_data("needWeight", weight.requires_grad);
        return ChunkedLogProbs.Values(flatHidden, weight, flatTargets, chunkRows).view(targets.shape);
    }

    public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor grad_output)
    {
        var saved = ctx.get_saved_variables();
        var (hidden, weight, targets) = (saved[0], saved[1], saved[2]);
        int chunkRows = (int)ctx.get_data("chunk");
        var shape = (long[])ctx.get_data("shape");
        var (gradHidden, gradWeight) = ChunkedLogProbs.Gradients(hidden, weight, targets, grad_output.reshape(-1).contiguous(),
            chunkRows, (bool)ctx.get_data("needHidden"), (bool)ctx.get_data("needWeight"));
        foreach (var t in saved) t.Dispose();
        return new List<Tensor> { gradHidden?.view(shape)!, gradWeight, null!, null! };
    }
}
