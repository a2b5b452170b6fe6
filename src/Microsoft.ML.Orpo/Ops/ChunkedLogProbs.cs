using Microsoft.ML.Orpo.Kernels;
using Microsoft.ML.Orpo.Native;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Ops;

/// <summary>
/// log p(target) = logit[target] - logsumexp(logits) for hidden states and an LM-head matrix, computed a chunk of
/// rows at a time so the full (N x V) logits never exist. The backward pass recomputes each chunk's logits and
/// applies d/dlogits = g * (onehot(target) - softmax(logits)) directly, so autograd keeps only the hidden states,
/// the weight and the targets (the plain path keeps the logits, and its backward builds two more N x V tensors).
/// With a matmul type (mixed precision), the three products per chunk (logits, hidden gradient, weight gradient) run
/// in it, while logsumexp, softmax and the gradient accumulators stay in the inputs' type (float32): each chunk's
/// bfloat16 weight-gradient product is added into a float32 sum.
/// </summary>
internal static class ChunkedLogProbs
{
    /// <summary>
    /// (..., D) hidden, (V, D) weight, (...) int64 targets -> (...) log-probabilities in the hidden states' type;
    /// <paramref name="matmulType"/> (null: no cast) is the type the LM-head products run in.
    /// </summary>
    public static Tensor Compute(Tensor hidden, Tensor weight, Tensor targets, int chunkRows, ScalarType? matmulType = null)
    {
        if (chunkRows <= 0) throw new ArgumentOutOfRangeException(nameof(chunkRows), chunkRows, "must be > 0.");
        return ChunkedLogProbsFunction.apply(hidden, weight, targets, chunkRows, matmulType ?? hidden.dtype);
    }

    /// <summary>
    /// Forward values only: (N, D), (V, D), (N) -> (N) in <paramref name="resultType"/>; hidden and weight are already
    /// in the matmul type, each chunk's logits are widened to <paramref name="resultType"/> before logsumexp.
    /// </summary>
    internal static Tensor Values(Tensor hidden, Tensor weight, Tensor targets, int chunkRows, ScalarType resultType)
    {
        long n = hidden.shape[0];
        var result = empty(n, resultType, hidden.device);
        for (long start = 0; start < n; start += chunkRows)
        {
            using var scope = NewDisposeScope();
            long rows = Math.Min(chunkRows, n - start);
            var logits = CpuMatmul.Multiply(hidden.narrow(0, start, rows), false, weight, true).to_type(resultType); // (c, V)
            var picked = logits.gather(1, targets.narrow(0, start, rows).unsqueeze(1)).squeeze(1);
            result.narrow(0, start, rows).copy_(picked - logits.logsumexp(1));
        }
        return result;
    }

    /// <summary>
    /// Gradients for hidden (N, D) and weight (V, D) from the upstream gradient (N), in <paramref name="hiddenType"/>
    /// and <paramref name="weightType"/>. Hidden and weight are in the matmul type; softmax and the one-hot update
    /// run in the upstream gradient's type, and the weight gradient is summed over chunks in <paramref name="weightType"/>.
    /// </summary>
    internal static (Tensor Hidden, Tensor Weight) Gradients(Tensor hidden, Tensor weight, Tensor targets, Tensor upstream,
        int chunkRows, bool needHidden, bool needWeight, ScalarType hiddenType, ScalarType weightType)
    {
        long n = hidden.shape[0];
        var matmulType = hidden.dtype;
        bool sameType = matmulType == upstream.dtype && matmulType == weightType;
        var gradHidden = needHidden ? empty(hidden.shape, hiddenType, hidden.device) : null;
        var gradWeight = needWeight ? zeros(weight.shape, weightType, weight.device) : null;
        for (long start = 0; start < n; start += chunkRows)
        {
            using var scope = NewDisposeScope();
            long rows = Math.Min(chunkRows, n - start);
            var h = hidden.narrow(0, start, rows);
            var g = upstream.narrow(0, start, rows).unsqueeze(1);                             // (c, 1)
            var logits = h.matmul(weight.t()).to_type(upstream.dtype);                        // (c, V)
            var dLogits = logits.softmax(1).mul_(g.neg());                                    // -g * softmax
            dLogits.scatter_add_(1, targets.narrow(0, start, rows).unsqueeze(1), g);          // + g * onehot
            var d = dLogits.to_type(matmulType);
            gradHidden?.narrow(0, start, rows).copy_(d.matmul(weight));
            if (gradWeight is null) continue;
            if (sameType) gradWeight.addmm_(d.t(), h);
            else gradWeight.add_(d.t().matmul(h));                                            // chunk product, summed in weightType
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
        CustomBackward.Starting(ctx);
        var hidden = (Tensor)vars[0];
        var weight = (Tensor)vars[1];
        var targets = (Tensor)vars[2];
        int chunkRows = (int)vars[3];
        var matmulType = (ScalarType)vars[4];
        long d = hidden.shape[^1];
        // Cast once per call, not per chunk; the matmul-type copies are what the backward multiplies with.
        var flatHidden = hidden.reshape(-1, d).to_type(matmulType);
        var matmulWeight = weight.to_type(matmulType);
        var flatTargets = targets.reshape(-1);
        ctx.save_for_backward(new List<Tensor> { flatHidden, matmulWeight, flatTargets });
        ctx.save_data("chunk", chunkRows);
        ctx.save_data("shape", hidden.shape);
        ctx.save_data("hiddenType", hidden.dtype);
        ctx.save_data("weightType", weight.dtype);
        ctx.save_data("needHidden", hidden.requires_grad);
        ctx.save_data("needWeight", weight.requires_grad);
        return ChunkedLogProbs.Values(flatHidden, matmulWeight, flatTargets, chunkRows, hidden.dtype).view(targets.shape);
    }

    public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor grad_output) => CustomBackward.Run(ctx, grad_output, saved =>
    {
        var (hidden, weight, targets) = (saved[0], saved[1], saved[2]);
        int chunkRows = (int)ctx.get_data("chunk");
        var shape = (long[])ctx.get_data("shape");
        var (gradHidden, gradWeight) = ChunkedLogProbs.Gradients(hidden, weight, targets, grad_output.reshape(-1).contiguous(),
            chunkRows, (bool)ctx.get_data("needHidden"), (bool)ctx.get_data("needWeight"),
            (ScalarType)ctx.get_data("hiddenType"), (ScalarType)ctx.get_data("weightType"));
        return new List<Tensor> { gradHidden?.view(shape)!, gradWeight, null!, null!, null! };
    });
}
