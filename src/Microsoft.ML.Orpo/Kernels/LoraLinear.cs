using Microsoft.ML.Orpo.Native;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Kernels;

/// <summary>
/// A frozen projection with its LoRA adapter, <c>y = x W^T + b + s ((x * mask) A^T) B^T</c>, for float32 inputs on the
/// CPU with many rows (training, evaluation, prefill), as one autograd node. Composed from tensor ops, each adapter made
/// input- and output-sized temporaries per step: the dropped copy of x (and its mask, kept for the backward pass), the
/// (N, out) update added to y, the (N, in) input gradient added to the base's; at the 0.5B shape those are 40 MB fresh
/// allocations per projection, which cost as much as the base product (benchmarks/README.md, LoRA). Here the update is
/// accumulated into y by the GEMM, x is dropped a chunk of rows at a time into a small scratch buffer (the mask is
/// hashed from the positions, <see cref="HashedDropout"/>; on the AVX-512 path the forward pass keeps it as one bit an
/// element, 1/32 of x, so the backward pass does not hash again), and the input gradient's adapter part is
/// accumulated into the base's the same way. The rank-r products run in <see cref="LoraRankProducts"/> on AVX-512 CPUs
/// (one pass over dy for B's gradient and s dy B, one over x for A's gradient and the input gradient's adapter part),
/// through libtorch a chunk at a time elsewhere. Saved for the backward pass: x, W, A, B and the (N, r) product (r
/// padded to whole vectors on the AVX-512 path). The weight may be stored in bfloat16 (the packed GEMM widens it as it
/// packs it; no float32 copy is made); it gets no gradient.
/// </summary>
internal static class LoraLinear
{
    internal const int ChunkRows = 128;

    public static bool Supports(Tensor x, Tensor weight, Tensor? bias, Tensor a, Tensor b, ScalarType? matmulType)
    {
        if ((matmulType is ScalarType type && type is not (ScalarType.Float32 or ScalarType.BFloat16)) || x.dtype != ScalarType.Float32 || x.device_type != DeviceType.CPU
            || weight.requires_grad || bias?.requires_grad == true || weight.device_type != DeviceType.CPU
            || weight.dtype is not (ScalarType.Float32 or ScalarType.BFloat16)
            || a.dtype != ScalarType.Float32 || b.dtype != ScalarType.Float32 || a.device_type != DeviceType.CPU || b.device_type != DeviceType.CPU)
            return false;
        long[] shape = x.shape;
        long rows = shape.Aggregate(1L, (p, q) => p * q) / shape[^1];
        return rows > KernelThresholds.FewRowsMaxRows && rows * Math.Max(weight.shape[0], weight.shape[1]) <= int.MaxValue / sizeof(float);
    }

    /// <param name="x">(..., in)</param>
    /// <param name="weight">(out, in), frozen, float32 or bfloat16.</param>
    /// <param name="bias">(out), frozen, or null.</param>
    /// <param name="a">(r, in)</param>
    /// <param name="b">(out, r)</param>
    /// <param name="scale">alpha / r.</param>
    /// <param name="seed">The dropout mask's seed, or null: no dropout.</param>
    /// <param name="probability">The dropout probability.</param>
    /// <param name="productType">The type the base products run in (null or float32: float32; bfloat16: libtorch's bf16
    /// products, their results widened to float32). The adapter's products are float32 either way.</param>
    /// <returns>(..., out), float32</returns>
    public static Tensor Apply(Tensor x, Tensor weight, Tensor? bias, Tensor a, Tensor b, double scale, long? seed, double probability,
        ScalarType? productType = null)
    {
        bool bf16 = productType == ScalarType.BFloat16;
        if (is_grad_enabled() && (x.requires_grad || a.requires_grad || b.requires_grad))
            return LoraLinearFunction.apply(x, weight, bias!, a, b, scale, seed!, probability, bf16);
        using var scope = NewDisposeScope();
        var (y, _, _) = Forward(x, weight, bias, a, b, scale, seed, probability, keepMask: false, bf16);
        return y.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// y (..., out), the scaled (N, r) product <c>s (x * mask) A^T</c> ((N, rp), zero past r, on the AVX-512 path) and,
    /// on that path with dropout and <paramref name="keepMask"/>, the mask's bits (N, <see cref="HashedDropout.BitWords"/>(in)) int16.
    /// </summary>
    internal static unsafe (Tensor Y, Tensor Down, Tensor? Mask) Forward(Tensor x, Tensor weight, Tensor? bias, Tensor a, Tensor b, double scale, long? seed,
        double probability, bool keepMask, bool bf16Products)
    {
        long[] shape = (long[])x.shape.Clone();
        long inputs = shape[^1], outputs = weight.shape[0];
        shape[^1] = outputs;
        using var flat = x.reshape(-1, inputs).contiguous();                          // (N, in)
        var y = HostTensors.Empty(shape);                                             // its own tensor: the decoder adds into it
        using var y2 = y.view(flat.shape[0], outputs);                                // (N, out)
        if (bf16Products) BaseProductInBFloat16(y2, flat, weight);
        else CpuMatmul.MultiplyInto(y2, flat, false, weight, true, accumulate: false);
        if (bias is not null)
            using (var b32 = bias.to_type(ScalarType.Float32)) y2.add_(b32);
        if (LoraRankProducts.IsSupported)
        {
            int rank = (int)a.shape[0], padded = LoraRankProducts.Padded(rank);
            var rankDown = HostTensors.Empty(flat.shape[0], padded);                // (N, rp), past r zero
            var mask = keepMask && seed is not null ? empty(flat.shape[0], HashedDropout.BitWords((int)inputs), dtype: ScalarType.Int16) : null;
            using (var at = TransposedPadded(a, padded))                             // (in, rp)
                LoraRankProducts.Down(CpuKernel.Address(flat), (int)flat.shape[0], (int)inputs, CpuKernel.Address(at), padded, CpuKernel.Address(rankDown),
                    (float)scale, seed, probability, CpuKernel.UInt16Address(mask));
            using (var bp = Padded(b, padded))                                       // (out, rp)
                CpuMatmul.MultiplyInto(y2, rankDown, false, bp, true, accumulate: true); // y += s (x * mask) A^T B^T
            return (y, rankDown, mask);
        }
        var down = Down(flat, a, seed, probability).mul_(scale);                       // (N, r)
        CpuMatmul.MultiplyInto(y2, down, false, b, true, accumulate: true);           // y += s (x * mask) A^T B^T
        return (y, down, null);
    }

    /// <summary>y = x W^T multiplied in bfloat16 (libtorch's product), widened into the float32 (N, out) y.</summary>
    private static void BaseProductInBFloat16(Tensor y, Tensor flat, Tensor weight)
    {
        using var scope = NewDisposeScope();
        y.copy_(flat.to_type(ScalarType.BFloat16).mm(weight.to_type(ScalarType.BFloat16).t()));
    }

    /// <summary>(N, out) dy -> (N, in) float32 dy W, multiplied in bfloat16 when <paramref name="bf16Products"/>.</summary>
    internal static Tensor InputGradientOfBase(Tensor dy, Tensor weight, bool bf16Products)
    {
        if (!bf16Products) return CpuMatmul.Multiply(dy, false, weight, false);
        var result = HostTensors.Empty(dy.shape[0], weight.shape[1]);
        using var scope = NewDisposeScope();
        result.copy_(dy.to_type(ScalarType.BFloat16).mm(weight.to_type(ScalarType.BFloat16)));
        return result;
    }

    /// <summary>(out, r) -> (out, rp) with zero columns past r; B itself when r is already whole vectors.</summary>
    internal static Tensor Padded(Tensor b, int padded)
    {
        if (b.shape[1] == padded) return b.contiguous();
        var result = zeros(b.shape[0], padded);
        result.narrow(1, 0, b.shape[1]).copy_(b);
        return result;
    }

    /// <summary>(r, in) -> A^T as (in, rp) with zero columns past r.</summary>
    private static Tensor TransposedPadded(Tensor a, int padded)
    {
        var result = padded == a.shape[0] ? HostTensors.Empty(a.shape[1], padded) : zeros(a.shape[1], padded);
        using var columns = result.narrow(1, 0, a.shape[0]);
        columns.copy_(a.t());
        return result;
    }

    /// <summary>(x * mask) A^T (N, r), x dropped a chunk of rows at a time.</summary>
    private static Tensor Down(Tensor flat, Tensor a, long? seed, double probability)
    {
        if (seed is not long s) return flat.mm(a.t());
        long rows = flat.shape[0], inputs = flat.shape[1];
        var down = HostTensors.Empty(rows, a.shape[0]);
        using var scratch = HostTensors.Empty(Math.Min(ChunkRows, rows), inputs);
        for (long start = 0; start < rows; start += ChunkRows)
        {
            long count = Math.Min(ChunkRows, rows - start);
            using var dropped = Dropped(flat, scratch, start, count, s, probability);
            using var part = dropped.mm(a.t());
            using var target = down.narrow(0, start, count);
            target.copy_(part);
        }
        return down;
    }

    /// <summary>Rows [start, start + count) of x through the mask, in the scratch buffer (a view of it is returned).</summary>
    internal static Tensor Dropped(Tensor flat, Tensor scratch, long start, long count, long seed, double probability)
    {
        int width = (int)flat.shape[1];
        CpuKernel.ForEachBlock((int)count, row =>
        {
            long first = (start + row) * width;
            HashedDropout.MaskRows(CpuKernel.Floats(flat).Slice((int)first, width), CpuKernel.Floats(scratch).Slice(row * width, width),
                first, seed, probability, accumulate: false);
        });
        return scratch.narrow(0, 0, count);
    }
}

/// <summary>The autograd node behind <see cref="LoraLinear"/>: saves x, W, A, B, s (x * mask) A^T and, where kept, the mask's bits.</summary>
internal sealed class LoraLinearFunction : autograd.SingleTensorFunction<LoraLinearFunction>
{
    public override string Name => "LoraLinear";

    public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
    {
        CustomBackward.Starting(ctx);
        var (x, weight, bias, a, b) = ((Tensor)vars[0], (Tensor)vars[1], (Tensor?)vars[2], (Tensor)vars[3], (Tensor)vars[4]);
        double scale = (double)vars[5], probability = (double)vars[7];
        long? seed = (long?)vars[6];
        bool bf16 = (bool)vars[8];
        using var noGrad = no_grad();
        var (y, down, mask) = LoraLinear.Forward(x, weight, bias, a, b, scale, seed, probability, keepMask: true, bf16);
        ctx.save_for_backward(mask is null ? new List<Tensor> { x, weight, a, b, down } : new List<Tensor> { x, weight, a, b, down, mask });
        ctx.save_data("seed", seed!);
        ctx.save_data("probability", probability);
        ctx.save_data("scale", scale);
        ctx.save_data("bf16", bf16);
        ctx.save_data("needs", new[] { x.requires_grad, a.requires_grad, b.requires_grad });
        return y;
    }

    public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor grad_output) => CustomBackward.Run(ctx, grad_output, saved =>
    {
        var (x, weight, a, b, down) = (saved[0], saved[1], saved[2], saved[3], saved[4]);
        long? seed = (long?)ctx.get_data("seed");
        double probability = (double)ctx.get_data("probability"), scale = (double)ctx.get_data("scale");
        var needs = (bool[])ctx.get_data("needs");
        bool bf16 = (bool)ctx.get_data("bf16");
        long[] shape = x.shape;
        long inputs = shape[^1], outputs = weight.shape[0];
        using var dy = grad_output.reshape(-1, outputs).contiguous();             // (N, out)
        using var flat = x.reshape(-1, inputs).contiguous();                      // (N, in)
        long rows = flat.shape[0];
        if (LoraRankProducts.IsSupported)
            return RankBackward(dy, flat, weight, a, b, down, saved.Count > 5 ? saved[5] : null, scale, seed, probability, needs, shape, bf16);
        Tensor? gradB = needs[2] ? CpuMatmul.Multiply(dy, true, down, false) : null; // (out, r) = dy^T s (x * mask) A^T
        using var dDown = dy.mm(b).mul_(scale);                                   // (N, r) = s dy B
        Tensor? gradX = null, gradA = null;
        if (needs[0]) gradX = LoraLinear.InputGradientOfBase(dy, weight, bf16); // (N, in) = dy W
        if (seed is not long s)
        {
            if (needs[1]) gradA = CpuMatmul.Multiply(dDown, true, flat, false);   // (r, in) = dDown^T x
            if (gradX is not null) CpuMatmul.MultiplyInto(gradX, dDown, false, a, false, accumulate: true); // += dDown A
        }
        else
        {
            if (needs[1]) gradA = zeros(a.shape[0], inputs);
            using var scratch = HostTensors.Empty(Math.Min(LoraLinear.ChunkRows, rows), inputs);
            for (long start = 0; start < rows; start += LoraLinear.ChunkRows)
            {
                long count = Math.Min(LoraLinear.ChunkRows, rows - start);
                using var dDownRows = dDown.narrow(0, start, count);
                if (gradA is not null)
                    using (var dropped = LoraLinear.Dropped(flat, scratch, start, count, s, probability))
                        gradA.addmm_(dDownRows.t(), dropped);                     // += dDown_rows^T (x_rows * mask)
                if (gradX is null) continue;
                using var part = dDownRows.mm(a);                                 // (count, in)
                int width = (int)inputs;
                CpuKernel.ForEachBlock((int)count, row =>
                {
                    long first = (start + row) * width;
                    HashedDropout.MaskRows(CpuKernel.Floats(part).Slice(row * width, width), CpuKernel.Floats(gradX).Slice((int)first, width),
                        first, s, probability, accumulate: true);                // gradX += mask * (dDown A)
                });
            }
        }
        return new List<Tensor> { gradX?.view(shape)!, null!, null!, gradA!, gradB!, null!, null!, null!, null! };
    });

    /// <summary>The backward pass with <see cref="LoraRankProducts"/>: down is (N, rp); mask the forward pass's bits, or null.</summary>
    private static unsafe List<Tensor> RankBackward(Tensor dy, Tensor flat, Tensor weight, Tensor a, Tensor b, Tensor down, Tensor? mask, double scale,
        long? seed, double probability, bool[] needs, long[] shape, bool bf16Products)
    {
        int rows = (int)flat.shape[0], inputs = (int)flat.shape[1], outputs = (int)dy.shape[1], rank = (int)a.shape[0], padded = (int)down.shape[1];
        using var bp = LoraLinear.Padded(b, padded);
        using var dDown = HostTensors.Empty(rows, padded);                          // (N, rp) = s dy B
        var gradB = HostTensors.Empty(outputs, rank);                               // (out, r) = dy^T s (x * mask) A^T
        LoraRankProducts.DownGradients(CpuKernel.Address(dy), rows, outputs, CpuKernel.Address(bp), CpuKernel.Address(down), padded, (float)scale,
            CpuKernel.Address(dDown), CpuKernel.Address(gradB), rank);
        var gradX = needs[0] ? LoraLinear.InputGradientOfBase(dy, weight, bf16Products) : null; // (N, in) = dy W, then += mask * (dDown A)
        var gradA = needs[1] ? HostTensors.Empty(rank, inputs) : null;              // (r, in) = dDown^T (x * mask)
        using var aRows = a.contiguous();
        if (gradA is not null || gradX is not null)
            LoraRankProducts.InputGradients(CpuKernel.Address(flat), rows, inputs, CpuKernel.Address(dDown), padded, CpuKernel.Address(aRows), rank,
                seed, probability, CpuKernel.Address(gradA), CpuKernel.Address(gradX), CpuKernel.UInt16Address(mask));
        if (!needs[2]) { gradB.Dispose(); gradB = null; }
        return new List<Tensor> { gradX?.view(shape)!, null!, null!, gradA!, gradB!, null!, null!, null!, null! };
    }
}
