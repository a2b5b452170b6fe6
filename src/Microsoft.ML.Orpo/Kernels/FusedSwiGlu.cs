using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.InteropServices;
using TorchSharp;
using TorchSharp.Modules;
using Microsoft.ML.Orpo.Native;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Microsoft.ML.Orpo.Kernels;

/// <summary>
/// The SwiGLU tail <c>down(silu(gate) * up)</c> for float32 CPU tensors, keeping only gate and up for the backward
/// pass. Composed from tensor ops, autograd keeps silu(gate) (for the product's gradient) and the product (for
/// down's weight gradient) as well: two more (tokens x MLP width) tensors per layer, about a quarter of a decoder
/// layer's saved activations. The backward pass recomputes the product in one pass and writes both input gradients
/// in another. Elementwise work is split into fixed chunks, so results do not depend on the thread count.
/// </summary>
internal static class FusedSwiGlu
{
    private const int ChunkElements = 1 << 14;

    /// <summary>Whether <see cref="Apply"/> takes these inputs: <see cref="SupportsProduct"/> and a float32 CPU down projection.</summary>
    public static bool Supports(Tensor gate, Tensor up, Linear down) => SupportsProduct(gate, up) && SupportsProjection(down);

    /// <summary>Whether <see cref="Product"/> and <see cref="ProductWithGradient"/> take these inputs: float32 CPU gate and up of one shape.</summary>
    public static bool SupportsProduct(Tensor gate, Tensor up)
    {
        if (gate.device_type != DeviceType.CPU || gate.dtype != ScalarType.Float32 || up.dtype != ScalarType.Float32 || up.device_type != DeviceType.CPU)
            return false;
        long[] shape = gate.shape; // read once: it runs per layer and decoded token
        long elements = shape.Aggregate(1L, (a, b) => a * b);
        return elements > 0 && elements <= int.MaxValue / 4 && shape.SequenceEqual(up.shape);
    }

    /// <summary>Whether the fused node can multiply by this down projection: float32 weight and bias on the CPU.</summary>
    public static bool SupportsProjection(Linear down) =>
        down.weight is { } w && w.dtype == ScalarType.Float32 && w.device_type == DeviceType.CPU
        && (down.bias is null || down.bias.dtype == ScalarType.Float32);

    /// <summary>
    /// (..., I) gate and up -> (..., D) <c>down(silu(gate) * up)</c> as one autograd node, for inputs that need
    /// gradients (callers without gradients multiply <see cref="Product"/> by down themselves: no node to set up).
    /// </summary>
    public static Tensor Apply(Tensor gate, Tensor up, Linear down) => SwiGluDownFunction.apply(gate, up, down.weight!, down.bias!);

    /// <summary>
    /// silu(gate) * up as one autograd node that saves gate and up only (composed from tensor ops, autograd would keep
    /// silu(gate) too): for a down projection with a LoRA adapter, which needs the product itself.
    /// </summary>
    public static Tensor ProductWithGradient(Tensor gate, Tensor up) =>
        is_grad_enabled() && (gate.requires_grad || up.requires_grad) ? SwiGluProductFunction.apply(gate, up) : Product(gate, up);

    /// <summary>silu(gate) * up as a new contiguous tensor of gate's shape.</summary>
    public static Tensor Product(Tensor gate, Tensor up)
    {
        using var g = gate.contiguous();
        using var u = up.contiguous();
        var product = HostTensors.EmptyLike(g);
        ForEachChunk((int)g.numel(), (start, length) => ProductChunk(Floats(g, start, length), Floats(u, start, length), Floats(product, start, length)));
        return product;
    }

    /// <summary>
    /// With p the product's gradient, in place: p becomes gate's gradient <c>p * up * silu'(gate)</c> and
    /// <paramref name="productThenUpGradient"/> (holding silu(gate) * up or anything else) becomes up's gradient
    /// <c>p * silu(gate)</c>. silu'(g) = s (1 + g (1 - s)) with s the logistic sigmoid of g.
    /// </summary>
    public static void Gradients(Tensor gate, Tensor up, Tensor productGradientThenGateGradient, Tensor productThenUpGradient)
    {
        ForEachChunk((int)gate.numel(), (start, length) => GradientChunk(Floats(gate, start, length), Floats(up, start, length),
            Floats(productGradientThenGateGradient, start, length), Floats(productThenUpGradient, start, length)));
    }

    private static Span<float> Floats(Tensor t, int start, int length) => CpuKernel.Floats(t).Slice(start, length);

    private static void ForEachChunk(int elements, Action<int, int> chunk) =>
        CpuKernel.ForEachBlock((elements + ChunkElements - 1) / ChunkElements,
            c => chunk(c * ChunkElements, Math.Min(ChunkElements, elements - c * ChunkElements)));

    /// <summary>sigmoid(g) from e^-|g| (never overflows): 1 / (1 + e) for g &gt;= 0, e / (1 + e) below.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector<float> Sigmoid(Vector<float> g)
    {
        var e = VectorMath.Exp(-Vector.Abs(g));
        var inverse = Vector<float>.One / (Vector<float>.One + e);
        return Vector.ConditionalSelect(Vector.GreaterThanOrEqual(g, Vector<float>.Zero), inverse, e * inverse);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Sigmoid(Vector512<float> g)
    {
        var e = VectorMath.Exp(-Vector512.Abs(g));
        var inverse = Vector512<float>.One / (Vector512<float>.One + e);
        return Vector512.ConditionalSelect(Vector512.GreaterThanOrEqual(g, Vector512<float>.Zero), inverse, e * inverse);
    }

    private static float Sigmoid(float g)
    {
        float e = MathF.Exp(-MathF.Abs(g)), inverse = 1f / (1f + e);
        return g >= 0 ? inverse : e * inverse;
    }

    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)] // hot from the first call: skip the unoptimised tier
    private static void ProductChunk(ReadOnlySpan<float> gate, ReadOnlySpan<float> up, Span<float> product)
    {
        int i = 0, n = Vector<float>.Count;
        if (Vector512.IsHardwareAccelerated) // the same operations 16 lanes at a time (Vector<T> is 256 bits there)
            for (; i + 16 <= gate.Length; i += 16)
            {
                var g = Vector512.Create(gate.Slice(i, 16));
                (g * Sigmoid(g) * Vector512.Create(up.Slice(i, 16))).CopyTo(product.Slice(i, 16));
            }
        for (; i + n <= gate.Length; i += n)
        {
            var g = new Vector<float>(gate.Slice(i, n));
            (g * Sigmoid(g) * new Vector<float>(up.Slice(i, n))).CopyTo(product.Slice(i, n));
        }
        for (; i < gate.Length; i++) product[i] = gate[i] * Sigmoid(gate[i]) * up[i];
    }

    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static void GradientChunk(ReadOnlySpan<float> gate, ReadOnlySpan<float> up, Span<float> productGradientThenGateGradient,
        Span<float> upGradient)
    {
        int i = 0, n = Vector<float>.Count;
        if (Vector512.IsHardwareAccelerated)
            for (; i + 16 <= gate.Length; i += 16)
            {
                var g = Vector512.Create(gate.Slice(i, 16));
                var s = Sigmoid(g);
                var dp = Vector512.Create((ReadOnlySpan<float>)productGradientThenGateGradient.Slice(i, 16));
                (dp * g * s).CopyTo(upGradient.Slice(i, 16));
                (dp * Vector512.Create(up.Slice(i, 16)) * s * (Vector512<float>.One + g * (Vector512<float>.One - s)))
                    .CopyTo(productGradientThenGateGradient.Slice(i, 16));
            }
        for (; i + n <= gate.Length; i += n)
        {
            var g = new Vector<float>(gate.Slice(i, n));
            var s = Sigmoid(g);
            var dp = new Vector<float>(productGradientThenGateGradient.Slice(i, n));
            (dp * g * s).CopyTo(upGradient.Slice(i, n));
            (dp * new Vector<float>(up.Slice(i, n)) * s * (Vector<float>.One + g * (Vector<float>.One - s))).CopyTo(productGradientThenGateGradient.Slice(i, n));
        }
        for (; i < gate.Length; i++)
        {
            float g = gate[i], s = Sigmoid(g), dp = productGradientThenGateGradient[i];
            upGradient[i] = dp * g * s;
            productGradientThenGateGradient[i] = dp * up[i] * s * (1 + g * (1 - s));
        }
    }
}

/// <summary>The autograd node behind <see cref="FusedSwiGlu.Apply"/>: saves gate, up and down's weight, nothing else.</summary>
internal sealed class SwiGluDownFunction : autograd.SingleTensorFunction<SwiGluDownFunction>
{
    public override string Name => "FusedSwiGluDown";

    public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
    {
        CustomBackward.Starting(ctx);
        var gate = ((Tensor)vars[0]).contiguous();
        var up = ((Tensor)vars[1]).contiguous();
        var weight = (Tensor)vars[2];
        var bias = (Tensor?)vars[3];
        ctx.save_for_backward(new List<Tensor> { gate, up, weight });
        ctx.save_data("needs", new[] { gate.requires_grad, up.requires_grad, weight.requires_grad, bias?.requires_grad == true });
        using var noGrad = no_grad();
        using var product = FusedSwiGlu.Product(gate, up);
        return PackedLinear.TryApply(product, weight, bias) ?? F.linear(product, weight, bias);
    }

    public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor grad_output) => CustomBackward.Run(ctx, grad_output, saved =>
    {
        var (gate, up, weight) = (saved[0], saved[1], saved[2]);
        var needs = (bool[])ctx.get_data("needs");
        long width = gate.shape[^1], outputs = weight.shape[0];
        using var dy = grad_output.reshape(-1, outputs).contiguous();             // (N, D)
        using var w = weight.contiguous();
        var product = FusedSwiGlu.Product(gate, up);                              // (..., I), recomputed
        Tensor? weightGradient = null, biasGradient = null, gateGradient = null, upGradient = null;
        if (needs[2])
            using (var flat = product.view(-1, width))
                weightGradient = CpuMatmul.Multiply(dy, true, flat, false);       // (D, I)
        if (needs[3]) biasGradient = dy.sum(dim: 0);                                // (D)
        if (needs[0] || needs[1])
        {
            using var flatGradient = CpuMatmul.Multiply(dy, false, w, false);     // (N, I)
            var productGradient = flatGradient.view(gate.shape);                  // (..., I)
            FusedSwiGlu.Gradients(gate, up, productGradient, product);
            (gateGradient, upGradient) = (productGradient, product);
        }
        else product.Dispose();
        return new List<Tensor> { gateGradient!, upGradient!, weightGradient!, biasGradient! };
    });
}

/// <summary>The autograd node behind <see cref="FusedSwiGlu.ProductWithGradient"/>: saves gate and up.</summary>
internal sealed class SwiGluProductFunction : autograd.SingleTensorFunction<SwiGluProductFunction>
{
    public override string Name => "FusedSwiGluProduct";

    public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
    {
        CustomBackward.Starting(ctx);
        var gate = ((Tensor)vars[0]).contiguous();
        var up = ((Tensor)vars[1]).contiguous();
        ctx.save_for_backward(new List<Tensor> { gate, up });
        using var noGrad = no_grad();
        return FusedSwiGlu.Product(gate, up);
    }

    public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor grad_output) => CustomBackward.Run(ctx, grad_output, saved =>
    {
        var (gate, up) = (saved[0], saved[1]);
        var gateGradient = grad_output.contiguous().clone();                     // (..., I), becomes gate's gradient
        var upGradient = HostTensors.EmptyLike(gate);                               // (..., I), becomes up's gradient
        FusedSwiGlu.Gradients(gate, up, gateGradient, upGradient);
        return new List<Tensor> { gateGradient, upGradient };
    });
}
