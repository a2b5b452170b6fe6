using TorchSharp;
using TorchSharp.Modules;
using Microsoft.ML.Orpo.Kernels;
using Microsoft.ML.Orpo.Native;
using Microsoft.ML.Orpo.Ops.Reference;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Ops;

/// <summary>
/// The low-rank update of one frozen projection (PEFT's LoRA layer): <c>Scale * B (A dropout(x))</c>, added to the
/// projection's output by <see cref="Op.Linear(Tensor, Linear, ScalarType?, LoraAdapter?)"/>. A is (r, in), B is
/// (out, r), Scale is alpha / r. Dropout is drawn by <see cref="LoraDropout"/>, which is off outside training steps.
/// </summary>
internal sealed class LoraAdapter : IDisposable
{
    /// <param name="a">(r, in), trained.</param>
    /// <param name="b">(out, r), trained.</param>
    /// <param name="scale">alpha / r.</param>
    /// <param name="dropout">Where the dropout masks come from and with what probability.</param>
    /// <param name="index">This adapter's place among the model's adapters: its masks' stream.</param>
    public LoraAdapter(Parameter a, Parameter b, double scale, LoraDropout dropout, int index)
    {
        if (a.dim() != 2 || b.dim() != 2 || a.shape[0] != b.shape[1])
            throw new ArgumentException($"LoRA A [{string.Join(", ", a.shape)}] and B [{string.Join(", ", b.shape)}] do not share a rank.");
        A = a;
        B = b;
        Scale = scale;
        Dropout = dropout;
        Index = index;
        Rank = (int)a.shape[0];
    }

    public Parameter A { get; }
    public Parameter B { get; }
    public double Scale { get; }
    public LoraDropout Dropout { get; }
    public int Index { get; }
    public int Rank { get; }

    /// <summary>
    /// (..., in) x -> (..., out) <c>Scale * B (A dropout(x))</c>, multiplied in <paramref name="matmulType"/> when given.
    /// Float32 on the CPU (kernels on): <see cref="FusedLoraUpdate"/>, one autograd node that keeps no dropped copy of x.
    /// </summary>
    public Tensor Update(Tensor x, ScalarType? matmulType)
    {
        if (FusedLoraUpdate.Supports(x, this, matmulType)) return FusedLoraUpdate.Apply(x, this);
        using var scope = NewDisposeScope();
        var input = Dropout.Apply(x, Index);
        var down = ReferenceLinear.Forward(input, A, null, matmulType);            // (..., r)
        return ReferenceLinear.Forward(down, B, null, matmulType).mul_(Scale).MoveToOuterDisposeScope(); // (..., out)
    }

    /// <summary>
    /// The dense update <c>Scale * B A</c> (out, in), for merging, in the adapters' type (float32, or float64 in
    /// exactness tests: a float32 product would round a float64 merge).
    /// </summary>
    public Tensor Dense()
    {
        using var noGrad = no_grad();
        return B.matmul(A).mul_(Scale);
    }

    public void Dispose()
    {
        A.Dispose();
        B.Dispose();
    }
}

/// <summary>
/// <see cref="LoraAdapter.Update"/> for float32 CPU tensors as one autograd node: the forward pass drops x
/// (<see cref="HashedDropout"/>) into a temporary, multiplies it by A^T and the scaled (N, r) result by B^T; the backward
/// pass draws the same mask again from the seed. It saves x (which the base projection's node or the layer keeps
/// anyway), A, B and the (N, r) product, where the composed ops kept a dropped copy of x and a float32 mask per adapter,
/// and it skips the scaled copy of the incoming gradient. The (N, r) x (r, out) products and the weight gradients
/// go through <see cref="CpuMatmul"/> (the packed GEMM where it applies); x A^T and dU B, whose outputs are r wide,
/// through libtorch, which measured faster there.
/// </summary>
internal static class FusedLoraUpdate
{
    public static bool Supports(Tensor x, LoraAdapter adapter, ScalarType? matmulType) =>
        (matmulType is null || matmulType == ScalarType.Float32) && x.dtype == ScalarType.Float32 && x.device_type == DeviceType.CPU
        && adapter.A.dtype == ScalarType.Float32 && adapter.A.device_type == DeviceType.CPU && KernelPolicy.Current.Mode == KernelMode.Auto;

    public static Tensor Apply(Tensor x, LoraAdapter adapter)
    {
        long? seed = adapter.Dropout.StreamSeed(adapter.Index);
        if (is_grad_enabled() && (x.requires_grad || adapter.A.requires_grad || adapter.B.requires_grad))
            return LoraUpdateFunction.apply(x, adapter.A, adapter.B, seed!, adapter.Dropout.Probability, adapter.Scale);
        using var scope = NewDisposeScope();
        return Forward(x, adapter.A, adapter.B, seed, adapter.Dropout.Probability, adapter.Scale).Output.MoveToOuterDisposeScope();
    }

    /// <summary>The update (..., out) and the scaled (N, r) product <c>Scale * dropout(x) A^T</c>.</summary>
    internal static (Tensor Output, Tensor Down) Forward(Tensor x, Tensor a, Tensor b, long? seed, double probability, double scale)
    {
        long[] shape = (long[])x.shape.Clone();
        shape[^1] = b.shape[0];
        Tensor down;
        using (var flat = x.reshape(-1, a.shape[1]).contiguous())
        using (var dropped = Dropped(flat, seed, probability))
            down = dropped.mm(a.t()).mul_(scale);                                  // (N, r)
        var output = HostTensors.Empty(shape);                                     // its own tensor: the caller adds into it
        using (var product = output.view(down.shape[0], shape[^1]))
            CpuMatmul.MultiplyInto(product, down, false, b, true, accumulate: false);
        return (output, down);
    }

    /// <summary>x through the mask of <paramref name="seed"/> (a new tensor), or an alias of x without dropout.</summary>
    internal static Tensor Dropped(Tensor x, long? seed, double probability) =>
        seed is long s ? HashedDropout.Masked(x, s, probability) : x.alias();
}

/// <summary>The autograd node behind <see cref="FusedLoraUpdate"/>: saves x, A, B and Scale * dropout(x) A^T.</summary>
internal sealed class LoraUpdateFunction : autograd.SingleTensorFunction<LoraUpdateFunction>
{
    public override string Name => "LoraUpdate";

    public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
    {
        CustomBackward.Starting(ctx);
        var (x, a, b) = ((Tensor)vars[0], (Tensor)vars[1], (Tensor)vars[2]);
        long? seed = (long?)vars[3];
        double probability = (double)vars[4], scale = (double)vars[5];
        using var noGrad = no_grad();
        var (output, down) = FusedLoraUpdate.Forward(x, a, b, seed, probability, scale);
        ctx.save_for_backward(new List<Tensor> { x, a, b, down });
        ctx.save_data("seed", seed!);
        ctx.save_data("probability", probability);
        ctx.save_data("scale", scale);
        ctx.save_data("needsInput", x.requires_grad);
        return output;
    }

    public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor grad_output) => CustomBackward.Run(ctx, grad_output, saved =>
    {
        var (x, a, b, down) = (saved[0], saved[1], saved[2], saved[3]);
        long? seed = (long?)ctx.get_data("seed");
        double probability = (double)ctx.get_data("probability"), scale = (double)ctx.get_data("scale");
        long[] shape = x.shape;
        using var dy = grad_output.reshape(-1, b.shape[0]).contiguous();        // (N, out)
        var gradB = CpuMatmul.Multiply(dy, true, down, false);                  // (out, r): dy^T (Scale * xd A^T)
        using var dDown = dy.mm(b).mul_(scale);                                 // (N, r): Scale * dy B
        Tensor gradA;
        using (var flat = x.reshape(-1, shape[^1]).contiguous())
        using (var dropped = FusedLoraUpdate.Dropped(flat, seed, probability))
            gradA = CpuMatmul.Multiply(dDown, true, dropped, false);            // (r, in)
        Tensor? gradX = null;
        if ((bool)ctx.get_data("needsInput"))
        {
            using var dDropped = CpuMatmul.Multiply(dDown, false, a, false);    // (N, in)
            using var masked = FusedLoraUpdate.Dropped(dDropped, seed, probability);
            gradX = masked.view(shape);
        }
        return new List<Tensor> { gradX!, gradA, gradB, null!, null!, null! };
    });
}
