using System.Numerics;
using System.Runtime.CompilerServices;

namespace Microsoft.ML.Orpo.Kernels;

// The vector sweeps of the causal attention kernel: each walks the causal keys of one query row, Vector<float>.Count
// keys at a time, over transposed (dims, keys) rows of stride `stride`, holding a block of 8 head dimensions in registers.
internal static partial class CausalAttention
{
    /// <summary>s[j] (+)= sum over 8 dims c of x[c] * rows[c * stride + j], for the first <paramref name="vectors"/> vectors of j.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Scores8(ref float x, ref float rows, nuint stride, ref float s, int vectors, bool accumulate)
    {
        var x0 = new Vector<float>(x);
        var x1 = new Vector<float>(Unsafe.Add(ref x, 1));
        var x2 = new Vector<float>(Unsafe.Add(ref x, 2));
        var x3 = new Vector<float>(Unsafe.Add(ref x, 3));
        var x4 = new Vector<float>(Unsafe.Add(ref x, 4));
        var x5 = new Vector<float>(Unsafe.Add(ref x, 5));
        var x6 = new Vector<float>(Unsafe.Add(ref x, 6));
        var x7 = new Vector<float>(Unsafe.Add(ref x, 7));
        ref float r1 = ref Unsafe.Add(ref rows, stride);
        ref float r2 = ref Unsafe.Add(ref rows, 2 * stride);
        ref float r3 = ref Unsafe.Add(ref rows, 3 * stride);
        ref float r4 = ref Unsafe.Add(ref rows, 4 * stride);
        ref float r5 = ref Unsafe.Add(ref rows, 5 * stride);
        ref float r6 = ref Unsafe.Add(ref rows, 6 * stride);
        ref float r7 = ref Unsafe.Add(ref rows, 7 * stride);
        nuint end = (nuint)(vectors * Vector<float>.Count);
        for (nuint j = 0; j < end; j += (nuint)Vector<float>.Count)
        {
            var a = x0 * Vector.LoadUnsafe(ref rows, j);
            var e = x1 * Vector.LoadUnsafe(ref r1, j);
            a = Vector.FusedMultiplyAdd(x2, Vector.LoadUnsafe(ref r2, j), a);
            e = Vector.FusedMultiplyAdd(x3, Vector.LoadUnsafe(ref r3, j), e);
            a = Vector.FusedMultiplyAdd(x4, Vector.LoadUnsafe(ref r4, j), a);
            e = Vector.FusedMultiplyAdd(x5, Vector.LoadUnsafe(ref r5, j), e);
            a = Vector.FusedMultiplyAdd(x6, Vector.LoadUnsafe(ref r6, j), a);
            e = Vector.FusedMultiplyAdd(x7, Vector.LoadUnsafe(ref r7, j), e);
            a += e;
            if (accumulate) a += Vector.LoadUnsafe(ref s, j);
            a.StoreUnsafe(ref s, j);
        }
    }

    /// <summary>sums[c] = sum over j of p[j] * rows[c * stride + j], for 8 dims c.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Weighted8(ref float p, ref float rows, nuint stride, int vectors, ref float sums)
    {
        Vector<float> a0 = default, a1 = default, a2 = default, a3 = default, a4 = default, a5 = default, a6 = default, a7 = default;
        ref float r1 = ref Unsafe.Add(ref rows, stride);
        ref float r2 = ref Unsafe.Add(ref rows, 2 * stride);
        ref float r3 = ref Unsafe.Add(ref rows, 3 * stride);
        ref float r4 = ref Unsafe.Add(ref rows, 4 * stride);
        ref float r5 = ref Unsafe.Add(ref rows, 5 * stride);
        ref float r6 = ref Unsafe.Add(ref rows, 6 * stride);
        ref float r7 = ref Unsafe.Add(ref rows, 7 * stride);
        nuint end = (nuint)(vectors * Vector<float>.Count);
        for (nuint j = 0; j < end; j += (nuint)Vector<float>.Count)
        {
            var x = Vector.LoadUnsafe(ref p, j);
            a0 = Vector.FusedMultiplyAdd(x, Vector.LoadUnsafe(ref rows, j), a0);
            a1 = Vector.FusedMultiplyAdd(x, Vector.LoadUnsafe(ref r1, j), a1);
            a2 = Vector.FusedMultiplyAdd(x, Vector.LoadUnsafe(ref r2, j), a2);
            a3 = Vector.FusedMultiplyAdd(x, Vector.LoadUnsafe(ref r3, j), a3);
            a4 = Vector.FusedMultiplyAdd(x, Vector.LoadUnsafe(ref r4, j), a4);
            a5 = Vector.FusedMultiplyAdd(x, Vector.LoadUnsafe(ref r5, j), a5);
            a6 = Vector.FusedMultiplyAdd(x, Vector.LoadUnsafe(ref r6, j), a6);
            a7 = Vector.FusedMultiplyAdd(x, Vector.LoadUnsafe(ref r7, j), a7);
        }
        sums = Vector.Sum(a0);
        Unsafe.Add(ref sums, 1) = Vector.Sum(a1);
        Unsafe.Add(ref sums, 2) = Vector.Sum(a2);
        Unsafe.Add(ref sums, 3) = Vector.Sum(a3);
        Unsafe.Add(ref sums, 4) = Vector.Sum(a4);
        Unsafe.Add(ref sums, 5) = Vector.Sum(a5);
        Unsafe.Add(ref sums, 6) = Vector.Sum(a6);
        Unsafe.Add(ref sums, 7) = Vector.Sum(a7);
    }

    /// <summary>
    /// For 8 dims c: sums[c] = sum over j of ds[j] * keys[c * stride + j] (the query gradient) and
    /// keyGrad[c * stride + j] += x[c] * ds[j] (the key gradient), in one sweep.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void QueryKeyGradients8(ref float x, ref float ds, ref float keys, ref float keyGrad, nuint stride, int vectors, ref float sums)
    {
        var x0 = new Vector<float>(x);
        var x1 = new Vector<float>(Unsafe.Add(ref x, 1));
        var x2 = new Vector<float>(Unsafe.Add(ref x, 2));
        var x3 = new Vector<float>(Unsafe.Add(ref x, 3));
        var x4 = new Vector<float>(Unsafe.Add(ref x, 4));
        var x5 = new Vector<float>(Unsafe.Add(ref x, 5));
        var x6 = new Vector<float>(Unsafe.Add(ref x, 6));
        var x7 = new Vector<float>(Unsafe.Add(ref x, 7));
        Vector<float> a0 = default, a1 = default, a2 = default, a3 = default, a4 = default, a5 = default, a6 = default, a7 = default;
        nuint end = (nuint)(vectors * Vector<float>.Count);
        for (nuint j = 0; j < end; j += (nuint)Vector<float>.Count)
        {
            var e = Vector.LoadUnsafe(ref ds, j);
            nuint at = j;
            a0 = Vector.FusedMultiplyAdd(e, Vector.LoadUnsafe(ref keys, at), a0);
            Vector.FusedMultiplyAdd(x0, e, Vector.LoadUnsafe(ref keyGrad, at)).StoreUnsafe(ref keyGrad, at);
            at += stride;
            a1 = Vector.FusedMultiplyAdd(e, Vector.LoadUnsafe(ref keys, at), a1);
            Vector.FusedMultiplyAdd(x1, e, Vector.LoadUnsafe(ref keyGrad, at)).StoreUnsafe(ref keyGrad, at);
            at += stride;
            a2 = Vector.FusedMultiplyAdd(e, Vector.LoadUnsafe(ref keys, at), a2);
            Vector.FusedMultiplyAdd(x2, e, Vector.LoadUnsafe(ref keyGrad, at)).StoreUnsafe(ref keyGrad, at);
            at += stride;
            a3 = Vector.FusedMultiplyAdd(e, Vector.LoadUnsafe(ref keys, at), a3);
            Vector.FusedMultiplyAdd(x3, e, Vector.LoadUnsafe(ref keyGrad, at)).StoreUnsafe(ref keyGrad, at);
            at += stride;
            a4 = Vector.FusedMultiplyAdd(e, Vector.LoadUnsafe(ref keys, at), a4);
            Vector.FusedMultiplyAdd(x4, e, Vector.LoadUnsafe(ref keyGrad, at)).StoreUnsafe(ref keyGrad, at);
            at += stride;
            a5 = Vector.FusedMultiplyAdd(e, Vector.LoadUnsafe(ref keys, at), a5);
            Vector.FusedMultiplyAdd(x5, e, Vector.LoadUnsafe(ref keyGrad, at)).StoreUnsafe(ref keyGrad, at);
            at += stride;
            a6 = Vector.FusedMultiplyAdd(e, Vector.LoadUnsafe(ref keys, at), a6);
            Vector.FusedMultiplyAdd(x6, e, Vector.LoadUnsafe(ref keyGrad, at)).StoreUnsafe(ref keyGrad, at);
            at += stride;
            a7 = Vector.FusedMultiplyAdd(e, Vector.LoadUnsafe(ref keys, at), a7);
            Vector.FusedMultiplyAdd(x7, e, Vector.LoadUnsafe(ref keyGrad, at)).StoreUnsafe(ref keyGrad, at);
        }
        sums = Vector.Sum(a0);
        Unsafe.Add(ref sums, 1) = Vector.Sum(a1);
        Unsafe.Add(ref sums, 2) = Vector.Sum(a2);
        Unsafe.Add(ref sums, 3) = Vector.Sum(a3);
        Unsafe.Add(ref sums, 4) = Vector.Sum(a4);
        Unsafe.Add(ref sums, 5) = Vector.Sum(a5);
        Unsafe.Add(ref sums, 6) = Vector.Sum(a6);
        Unsafe.Add(ref sums, 7) = Vector.Sum(a7);
    }

    /// <summary>
    /// Heads of at most 8 dims: s = q . k_j and dP = dO . v_j for every key j, then p = exp(s - lse) into
    /// <paramref name="p"/> and dS = p * (dP - delta) into <paramref name="ds"/>, in one sweep.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void ScoreGradients8(ref float q, ref float keys, ref float dO, ref float values, nuint stride,
        ref float ds, ref float p, int vectors, float lse, float delta)
    {
        var q0 = new Vector<float>(q);
        var q1 = new Vector<float>(Unsafe.Add(ref q, 1));
        var q2 = new Vector<float>(Unsafe.Add(ref q, 2));
        var q3 = new Vector<float>(Unsafe.Add(ref q, 3));
        var q4 = new Vector<float>(Unsafe.Add(ref q, 4));
        var q5 = new Vector<float>(Unsafe.Add(ref q, 5));
        var q6 = new Vector<float>(Unsafe.Add(ref q, 6));
        var q7 = new Vector<float>(Unsafe.Add(ref q, 7));
        var u0 = new Vector<float>(dO);
        var u1 = new Vector<float>(Unsafe.Add(ref dO, 1));
        var u2 = new Vector<float>(Unsafe.Add(ref dO, 2));
        var u3 = new Vector<float>(Unsafe.Add(ref dO, 3));
        var u4 = new Vector<float>(Unsafe.Add(ref dO, 4));
        var u5 = new Vector<float>(Unsafe.Add(ref dO, 5));
        var u6 = new Vector<float>(Unsafe.Add(ref dO, 6));
        var u7 = new Vector<float>(Unsafe.Add(ref dO, 7));
        var l = new Vector<float>(lse);
        var dl = new Vector<float>(delta);
        nuint end = (nuint)(vectors * Vector<float>.Count);
        for (nuint j = 0; j < end; j += (nuint)Vector<float>.Count)
        {
            nuint at = j;
            var s = q0 * Vector.LoadUnsafe(ref keys, at);
            var g = u0 * Vector.LoadUnsafe(ref values, at);
            at += stride;
            s = Vector.FusedMultiplyAdd(q1, Vector.LoadUnsafe(ref keys, at), s);
            g = Vector.FusedMultiplyAdd(u1, Vector.LoadUnsafe(ref values, at), g);
            at += stride;
            s = Vector.FusedMultiplyAdd(q2, Vector.LoadUnsafe(ref keys, at), s);
            g = Vector.FusedMultiplyAdd(u2, Vector.LoadUnsafe(ref values, at), g);
            at += stride;
            s = Vector.FusedMultiplyAdd(q3, Vector.LoadUnsafe(ref keys, at), s);
            g = Vector.FusedMultiplyAdd(u3, Vector.LoadUnsafe(ref values, at), g);
            at += stride;
            s = Vector.FusedMultiplyAdd(q4, Vector.LoadUnsafe(ref keys, at), s);
            g = Vector.FusedMultiplyAdd(u4, Vector.LoadUnsafe(ref values, at), g);
            at += stride;
            s = Vector.FusedMultiplyAdd(q5, Vector.LoadUnsafe(ref keys, at), s);
            g = Vector.FusedMultiplyAdd(u5, Vector.LoadUnsafe(ref values, at), g);
            at += stride;
            s = Vector.FusedMultiplyAdd(q6, Vector.LoadUnsafe(ref keys, at), s);
            g = Vector.FusedMultiplyAdd(u6, Vector.LoadUnsafe(ref values, at), g);
            at += stride;
            s = Vector.FusedMultiplyAdd(q7, Vector.LoadUnsafe(ref keys, at), s);
            g = Vector.FusedMultiplyAdd(u7, Vector.LoadUnsafe(ref values, at), g);
            var probability = VectorMath.Exp(s - l);
            probability.StoreUnsafe(ref p, j);
            (probability * (g - dl)).StoreUnsafe(ref ds, j);
        }
    }

    /// <summary>rows[c * stride + j] += x[c] * y[j] for 8 dims c.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Rank1Update8(ref float x, ref float y, ref float rows, nuint stride, int vectors)
    {
        var x0 = new Vector<float>(x);
        var x1 = new Vector<float>(Unsafe.Add(ref x, 1));
        var x2 = new Vector<float>(Unsafe.Add(ref x, 2));
        var x3 = new Vector<float>(Unsafe.Add(ref x, 3));
        var x4 = new Vector<float>(Unsafe.Add(ref x, 4));
        var x5 = new Vector<float>(Unsafe.Add(ref x, 5));
        var x6 = new Vector<float>(Unsafe.Add(ref x, 6));
        var x7 = new Vector<float>(Unsafe.Add(ref x, 7));
        ref float r1 = ref Unsafe.Add(ref rows, stride);
        ref float r2 = ref Unsafe.Add(ref rows, 2 * stride);
        ref float r3 = ref Unsafe.Add(ref rows, 3 * stride);
        ref float r4 = ref Unsafe.Add(ref rows, 4 * stride);
        ref float r5 = ref Unsafe.Add(ref rows, 5 * stride);
        ref float r6 = ref Unsafe.Add(ref rows, 6 * stride);
        ref float r7 = ref Unsafe.Add(ref rows, 7 * stride);
        nuint end = (nuint)(vectors * Vector<float>.Count);
        for (nuint j = 0; j < end; j += (nuint)Vector<float>.Count)
        {
            var e = Vector.LoadUnsafe(ref y, j);
            Vector.FusedMultiplyAdd(x0, e, Vector.LoadUnsafe(ref rows, j)).StoreUnsafe(ref rows, j);
            Vector.FusedMultiplyAdd(x1, e, Vector.LoadUnsafe(ref r1, j)).StoreUnsafe(ref r1, j);
            Vector.FusedMultiplyAdd(x2, e, Vector.LoadUnsafe(ref r2, j)).StoreUnsafe(ref r2, j);
            Vector.FusedMultiplyAdd(x3, e, Vector.LoadUnsafe(ref r3, j)).StoreUnsafe(ref r3, j);
            Vector.FusedMultiplyAdd(x4, e, Vector.LoadUnsafe(ref r4, j)).StoreUnsafe(ref r4, j);
            Vector.FusedMultiplyAdd(x5, e, Vector.LoadUnsafe(ref r5, j)).StoreUnsafe(ref r5, j);
            Vector.FusedMultiplyAdd(x6, e, Vector.LoadUnsafe(ref r6, j)).StoreUnsafe(ref r6, j);
            Vector.FusedMultiplyAdd(x7, e, Vector.LoadUnsafe(ref r7, j)).StoreUnsafe(ref r7, j);
        }
    }

    /// <summary>The largest of the first <paramref name="vectors"/> vectors of <paramref name="s"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float Max(ref float s, int vectors)
    {
        var max = new Vector<float>(float.NegativeInfinity);
        nuint end = (nuint)(vectors * Vector<float>.Count);
        for (nuint j = 0; j < end; j += (nuint)Vector<float>.Count) max = Vector.MaxNative(max, Vector.LoadUnsafe(ref s, j));
        float m = max[0];
        for (int i = 1; i < Vector<float>.Count; i++) m = MathF.Max(m, max[i]);
        return m;
    }

    /// <summary>s = exp(s - m) in place; returns the sum.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float ExpInPlace(ref float s, int vectors, float m)
    {
        var mv = new Vector<float>(m);
        var sum = Vector<float>.Zero;
        nuint end = (nuint)(vectors * Vector<float>.Count);
        for (nuint j = 0; j < end; j += (nuint)Vector<float>.Count)
        {
            var p = VectorMath.Exp(Vector.LoadUnsafe(ref s, j) - mv);
            p.StoreUnsafe(ref s, j);
            sum += p;
        }
        return Vector.Sum(sum);
    }

    /// <summary>Given scores s and dP (in <paramref name="p"/>): p = exp(s - lse), s = p * (dP - delta).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void ScoreGradients(ref float s, ref float p, int vectors, float lse, float delta)
    {
        var l = new Vector<float>(lse);
        var dl = new Vector<float>(delta);
        nuint end = (nuint)(vectors * Vector<float>.Count);
        for (nuint j = 0; j < end; j += (nuint)Vector<float>.Count)
        {
            var probability = VectorMath.Exp(Vector.LoadUnsafe(ref s, j) - l);
            (probability * (Vector.LoadUnsafe(ref p, j) - dl)).StoreUnsafe(ref s, j);
            probability.StoreUnsafe(ref p, j);
        }
    }
}
