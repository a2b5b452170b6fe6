using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Microsoft.ML.Orpo.Kernels;

/// <summary>Vectorised float32 functions the hand-written CPU kernels share.</summary>
internal static class VectorMath
{
    /// <summary>
    /// e^x in float32 for x &lt;= 0 (softmax arguments), within 2 ulp: x = n ln2 + r with |r| &lt;= ln2 / 2 (ln2 split in
    /// two parts so n ln2 is exact), e^r by its degree-7 Taylor polynomial (truncation error below 2e-9 relative), and
    /// 2^n put into the exponent bits. Arguments below -87.3, where 2^n leaves the normal range, give 0 (as -inf must).
    /// System.Numerics' Vector.Exp widens float32 to float64 and took a quarter of the causal attention kernel's time.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector<float> Exp(Vector<float> x)
    {
        var n = Vector.Floor(x * new Vector<float>(1.44269504088896341f) + new Vector<float>(0.5f));
        var r = Vector.FusedMultiplyAdd(n, new Vector<float>(-0.693359375f), x);       // ln2 = 0.693359375 - 2.12194440e-4
        r = Vector.FusedMultiplyAdd(n, new Vector<float>(2.12194440e-4f), r);
        var y = new Vector<float>(1f / 5040);
        y = Vector.FusedMultiplyAdd(y, r, new Vector<float>(1f / 720));
        y = Vector.FusedMultiplyAdd(y, r, new Vector<float>(1f / 120));
        y = Vector.FusedMultiplyAdd(y, r, new Vector<float>(1f / 24));
        y = Vector.FusedMultiplyAdd(y, r, new Vector<float>(1f / 6));
        y = Vector.FusedMultiplyAdd(y, r, new Vector<float>(0.5f));
        y = Vector.FusedMultiplyAdd(y, r, Vector<float>.One);
        y = Vector.FusedMultiplyAdd(y, r, Vector<float>.One);
        var scale = Vector.AsVectorSingle(Vector.ShiftLeft(Vector.ConvertToInt32(n) + new Vector<int>(127), 23));
        return Vector.ConditionalSelect(Vector.LessThan(x, new Vector<float>(-87.3f)), Vector<float>.Zero, y * scale);
    }

    /// <summary>
    /// <see cref="Exp(Vector{float})"/> sixteen lanes at a time (<see cref="Vector{T}"/> is 256 bits even where 512-bit
    /// vectors are fast): the same operations lane by lane, so the same bits.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Exp(Vector512<float> x)
    {
        var n = Vector512.Floor(x * Vector512.Create(1.44269504088896341f) + Vector512.Create(0.5f));
        var r = Vector512.FusedMultiplyAdd(n, Vector512.Create(-0.693359375f), x);
        r = Vector512.FusedMultiplyAdd(n, Vector512.Create(2.12194440e-4f), r);
        var y = Vector512.Create(1f / 5040);
        y = Vector512.FusedMultiplyAdd(y, r, Vector512.Create(1f / 720));
        y = Vector512.FusedMultiplyAdd(y, r, Vector512.Create(1f / 120));
        y = Vector512.FusedMultiplyAdd(y, r, Vector512.Create(1f / 24));
        y = Vector512.FusedMultiplyAdd(y, r, Vector512.Create(1f / 6));
        y = Vector512.FusedMultiplyAdd(y, r, Vector512.Create(0.5f));
        y = Vector512.FusedMultiplyAdd(y, r, Vector512<float>.One);
        y = Vector512.FusedMultiplyAdd(y, r, Vector512<float>.One);
        var scale = Vector512.ShiftLeft(Vector512.ConvertToInt32(n) + Vector512.Create(127), 23).AsSingle();
        return Vector512.ConditionalSelect(Vector512.LessThan(x, Vector512.Create(-87.3f)), Vector512<float>.Zero, y * scale);
    }
}
