using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using TorchSharp;
using Microsoft.ML.Orpo.Native;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Kernels;

/// <summary>
/// Causal grouped-query self-attention for float32 CPU heads wider than <see cref="CausalAttention"/>'s, as per-head
/// matrix products through <see cref="PackedGemm"/>. Queries go in blocks of <see cref="RowBlock"/> rows, and a block
/// multiplies only the keys up to its last row, so the masked upper triangle is mostly never computed (at 256 tokens,
/// 67% of the dense products). The forward pass keeps the log-sum-exp of each row and the backward pass recomputes the
/// probabilities from it, as flash attention does; <c>D = rowsum(dO * O)</c> is taken as <c>rowsum(P * dP)</c>, so
/// the output is not kept either. libtorch's CPU flash kernel, with MKL's AVX2 products, is slower on a 41.7M layer
/// (8 x 8 x 256 x 64, forward and backward). A unit is one (batch, key/value head): its query heads run in turn and add
/// into the unit's key/value gradients, so results do not depend on the thread count.
/// (benchmarks/README.md, "Measurements behind the code: BlockedCausalAttention")
/// </summary>
internal static unsafe class BlockedCausalAttention
{
    private const int RowBlock = 96;     // 8 of the GEMM's 12-row panels
    private const int MaxLength = 2048;  // score buffers are RowBlock x length per thread

    [ThreadStatic] private static float[]? scores;
    [ThreadStatic] private static float[]? scoreGradients;

    /// <summary>(B, H, T, d) queries, (B, K, T, d) keys and values: float32 CPU, heads 17-256 wide, the kernel enabled.</summary>
    public static bool Supports(Tensor q, Tensor k, Tensor v)
    {
        if (!PackedGemm.IsEnabled || q.device_type != DeviceType.CPU || q.dtype != ScalarType.Float32 || k.dtype != ScalarType.Float32
            || v.dtype != ScalarType.Float32 || k.device_type != DeviceType.CPU || v.device_type != DeviceType.CPU || q.dim() != 4)
            return false;
        long[] qs = q.shape, ks = k.shape;
        return ks.Length == 4 && qs[0] == ks[0] && qs[2] == ks[2] && qs[3] == ks[3] && ks[1] > 0 && qs[1] % ks[1] == 0
            && v.shape.SequenceEqual(ks) && qs[2] > 0 && qs[2] <= MaxLength && qs[3] > KernelThresholds.SmallHeadMaxDim && qs[3] <= 256
            && q.numel() <= int.MaxValue / 4;
    }

    /// <summary>softmax(q k^T / sqrt(d) + causal) v, query head h reading key/value head h / (H / K) -> (B, T, H * d).</summary>
    public static Tensor Apply(Tensor q, Tensor k, Tensor v) => Apply(q, k, v, null, null);

    /// <summary>
    /// Whether <see cref="Apply(Tensor, Tensor, Tensor, Tensor?, Tensor?)"/> can also rotate these queries and keys with
    /// (B, 1, T, d) float32 <paramref name="cos"/> tables (the rotation reads rows of d/2-float halves).
    /// </summary>
    public static bool SupportsRotation(Tensor q, Tensor cos) =>
        cos.dtype == ScalarType.Float32 && cos.device_type == DeviceType.CPU && q.shape[3] % 2 == 0
        && cos.shape.SequenceEqual(new[] { q.shape[0], 1, q.shape[2], q.shape[3] });

    /// <summary>
    /// The rotary embedding (<c>x cos + rotate_half(x) sin</c>, the values of <c>RotaryEmbedding.Apply</c>) applied to
    /// q and k, then the attention of <see cref="Apply(Tensor, Tensor, Tensor)"/>; without cos/sin, no rotation. The
    /// rotation writes the contiguous rows the kernel reads, replacing RoPE's five tensor ops per tensor and the
    /// contiguous copy after them (ten short-lived activations per layer), and its backward writes the gradient
    /// straight into the projections' (B, T, heads, d) layout.
    /// </summary>
    public static Tensor Apply(Tensor q, Tensor k, Tensor v, Tensor? cos, Tensor? sin)
    {
        if (is_grad_enabled() && (q.requires_grad || k.requires_grad || v.requires_grad))
            return BlockedCausalAttentionFunction.apply(q, k, v, cos!, sin!);
        using var scope = NewDisposeScope(); // nothing to differentiate: no autograd node, nothing saved
        var (c, s) = (cos?.contiguous(), sin?.contiguous());
        var (qc, kc, vc) = (Prepare(q, c, s), Prepare(k, c, s), Contiguous(v));
        Forward(qc, kc, vc, out var output);
        return output.MoveToOuterDisposeScope();
    }

    /// <summary>x rotated (with contiguous tables) or as is, as a contiguous tensor.</summary>
    internal static Tensor Prepare(Tensor x, Tensor? cos, Tensor? sin)
    {
        if (cos is null || sin is null) return Contiguous(x);
        var rotated = HostTensors.Empty(x.shape);
        CausalAttention.RotateInto(x, rotated, cos, sin);
        return rotated;
    }

    /// <summary>x itself when contiguous, else a contiguous copy in <see cref="HostTensors"/> memory.</summary>
    internal static Tensor Contiguous(Tensor x)
    {
        if (x.is_contiguous()) return x.alias();
        using var noGrad = no_grad();
        return HostTensors.Empty(x.shape).copy_(x);
    }

    /// <summary>Contiguous q, k, v -> log-sum-exp (B, H, T); <paramref name="output"/> (B, T, H * d).</summary>
    internal static Tensor Forward(Tensor q, Tensor k, Tensor v, out Tensor output)
    {
        var g = Geometry.Of(q, k);
        var o = HostTensors.Empty(g.Batch, g.Length, g.Heads * g.HeadDim);
        var lse = empty(new long[] { g.Batch, g.Heads, g.Length }, ScalarType.Float32);
        CpuKernel.ForEachBlock(g.Batch * g.KvHeads, unit =>
        {
            fixed (float* pq = CpuKernel.Floats(q), pk = CpuKernel.Floats(k), pv = CpuKernel.Floats(v), po = CpuKernel.Floats(o), pl = CpuKernel.Floats(lse))
                ForwardUnit(g, unit, pq, pk, pv, po, pl);
        });
        output = o;
        return lse;
    }

    /// <summary>Gradients for contiguous q, k, v from the (B, T, H * d) output gradient and the forward's log-sum-exp.</summary>
    internal static (Tensor Q, Tensor K, Tensor V) Backward(Tensor q, Tensor k, Tensor v, Tensor lse, Tensor outputGradient)
    {
        var g = Geometry.Of(q, k);
        var dq = HostTensors.EmptyLike(q);
        var dk = HostTensors.ZerosLike(k);
        var dv = HostTensors.ZerosLike(v);
        CpuKernel.ForEachBlock(g.Batch * g.KvHeads, unit =>
        {
            fixed (float* pq = CpuKernel.Floats(q), pk = CpuKernel.Floats(k), pv = CpuKernel.Floats(v), pl = CpuKernel.Floats(lse),
                   pdo = CpuKernel.Floats(outputGradient), pdq = CpuKernel.Floats(dq), pdk = CpuKernel.Floats(dk), pdv = CpuKernel.Floats(dv))
                BackwardUnit(g, unit, pq, pk, pv, pl, pdo, pdq, pdk, pdv);
        });
        return (dq, dk, dv);
    }

    internal readonly record struct Geometry(int Batch, int Heads, int KvHeads, int Length, int HeadDim)
    {
        public int Groups => Heads / KvHeads;
        public float Scale => (float)(1.0 / Math.Sqrt(HeadDim));
        public int OutputStride => Heads * HeadDim;

        public static Geometry Of(Tensor q, Tensor k) =>
            new((int)q.shape[0], (int)q.shape[1], (int)k.shape[1], (int)q.shape[2], (int)q.shape[3]);
    }

    private static void ForwardUnit(Geometry g, int unit, float* q, float* k, float* v, float* o, float* lse)
    {
        int b = unit / g.KvHeads, kv = unit % g.KvHeads, t = g.Length, d = g.HeadDim;
        float* keys = k + (long)unit * t * d, values = v + (long)unit * t * d;
        fixed (float* s = Buffer(ref scores, t))
            for (int h = kv * g.Groups; h < (kv + 1) * g.Groups; h++)
            {
                float* queries = q + ((long)b * g.Heads + h) * t * d, rowLse = lse + ((long)b * g.Heads + h) * t;
                float* output = o + (long)b * t * g.OutputStride + (long)h * d;
                for (int r0 = 0; r0 < t; r0 += RowBlock)
                {
                    int rows = Math.Min(RowBlock, t - r0), cols = r0 + rows;      // keys 0 .. last row of the block
                    PackedGemm.Multiply(rows, cols, d, queries + (long)r0 * d, d, false, keys, d, true, s, cols, false, parallel: false);
                    for (int i = 0; i < rows; i++)
                        rowLse[r0 + i] = SoftmaxRow(new Span<float>(s + (long)i * cols, cols), r0 + i + 1, g.Scale);
                    PackedGemm.Multiply(rows, d, cols, s, cols, false, values, d, false, output + (long)r0 * g.OutputStride, g.OutputStride,
                        false, parallel: false);
                }
            }
    }

    private static void BackwardUnit(Geometry g, int unit, float* q, float* k, float* v, float* lse, float* dOut, float* dq, float* dk, float* dv)
    {
        int b = unit / g.KvHeads, kv = unit % g.KvHeads, t = g.Length, d = g.HeadDim;
        float* keys = k + (long)unit * t * d, values = v + (long)unit * t * d;
        float* keyGradient = dk + (long)unit * t * d, valueGradient = dv + (long)unit * t * d;
        fixed (float* p = Buffer(ref scores, t), dp = Buffer(ref scoreGradients, t))
            for (int h = kv * g.Groups; h < (kv + 1) * g.Groups; h++)
            {
                long head = (long)b * g.Heads + h;
                float* queries = q + head * t * d, queryGradient = dq + head * t * d, rowLse = lse + head * t;
                float* outputGradient = dOut + (long)b * t * g.OutputStride + (long)h * d;
                for (int r0 = 0; r0 < t; r0 += RowBlock)
                {
                    int rows = Math.Min(RowBlock, t - r0), cols = r0 + rows;
                    float* blockQueries = queries + (long)r0 * d, blockOutputGradient = outputGradient + (long)r0 * g.OutputStride;
                    PackedGemm.Multiply(rows, cols, d, blockQueries, d, false, keys, d, true, p, cols, false, parallel: false);      // S
                    PackedGemm.Multiply(rows, cols, d, blockOutputGradient, g.OutputStride, false, values, d, true, dp, cols, false,
                        parallel: false);                                                                                         // dP = dO V^T
                    for (int i = 0; i < rows; i++)
                        ScoreGradientRow(new Span<float>(p + (long)i * cols, cols), new Span<float>(dp + (long)i * cols, cols),
                            r0 + i + 1, rowLse[r0 + i], g.Scale);                                                                 // P, dS
                    PackedGemm.Multiply(cols, d, rows, p, cols, true, blockOutputGradient, g.OutputStride, false, valueGradient, d, true,
                        parallel: false);                                                                                         // dV += P^T dO
                    PackedGemm.Multiply(rows, d, cols, dp, cols, false, keys, d, false, queryGradient + (long)r0 * d, d, false,
                        parallel: false);                                                                                         // dQ = dS K
                    PackedGemm.Multiply(cols, d, rows, dp, cols, true, blockQueries, d, false, keyGradient, d, true, parallel: false); // dK += dS^T Q
                }
            }
    }

    private static float[] Buffer(ref float[]? slot, int length)
    {
        int size = RowBlock * length;
        if (slot is null || slot.Length < size) slot = GC.AllocateUninitializedArray<float>(size, pinned: true);
        return slot;
    }

    /// <summary>
    /// In place: scores s (the first <paramref name="visible"/> are this row's causal keys) become probabilities, the
    /// masked rest zero; returns the log-sum-exp of the scaled visible scores.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static float SoftmaxRow(Span<float> s, int visible, float scale)
    {
        int n = Vector<float>.Count, j = 0;
        var scaleVector = new Vector<float>(scale);
        var maxima = new Vector<float>(float.NegativeInfinity);
        for (; j + n <= visible; j += n)
        {
            var x = new Vector<float>(s.Slice(j, n)) * scaleVector;
            x.CopyTo(s.Slice(j, n));
            maxima = Vector.Max(maxima, x);
        }
        float max = float.NegativeInfinity;
        for (int i = 0; i < n; i++) max = MathF.Max(max, maxima[i]);
        for (; j < visible; j++) max = MathF.Max(max, s[j] *= scale);
        var shift = new Vector<float>(max);
        var sums = Vector<float>.Zero;
        for (j = 0; j + n <= visible; j += n)
        {
            var e = VectorMath.Exp(new Vector<float>(s.Slice(j, n)) - shift);
            e.CopyTo(s.Slice(j, n));
            sums += e;
        }
        float sum = Vector.Sum(sums);
        for (; j < visible; j++) sum += s[j] = MathF.Exp(s[j] - max);
        float inverse = 1f / sum;
        var inverseVector = new Vector<float>(inverse);
        for (j = 0; j + n <= visible; j += n) (new Vector<float>(s.Slice(j, n)) * inverseVector).CopyTo(s.Slice(j, n));
        for (; j < visible; j++) s[j] *= inverse;
        s[visible..].Clear();
        return max + MathF.Log(sum);
    }

    /// <summary>
    /// In place from raw scores s and dP = dO V^T: s becomes P = exp(scale s - lse) (masked keys zero) and dp becomes
    /// dS = scale P (dP - rowsum(P dP)).
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static void ScoreGradientRow(Span<float> s, Span<float> dp, int visible, float lse, float scale)
    {
        int n = Vector<float>.Count, j = 0;
        var scaleVector = new Vector<float>(scale);
        var shift = new Vector<float>(lse);
        var dots = Vector<float>.Zero;
        for (; j + n <= visible; j += n)
        {
            var pj = VectorMath.Exp(new Vector<float>(s.Slice(j, n)) * scaleVector - shift);
            pj.CopyTo(s.Slice(j, n));
            dots += pj * new Vector<float>(dp.Slice(j, n));
        }
        float dot = Vector.Sum(dots);
        for (; j < visible; j++)
        {
            s[j] = MathF.Exp(s[j] * scale - lse);
            dot += s[j] * dp[j];
        }
        var dotVector = new Vector<float>(dot);
        for (j = 0; j + n <= visible; j += n)
            (new Vector<float>(s.Slice(j, n)) * (new Vector<float>(dp.Slice(j, n)) - dotVector) * scaleVector).CopyTo(dp.Slice(j, n));
        for (; j < visible; j++) dp[j] = s[j] * (dp[j] - dot) * scale;
        s[visible..].Clear();
        dp[visible..].Clear();
    }
}

/// <summary>
/// The autograd node behind <see cref="BlockedCausalAttention.Apply(Tensor, Tensor, Tensor, Tensor?, Tensor?)"/>: saves
/// the (rotated) q and k, v, the log-sum-exp and the rotary tables.
/// </summary>
internal sealed class BlockedCausalAttentionFunction : autograd.SingleTensorFunction<BlockedCausalAttentionFunction>
{
    public override string Name => "BlockedCausalAttention";

    public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
    {
        CustomBackward.Starting(ctx);
        var (cos, sin) = (((Tensor?)vars[3])?.contiguous(), ((Tensor?)vars[4])?.contiguous());
        using var noGrad = no_grad();
        var q = BlockedCausalAttention.Prepare((Tensor)vars[0], cos, sin);
        var k = BlockedCausalAttention.Prepare((Tensor)vars[1], cos, sin);
        var v = BlockedCausalAttention.Contiguous((Tensor)vars[2]);
        var lse = BlockedCausalAttention.Forward(q, k, v, out var output);
        var saved = new List<Tensor> { q, k, v, lse };
        if (cos is not null && sin is not null) saved.AddRange(new[] { cos, sin });
        ctx.save_for_backward(saved);
        return output;
    }

    public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor grad_output) => CustomBackward.Run(ctx, grad_output, saved =>
    {
        using var dOut = grad_output.contiguous();
        var (dq, dk, dv) = BlockedCausalAttention.Backward(saved[0], saved[1], saved[2], saved[3], dOut);
        if (saved.Count > 4)
        {
            // The gradient of the rotation, written in the (B, T, heads, d) layout of the projections.
            var (rotatedQ, rotatedK) = (dq, dk);
            dq = CausalAttention.RotateBack(rotatedQ, saved[4], saved[5]);
            dk = CausalAttention.RotateBack(rotatedK, saved[4], saved[5]);
            rotatedQ.Dispose();
            rotatedK.Dispose();
        }
        return new List<Tensor> { dq, dk, dv, null!, null! };
    });
}
