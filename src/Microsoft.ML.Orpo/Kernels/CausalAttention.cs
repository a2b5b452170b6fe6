using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using TorchSharp;
using Microsoft.ML.Orpo.Native;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Kernels;

/// <summary>
/// Rotary embedding plus causal grouped-query self-attention for float32 CPU tensors with small heads
/// (head_dim &lt;= <see cref="KernelThresholds.SmallHeadMaxDim"/>), forward and backward written out over the tensors' memory. libtorch's CPU
/// flash-attention kernel splits such heads into many tiny matrix products (a 64 x 8 by 8 x 256 product per block)
/// whose BLAS call overhead dominates: at stories260K's shape (8 rows, 8 heads, 256 tokens, head_dim 8) its backward
/// dwarfed its forward and attention took most of a training step. Here each query row is one vectorised sweep over its
/// causal keys: no masked half, no repeated key/value heads (a query head reads its group's key/value head), no
/// probability matrix kept for the backward (it is recomputed from the saved log-sum-exp, as flash attention does).
/// Accumulation is float32, like libtorch's kernel; results do not depend on the thread count (each
/// (batch, key/value head) unit writes only its own rows).
/// (benchmarks/README.md, "Measurements behind the code: CausalAttention")
/// </summary>
internal static partial class CausalAttention
{
    /// <summary>
    /// Whether <see cref="Apply"/> handles these (B, H, T, d) queries, (B, K, T, d) keys/values and (B, 1, T, d) rotary
    /// cos/sin: float32 on the CPU, heads up to <see cref="KernelThresholds.SmallHeadMaxDim"/> wide.
    /// </summary>
    public static bool Supports(Tensor q, Tensor k, Tensor v, Tensor cos) =>
        q.device_type == DeviceType.CPU && q.dtype == ScalarType.Float32 && k.dtype == ScalarType.Float32
        && v.dtype == ScalarType.Float32 && cos.dtype == ScalarType.Float32 && q.dim() == 4 && q.shape[2] > 0
        && q.shape[3] <= KernelThresholds.SmallHeadMaxDim && q.shape[3] % 2 == 0 && q.shape[1] % k.shape[1] == 0
        && cos.shape.SequenceEqual(new[] { q.shape[0], 1, q.shape[2], q.shape[3] })
        && q.numel() <= int.MaxValue / 4 && k.numel() <= int.MaxValue / 4;

    /// <summary>
    /// Rotary embedding and causal attention: softmax(rope(q) rope(k)^T / sqrt(d) + causal) v, query head h reading
    /// key/value head h / (H / K). (B, H, T, d) queries and (B, K, T, d) keys before rotation, (B, K, T, d) values,
    /// (B, 1, T, d) cos and sin -> (B, T, H * d), the layout the output projection reads.
    /// </summary>
    public static Tensor Apply(Tensor q, Tensor k, Tensor v, Tensor cos, Tensor sin)
    {
        if (is_grad_enabled() && (q.requires_grad || k.requires_grad || v.requires_grad))
            return CausalAttentionFunction.apply(q, k, v, cos, sin);
        using var scope = NewDisposeScope(); // nothing to differentiate: no autograd node, nothing saved
        var (_, _, o, _) = ForwardWithRotation(q, k, v.contiguous(), cos.contiguous(), sin.contiguous());
        return o.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Rotates q and k, then attends (v, cos, sin contiguous): the rotated q and k, the output (B, T, H * d) and the
    /// log-sum-exp (B, H, T).
    /// </summary>
    internal static (Tensor RotatedQ, Tensor RotatedK, Tensor Output, Tensor LogSumExp) ForwardWithRotation(
        Tensor q, Tensor k, Tensor v, Tensor cos, Tensor sin)
    {
        long b = q.shape[0], h = q.shape[1], t = q.shape[2], d = q.shape[3];
        var rotatedQ = HostTensors.Empty(q.shape);
        var rotatedK = HostTensors.Empty(k.shape);
        RotateInto(q, rotatedQ, cos, sin);
        RotateInto(k, rotatedK, cos, sin);
        var o = HostTensors.Empty(b, t, h * d);
        var lse = empty(new[] { b, h, t }, ScalarType.Float32, q.device);
        Forward(rotatedQ, rotatedK, v, o, lse);
        return (rotatedQ, rotatedK, o, lse);
    }

    /// <summary>Shapes of one call.</summary>
    internal readonly record struct Geometry(int Batch, int Heads, int KvHeads, int Length, int HeadDim)
    {
        public int Groups => Heads / KvHeads;
        public int Units => Batch * KvHeads;
        /// <summary>Head dimensions rounded up to whole blocks of <see cref="Block"/>; the padding dimensions are zero.</summary>
        public int PaddedDim => (HeadDim + Block - 1) / Block * Block;
        /// <summary>Length rounded up to whole vectors: the transposed key/value rows are this long.</summary>
        public int PaddedLength => (Length + Vector<float>.Count - 1) / Vector<float>.Count * Vector<float>.Count;
        public float Scale => (float)(1.0 / Math.Sqrt(HeadDim));

        public static Geometry Of(Tensor q, Tensor k) =>
            new((int)q.shape[0], (int)q.shape[1], (int)k.shape[1], (int)q.shape[2], (int)q.shape[3]);
    }

    /// <summary>Head dimensions are processed this many at a time, each held in a register across a sweep over keys.</summary>
    private const int Block = 8;

    /// <summary>
    /// Per-worker scratch: keys and values transposed to (padded d, padded T) rows (so one query's scores are
    /// vector sweeps along the keys), their gradients, per-row buffers, and the current query row. Kept per thread
    /// for the next call of the same shape (every layer of a step): the padding is never written, so it stays zero.
    /// </summary>
    private sealed class Scratch
    {
        [ThreadStatic] private static Scratch? forwardCache, backwardCache;

        public static Scratch For(Geometry g, bool backward)
        {
            var cached = backward ? backwardCache : forwardCache;
            if (cached is not null && cached.HeadDim == g.HeadDim && cached.Length == g.Length) return cached;
            cached = new Scratch(g, backward);
            if (backward) backwardCache = cached;
            else forwardCache = cached;
            return cached;
        }

        private int HeadDim { get; }
        private int Length { get; }

        private Scratch(Geometry g, bool backward)
        {
            HeadDim = g.HeadDim;
            Length = g.Length;
            int size = g.PaddedDim * g.PaddedLength;
            KeysT = new float[size];
            ValuesT = new float[size];
            Scores = new float[g.PaddedLength];
            Row = new float[g.PaddedDim];
            Upstream = new float[g.PaddedDim];
            Sums = new float[g.PaddedDim];
            if (!backward) return;
            KeyGradT = new float[size];
            ValueGradT = new float[size];
            Probabilities = new float[g.PaddedLength];
        }

        public float[] KeysT { get; }
        public float[] ValuesT { get; }
        public float[] Scores { get; }
        public float[] Row { get; }
        public float[] Upstream { get; }
        public float[] Sums { get; }
        public float[] KeyGradT { get; } = Array.Empty<float>();
        public float[] ValueGradT { get; } = Array.Empty<float>();
        public float[] Probabilities { get; } = Array.Empty<float>();
    }

    private static Span<float> Floats(Tensor t) => CpuKernel.Floats(t);

    /// <summary>Runs <paramref name="unit"/> for every (batch, key/value head) on up to torch's intra-op thread count.</summary>
    private static void ForEachUnit(Geometry g, bool backward, Action<int, Scratch> unit)
    {
        int threads = Math.Min(get_num_threads(), g.Units);
        if (threads <= 1)
        {
            var scratch = Scratch.For(g, backward);
            for (int u = 0; u < g.Units; u++) unit(u, scratch);
            return;
        }
        Parallel.For(0, g.Units, new ParallelOptions { MaxDegreeOfParallelism = threads },
            () => Scratch.For(g, backward), (u, _, scratch) => { unit(u, scratch); return scratch; }, _ => { });
    }

    /// <summary>Copies unit (b, kv)'s (T, d) rows into (d, T) rows of stride PaddedLength; padding stays zero.</summary>
    private static void Transpose(ReadOnlySpan<float> source, int offset, float[] target, Geometry g)
    {
        int d = g.HeadDim, tp = g.PaddedLength;
        for (int j = 0; j < g.Length; j++)
            for (int c = 0; c < d; c++)
                target[c * tp + j] = source[offset + j * d + c];
    }

    /// <summary>
    /// Forward over contiguous q (B, H, T, d), k, v (B, K, T, d): writes o (B, T, H, d) and the per-row log-sum-exp
    /// of the scaled scores (B, H, T), which the backward uses to recompute the probabilities.
    /// </summary>
    public static void Forward(Tensor q, Tensor k, Tensor v, Tensor o, Tensor lse)
    {
        var g = Geometry.Of(q, k);
        ForEachUnit(g, backward: false, (unit, scratch) => ForwardUnit(g, unit, scratch, Floats(q), Floats(k), Floats(v), Floats(o), Floats(lse)));
    }

    /// <summary>
    /// Backward: from the forward's inputs, output o (B, T, H, d), log-sum-exp (B, H, T) and the output gradient
    /// (B, T, H, d), writes dq (B, H, T, d), dk and dv (B, K, T, d), each summed over the query heads of its group.
    /// </summary>
    public static void Backward(Tensor q, Tensor k, Tensor v, Tensor o, Tensor lse, Tensor gradOutput, Tensor dq, Tensor dk, Tensor dv)
    {
        var g = Geometry.Of(q, k);
        ForEachUnit(g, backward: true, (unit, scratch) => BackwardUnit(g, unit, scratch, Floats(q), Floats(k), Floats(v), Floats(o),
            Floats(lse), Floats(gradOutput), Floats(dq), Floats(dk), Floats(dv)));
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // hot from the first call: skip the unoptimised tier
    private static void ForwardUnit(Geometry g, int unit, Scratch scratch, ReadOnlySpan<float> q, ReadOnlySpan<float> k,
        ReadOnlySpan<float> v, Span<float> o, Span<float> lse)
    {
        int b = unit / g.KvHeads, kv = unit % g.KvHeads, d = g.HeadDim, dp = g.PaddedDim, t = g.Length, w = Vector<float>.Count;
        nuint stride = (nuint)g.PaddedLength;
        int kvOffset = (b * g.KvHeads + kv) * t * d;
        Transpose(k, kvOffset, scratch.KeysT, g);
        Transpose(v, kvOffset, scratch.ValuesT, g);
        ref float keys = ref MemoryMarshal.GetArrayDataReference(scratch.KeysT);
        ref float values = ref MemoryMarshal.GetArrayDataReference(scratch.ValuesT);
        ref float scores = ref MemoryMarshal.GetArrayDataReference(scratch.Scores);
        ref float query = ref MemoryMarshal.GetArrayDataReference(scratch.Row);
        ref float sums = ref MemoryMarshal.GetArrayDataReference(scratch.Sums);
        for (int group = 0; group < g.Groups; group++)
        {
            int h = kv * g.Groups + group;
            for (int i = 0; i < t; i++)
            {
                int row = ((b * g.Heads + h) * t + i) * d;
                for (int c = 0; c < d; c++) scratch.Row[c] = q[row + c] * g.Scale;
                int n = i + 1, vectors = (n + w - 1) / w;
                for (int c0 = 0; c0 < dp; c0 += Block)
                    Scores8(ref Unsafe.Add(ref query, c0), ref Unsafe.Add(ref keys, (nuint)c0 * stride), stride, ref scores, vectors, accumulate: c0 > 0);
                for (int j = n; j < vectors * w; j++) scratch.Scores[j] = float.NegativeInfinity; // keys after i
                float m = Max(ref scores, vectors);
                float l = ExpInPlace(ref scores, vectors, m);
                for (int c0 = 0; c0 < dp; c0 += Block)
                    Weighted8(ref scores, ref Unsafe.Add(ref values, (nuint)c0 * stride), stride, vectors, ref Unsafe.Add(ref sums, c0));
                int outRow = ((b * t + i) * g.Heads + h) * d;
                for (int c = 0; c < d; c++) o[outRow + c] = scratch.Sums[c] / l;
                lse[(b * g.Heads + h) * t + i] = m + MathF.Log(l);
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void BackwardUnit(Geometry g, int unit, Scratch scratch, ReadOnlySpan<float> q, ReadOnlySpan<float> k,
        ReadOnlySpan<float> v, ReadOnlySpan<float> o, ReadOnlySpan<float> lse, ReadOnlySpan<float> gradOutput,
        Span<float> dq, Span<float> dk, Span<float> dv)
    {
        int b = unit / g.KvHeads, kv = unit % g.KvHeads, d = g.HeadDim, dp = g.PaddedDim, t = g.Length, w = Vector<float>.Count;
        nuint stride = (nuint)g.PaddedLength;
        int kvOffset = (b * g.KvHeads + kv) * t * d;
        Transpose(k, kvOffset, scratch.KeysT, g);
        Transpose(v, kvOffset, scratch.ValuesT, g);
        Array.Clear(scratch.KeyGradT);
        Array.Clear(scratch.ValueGradT);
        ref float keys = ref MemoryMarshal.GetArrayDataReference(scratch.KeysT);
        ref float values = ref MemoryMarshal.GetArrayDataReference(scratch.ValuesT);
        ref float keyGrad = ref MemoryMarshal.GetArrayDataReference(scratch.KeyGradT);
        ref float valueGrad = ref MemoryMarshal.GetArrayDataReference(scratch.ValueGradT);
        ref float scores = ref MemoryMarshal.GetArrayDataReference(scratch.Scores);          // scores, then dS
        ref float probabilities = ref MemoryMarshal.GetArrayDataReference(scratch.Probabilities);
        ref float query = ref MemoryMarshal.GetArrayDataReference(scratch.Row);
        ref float upstream = ref MemoryMarshal.GetArrayDataReference(scratch.Upstream);
        ref float sums = ref MemoryMarshal.GetArrayDataReference(scratch.Sums);
        for (int group = 0; group < g.Groups; group++)
        {
            int h = kv * g.Groups + group;
            for (int i = 0; i < t; i++)
            {
                int row = ((b * g.Heads + h) * t + i) * d, outRow = ((b * t + i) * g.Heads + h) * d;
                float delta = 0; // rowsum(dP * P) = dO . O
                for (int c = 0; c < d; c++)
                {
                    scratch.Row[c] = q[row + c] * g.Scale;
                    scratch.Upstream[c] = gradOutput[outRow + c];
                    delta += gradOutput[outRow + c] * o[outRow + c];
                }
                int n = i + 1, vectors = (n + w - 1) / w;
                float rowLse = lse[(b * g.Heads + h) * t + i];
                if (dp == Block)
                {
                    // One block of dimensions: scores, dP, p and dS in one sweep.
                    ScoreGradients8(ref query, ref keys, ref upstream, ref values, stride, ref scores, ref probabilities, vectors, rowLse, delta);
                }
                else
                {
                    for (int c0 = 0; c0 < dp; c0 += Block)
                    {
                        nuint at = (nuint)c0 * stride;
                        Scores8(ref Unsafe.Add(ref query, c0), ref Unsafe.Add(ref keys, at), stride, ref scores, vectors, accumulate: c0 > 0);
                        Scores8(ref Unsafe.Add(ref upstream, c0), ref Unsafe.Add(ref values, at), stride, ref probabilities, vectors, accumulate: c0 > 0);
                    }
                    // p = exp(s - lse) (the forward's probabilities); dS = p * (dP - delta).
                    ScoreGradients(ref scores, ref probabilities, vectors, rowLse, delta);
                }
                for (int j = n; j < vectors * w; j++) scratch.Scores[j] = scratch.Probabilities[j] = 0; // keys after i
                for (int c0 = 0; c0 < dp; c0 += Block)
                {
                    nuint at = (nuint)c0 * stride;
                    QueryKeyGradients8(ref Unsafe.Add(ref query, c0), ref scores, ref Unsafe.Add(ref keys, at), ref Unsafe.Add(ref keyGrad, at),
                        stride, vectors, ref Unsafe.Add(ref sums, c0));
                    Rank1Update8(ref Unsafe.Add(ref upstream, c0), ref probabilities, ref Unsafe.Add(ref valueGrad, at), stride, vectors);
                }
                for (int c = 0; c < d; c++) dq[row + c] = scratch.Sums[c] * g.Scale;
            }
        }
        int tp = g.PaddedLength;
        for (int j = 0; j < t; j++)
            for (int c = 0; c < d; c++)
            {
                dk[kvOffset + j * d + c] = scratch.KeyGradT[c * tp + j];
                dv[kvOffset + j * d + c] = scratch.ValueGradT[c * tp + j];
            }
    }
}

/// <summary>The autograd node behind <see cref="CausalAttention.Apply"/>.</summary>
internal sealed class CausalAttentionFunction : autograd.SingleTensorFunction<CausalAttentionFunction>
{
    public override string Name => "CausalAttention";

    public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
    {
        CustomBackward.Starting(ctx);
        var v = ((Tensor)vars[2]).contiguous();
        var cos = ((Tensor)vars[3]).contiguous();
        var sin = ((Tensor)vars[4]).contiguous();
        var (rotatedQ, rotatedK, o, lse) = CausalAttention.ForwardWithRotation((Tensor)vars[0], (Tensor)vars[1], v, cos, sin);
        ctx.save_for_backward(new List<Tensor> { rotatedQ, rotatedK, v, o.detach(), lse, cos, sin });
        return o;
    }

    public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor grad_output) => CustomBackward.Run(ctx, grad_output, saved =>
    {
        var (q, k, v, o, lse, cos, sin) = (saved[0], saved[1], saved[2], saved[3], saved[4], saved[5], saved[6]);
        using var rotatedQGrad = HostTensors.EmptyLike(q);
        using var rotatedKGrad = HostTensors.EmptyLike(k);
        var dv = HostTensors.EmptyLike(v);
        using (var upstream = grad_output.contiguous())
            CausalAttention.Backward(q, k, v, o, lse, upstream, rotatedQGrad, rotatedKGrad, dv);
        // The query/key gradients go back through the rotation, into the (B, T, heads, d) layout of the projections.
        var dq = CausalAttention.RotateBack(rotatedQGrad, cos, sin);
        var dk = CausalAttention.RotateBack(rotatedKGrad, cos, sin);
        return new List<Tensor> { dq, dk, dv, null!, null! };
    });
}
