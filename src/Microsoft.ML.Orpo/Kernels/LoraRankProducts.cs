using System.Buffers;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Microsoft.ML.Orpo.Kernels;

/// <summary>
/// The rank-r products of a LoRA adapter for <see cref="LoraLinear"/> on AVX-512 CPUs, on raw rows. A GEMM kernel wastes
/// them: one of their dimensions is r (16 by default), so packing the large operand costs as much as the product, and
/// libtorch's calls on 128-row chunks cost more in per-call overhead than in arithmetic. Here r is padded to a multiple
/// of 16 (<see cref="Padded"/>), so a row of r values is whole 512-bit vectors, and:
/// <list type="bullet">
/// <item><see cref="Down"/>: <c>down = s (x * mask) A^T</c>, x dropped 128 rows at a time into a scratch block.</item>
/// <item><see cref="DownGradients"/>: <c>dDown = s dy B</c> and <c>gradB = dy^T down</c> in one pass over dy.</item>
/// <item><see cref="InputGradients"/>: <c>gradA = dDown^T (x * mask)</c>, and <c>gradX += mask * (dDown A)</c>, in one
/// pass over x (the mask hashed once for both).</item>
/// </list>
/// Rows are split into fixed blocks of <see cref="LoraLinear.ChunkRows"/>; a sum over rows (gradA, gradB) is summed per
/// block and the blocks' sums are added in block order, so results do not depend on the thread count.
/// </summary>
internal static unsafe class LoraRankProducts
{
    private const int Lanes = 16;
    private const int Group = 8; // rows per register block: 8 accumulators cover the FMA latency

    /// <summary>Whether this CPU runs these kernels (AVX-512F, enabled in .NET).</summary>
    public static bool IsSupported => Avx512F.IsSupported && Vector512.IsHardwareAccelerated;

    /// <summary>r rounded up to whole vectors of 16 floats.</summary>
    public static int Padded(int rank) => (rank + Lanes - 1) / Lanes * Lanes;

    /// <summary>
    /// down (rows x rp) = scale * (x * mask) at, for x (rows x inputs), at = A^T padded (inputs x rp); seed null: no
    /// dropout (the mask is a function of the element's position in x). With dropout and <paramref name="bits"/> not
    /// null, the mask is also recorded there (rows x <see cref="HashedDropout.BitWords"/>(inputs)) for the backward pass.
    /// </summary>
    public static void Down(float* x, int rows, int inputs, float* at, int rp, float* down, float scale, long? seed, double probability, ushort* bits = null)
    {
        nint xs = (nint)x, ats = (nint)at, downs = (nint)down, bitRows = (nint)bits;
        CpuKernel.ForEachBlock(Blocks(rows), block =>
        {
            int first = block * LoraLinear.ChunkRows, count = Math.Min(LoraLinear.ChunkRows, rows - first);
            using var scratch = new Scratch(seed is null ? 0 : count * inputs);
            float* source = Dropped((float*)xs, first, count, inputs, seed, probability, scratch.Pointer, new MaskBits((ushort*)bitRows, inputs, recording: true));
            for (int v = 0; v < rp; v += Lanes)
                RowsTimesColumns(source, count, inputs, (float*)ats + v, rp, (float*)downs + (long)first * rp + v, rp, scale);
        });
    }

    /// <summary>
    /// dDown (rows x rp) = scale * dy b and gradB (outputs x r) = dy^T down, for dy (rows x outputs), b = B padded
    /// (outputs x rp), down (rows x rp).
    /// </summary>
    public static void DownGradients(float* dy, int rows, int outputs, float* b, float* down, int rp, float scale, float* dDown, float* gradB, int rank)
    {
        int blocks = Blocks(rows);
        using var partials = new Scratch(blocks * outputs * rp);
        nint dys = (nint)dy, bs = (nint)b, downs = (nint)down, dDowns = (nint)dDown, parts = (nint)partials.Pointer;
        CpuKernel.ForEachBlock(blocks, block =>
        {
            int first = block * LoraLinear.ChunkRows, count = Math.Min(LoraLinear.ChunkRows, rows - first);
            float* partial = (float*)parts + (long)block * outputs * rp;
            new Span<float>(partial, outputs * rp).Clear();
            for (int v = 0; v < rp; v += Lanes)
                Both((float*)dys + (long)first * outputs, count, outputs, (float*)bs + v, rp, (float*)downs + (long)first * rp + v,
                    (float*)dDowns + (long)first * rp + v, partial + v, scale);
        });
        SumBlocks(partials.Pointer, blocks, outputs, rp, gradB, rank, transposed: false);
    }

    /// <summary>
    /// gradA (r x inputs) = dDown^T (x * mask), and gradX (rows x inputs) += mask * (dDown a) when gradX is not null,
    /// for x (rows x inputs), dDown (rows x rp), a = A (r x inputs). The mask is read from <paramref name="bits"/> where
    /// <see cref="Down"/> recorded it (not null), else hashed again.
    /// </summary>
    public static void InputGradients(float* x, int rows, int inputs, float* dDown, int rp, float* a, int rank, long? seed, double probability,
        float* gradA, float* gradX, ushort* bits = null)
    {
        int blocks = Blocks(rows);
        using var partials = new Scratch(gradA is null ? 0 : blocks * inputs * rp);
        nint xs = (nint)x, dDowns = (nint)dDown, aa = (nint)a, parts = (nint)partials.Pointer, gradXs = (nint)gradX, bitRows = (nint)bits;
        bool wantA = gradA is not null;
        CpuKernel.ForEachBlock(blocks, block =>
        {
            int first = block * LoraLinear.ChunkRows, count = Math.Min(LoraLinear.ChunkRows, rows - first);
            float* rowsOfDDown = (float*)dDowns + (long)first * rp, rowsOfX = (float*)xs + (long)first * inputs;
            using var scratch = new Scratch(wantA && seed is not null ? count * inputs : 0);
            var mask = new MaskBits((ushort*)bitRows, inputs, recording: false);
            if (gradXs != 0)
                AddUpdate(rowsOfDDown, rp, (float*)aa, rank, inputs, count, first, seed, probability, (float*)gradXs + (long)first * inputs,
                    wantA ? rowsOfX : null, scratch.Pointer, mask);
            else if (wantA) Dropped((float*)xs, first, count, inputs, seed, probability, scratch.Pointer, mask);
            if (!wantA) return;
            float* source = seed is null ? rowsOfX : scratch.Pointer;                         // x * mask
            float* partial = (float*)parts + (long)block * inputs * rp;
            new Span<float>(partial, inputs * rp).Clear();
            for (int v = 0; v < rp; v += Lanes)
                Accumulate(source, count, inputs, rowsOfDDown + v, rp, partial + v, rp);      // partial (inputs x rp) += source^T dDown
        });
        if (wantA) SumBlocks(partials.Pointer, blocks, inputs, rp, gradA, rank, transposed: true);
    }

    private static int Blocks(int rows) => (rows + LoraLinear.ChunkRows - 1) / LoraLinear.ChunkRows;

    /// <summary>
    /// Where a projection's dropout mask is kept between its forward and backward pass: a row of x's
    /// <see cref="HashedDropout.BitWords"/>(inputs) words a row, written when <paramref name="recording"/>, else read;
    /// a null pointer: hashed each time.
    /// </summary>
    private readonly struct MaskBits(ushort* rows, int inputs, bool recording)
    {
        /// <summary>
        /// Row <paramref name="row"/> of an x-shaped tensor through the mask (target = mask * source, or += when
        /// <paramref name="accumulate"/>; addTarget += mask * addSource unless empty): read from the bits, hashed and
        /// recorded (the forward pass's plain masking only), or hashed.
        /// </summary>
        public void Apply(long row, ReadOnlySpan<float> source, Span<float> target, bool accumulate, ReadOnlySpan<float> addSource, Span<float> addTarget,
            long seed, double probability)
        {
            if (rows is null) HashedDropout.MaskRows(source, target, accumulate, addSource, addTarget, row * inputs, seed, probability);
            else if (!recording) HashedDropout.MaskRowFromBits(Bits(row), source, target, accumulate, addSource, addTarget, probability);
            else
            {
                System.Diagnostics.Debug.Assert(!accumulate && addSource.IsEmpty, "the forward pass records plain masking only");
                HashedDropout.MaskRowRecording(source, target, Bits(row), row * inputs, seed, probability);
            }
        }

        private Span<ushort> Bits(long row) => new(rows + row * HashedDropout.BitWords(inputs), HashedDropout.BitWords(inputs));
    }

    /// <summary>x's rows [first, first + count) through the mask into scratch, or x itself without dropout.</summary>
    private static float* Dropped(float* x, int first, int count, int inputs, long? seed, double probability, float* scratch, MaskBits mask)
    {
        float* rows = x + (long)first * inputs;
        if (seed is not long s) return rows;
        for (int row = 0; row < count; row++)
            mask.Apply(first + row, new ReadOnlySpan<float>(rows + (long)row * inputs, inputs), new Span<float>(scratch + (long)row * inputs, inputs),
                accumulate: false, default, default, s, probability);
        return scratch;
    }

    /// <summary>out[i, 0..16) = scale * sum_p x[i, p] m[p, 0..16), for rows i of x (count x inputs), m's rows ldm apart.</summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static void RowsTimesColumns(float* x, int count, int inputs, float* m, int ldm, float* output, int ldo, float scale)
    {
        var s = Vector512.Create(scale);
        int i = 0;
        for (; i + Group <= count; i += Group)
        {
            float* r = x + (long)i * inputs;
            Vector512<float> c0 = default, c1 = default, c2 = default, c3 = default, c4 = default, c5 = default, c6 = default, c7 = default;
            for (int p = 0; p < inputs; p++)
            {
                var w = Vector512.Load(m + (long)p * ldm);
                c0 = Avx512F.FusedMultiplyAdd(Vector512.Create(r[p]), w, c0);
                c1 = Avx512F.FusedMultiplyAdd(Vector512.Create(r[inputs + p]), w, c1);
                c2 = Avx512F.FusedMultiplyAdd(Vector512.Create(r[2 * inputs + p]), w, c2);
                c3 = Avx512F.FusedMultiplyAdd(Vector512.Create(r[3 * inputs + p]), w, c3);
                c4 = Avx512F.FusedMultiplyAdd(Vector512.Create(r[4 * inputs + p]), w, c4);
                c5 = Avx512F.FusedMultiplyAdd(Vector512.Create(r[5 * inputs + p]), w, c5);
                c6 = Avx512F.FusedMultiplyAdd(Vector512.Create(r[6 * inputs + p]), w, c6);
                c7 = Avx512F.FusedMultiplyAdd(Vector512.Create(r[7 * inputs + p]), w, c7);
            }
            float* o = output + (long)i * ldo;
            Vector512.Store(c0 * s, o); Vector512.Store(c1 * s, o + ldo); Vector512.Store(c2 * s, o + 2 * ldo); Vector512.Store(c3 * s, o + 3 * ldo);
            Vector512.Store(c4 * s, o + 4 * ldo); Vector512.Store(c5 * s, o + 5 * ldo); Vector512.Store(c6 * s, o + 6 * ldo); Vector512.Store(c7 * s, o + 7 * ldo);
        }
        for (; i < count; i++)
        {
            float* r = x + (long)i * inputs;
            Vector512<float> c = default;
            for (int p = 0; p < inputs; p++) c = Avx512F.FusedMultiplyAdd(Vector512.Create(r[p]), Vector512.Load(m + (long)p * ldm), c);
            Vector512.Store(c * s, output + (long)i * ldo);
        }
    }

    /// <summary>
    /// For rows i of dy (count x outputs): dDown[i, 0..16) = scale * sum_j dy[i, j] b[j, 0..16), and
    /// partial[j, 0..16) += sum_i dy[i, j] down[i, 0..16); b, down, dDown and partial rows are rp apart.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static void Both(float* dy, int count, int outputs, float* b, int rp, float* down, float* dDown, float* partial, float scale)
    {
        var s = Vector512.Create(scale);
        int i = 0;
        for (; i + Group <= count; i += Group)
        {
            float* r = dy + (long)i * outputs;
            float* u = down + (long)i * rp;
            Vector512<float> u0 = Vector512.Load(u), u1 = Vector512.Load(u + rp), u2 = Vector512.Load(u + 2 * rp), u3 = Vector512.Load(u + 3 * rp),
                u4 = Vector512.Load(u + 4 * rp), u5 = Vector512.Load(u + 5 * rp), u6 = Vector512.Load(u + 6 * rp), u7 = Vector512.Load(u + 7 * rp);
            Vector512<float> d0 = default, d1 = default, d2 = default, d3 = default, d4 = default, d5 = default, d6 = default, d7 = default;
            for (int j = 0; j < outputs; j++)
            {
                var w = Vector512.Load(b + (long)j * rp);
                var y0 = Vector512.Create(r[j]); var y1 = Vector512.Create(r[outputs + j]);
                var y2 = Vector512.Create(r[2 * outputs + j]); var y3 = Vector512.Create(r[3 * outputs + j]);
                var y4 = Vector512.Create(r[4 * outputs + j]); var y5 = Vector512.Create(r[5 * outputs + j]);
                var y6 = Vector512.Create(r[6 * outputs + j]); var y7 = Vector512.Create(r[7 * outputs + j]);
                d0 = Avx512F.FusedMultiplyAdd(y0, w, d0); d1 = Avx512F.FusedMultiplyAdd(y1, w, d1);
                d2 = Avx512F.FusedMultiplyAdd(y2, w, d2); d3 = Avx512F.FusedMultiplyAdd(y3, w, d3);
                d4 = Avx512F.FusedMultiplyAdd(y4, w, d4); d5 = Avx512F.FusedMultiplyAdd(y5, w, d5);
                d6 = Avx512F.FusedMultiplyAdd(y6, w, d6); d7 = Avx512F.FusedMultiplyAdd(y7, w, d7);
                // Two chains of four, then their sum: a fixed order, and half the latency of one chain of eight.
                var g = Avx512F.FusedMultiplyAdd(y3, u3, Avx512F.FusedMultiplyAdd(y2, u2, Avx512F.FusedMultiplyAdd(y1, u1, y0 * u0)));
                var h = Avx512F.FusedMultiplyAdd(y7, u7, Avx512F.FusedMultiplyAdd(y6, u6, Avx512F.FusedMultiplyAdd(y5, u5, y4 * u4)));
                float* target = partial + (long)j * rp;
                Vector512.Store(Vector512.Load(target) + (g + h), target);
            }
            float* o = dDown + (long)i * rp;
            Vector512.Store(d0 * s, o); Vector512.Store(d1 * s, o + rp); Vector512.Store(d2 * s, o + 2 * rp); Vector512.Store(d3 * s, o + 3 * rp);
            Vector512.Store(d4 * s, o + 4 * rp); Vector512.Store(d5 * s, o + 5 * rp); Vector512.Store(d6 * s, o + 6 * rp); Vector512.Store(d7 * s, o + 7 * rp);
        }
        for (; i < count; i++)
        {
            float* r = dy + (long)i * outputs;
            var u0 = Vector512.Load(down + (long)i * rp);
            Vector512<float> d = default;
            for (int j = 0; j < outputs; j++)
            {
                var y = Vector512.Create(r[j]);
                d = Avx512F.FusedMultiplyAdd(y, Vector512.Load(b + (long)j * rp), d);
                float* target = partial + (long)j * rp;
                Vector512.Store(Avx512F.FusedMultiplyAdd(y, u0, Vector512.Load(target)), target);
            }
            Vector512.Store(d * s, dDown + (long)i * rp);
        }
    }

    /// <summary>partial[p, 0..16) += sum_i x[i, p] d[i, 0..16) over rows i of x (count x inputs); d and partial rows ld apart.</summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static void Accumulate(float* x, int count, int inputs, float* d, int ldd, float* partial, int ldp)
    {
        int i = 0;
        for (; i + Group <= count; i += Group)
        {
            float* r = x + (long)i * inputs;
            float* e = d + (long)i * ldd;
            Vector512<float> e0 = Vector512.Load(e), e1 = Vector512.Load(e + ldd), e2 = Vector512.Load(e + 2 * ldd), e3 = Vector512.Load(e + 3 * ldd),
                e4 = Vector512.Load(e + 4 * ldd), e5 = Vector512.Load(e + 5 * ldd), e6 = Vector512.Load(e + 6 * ldd), e7 = Vector512.Load(e + 7 * ldd);
            for (int p = 0; p < inputs; p++)
            {
                var g = Avx512F.FusedMultiplyAdd(Vector512.Create(r[3 * inputs + p]), e3, Avx512F.FusedMultiplyAdd(Vector512.Create(r[2 * inputs + p]), e2,
                    Avx512F.FusedMultiplyAdd(Vector512.Create(r[inputs + p]), e1, Vector512.Create(r[p]) * e0)));
                var h = Avx512F.FusedMultiplyAdd(Vector512.Create(r[7 * inputs + p]), e7, Avx512F.FusedMultiplyAdd(Vector512.Create(r[6 * inputs + p]), e6,
                    Avx512F.FusedMultiplyAdd(Vector512.Create(r[5 * inputs + p]), e5, Vector512.Create(r[4 * inputs + p]) * e4)));
                float* target = partial + (long)p * ldp;
                Vector512.Store(Vector512.Load(target) + (g + h), target);
            }
        }
        for (; i < count; i++)
        {
            float* r = x + (long)i * inputs;
            var e0 = Vector512.Load(d + (long)i * ldd);
            for (int p = 0; p < inputs; p++)
            {
                float* target = partial + (long)p * ldp;
                Vector512.Store(Avx512F.FusedMultiplyAdd(Vector512.Create(r[p]), e0, Vector512.Load(target)), target);
            }
        }
    }

    /// <summary>
    /// gradX rows (count x inputs) += mask * (dDown a): each row's update in a row buffer, then masked into gradX. With
    /// dropout and <paramref name="x"/> given, the same mask (read or hashed once) also writes x * mask into <paramref name="dropped"/>.
    /// </summary>
    private static void AddUpdate(float* dDown, int rp, float* a, int rank, int inputs, int count, int first, long? seed, double probability, float* gradX,
        float* x, float* dropped, MaskBits mask)
    {
        using var buffer = new Scratch(inputs);
        float* update = buffer.Pointer;
        for (int i = 0; i < count; i++)
        {
            float* coefficients = dDown + (long)i * rp;
            float* target = gradX + (long)i * inputs;
            RowTimesMatrix(coefficients, a, rank, inputs, update);
            var updateRow = new ReadOnlySpan<float>(update, inputs);
            var targetRow = new Span<float>(target, inputs);
            if (seed is long s && x is not null) // one mask for both: x * mask into dropped, mask * update into gradX
                mask.Apply(first + i, new ReadOnlySpan<float>(x + (long)i * inputs, inputs), new Span<float>(dropped + (long)i * inputs, inputs),
                    accumulate: false, updateRow, targetRow, s, probability);
            else if (seed is long t)
                mask.Apply(first + i, updateRow, targetRow, accumulate: true, default, default, t, probability);
            else
            {
                int p = 0;
                for (; p + Lanes <= inputs; p += Lanes) Vector512.Store(Vector512.Load(target + p) + Vector512.Load(update + p), target + p);
                for (; p < inputs; p++) target[p] += update[p];
            }
        }
    }

    /// <summary>output[0..inputs) = sum_r c[r] a[r, 0..inputs), four vectors of columns at a time.</summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static void RowTimesMatrix(float* c, float* a, int rank, int inputs, float* output)
    {
        int p = 0;
        for (; p + 4 * Lanes <= inputs; p += 4 * Lanes)
        {
            Vector512<float> o0 = default, o1 = default, o2 = default, o3 = default;
            for (int r = 0; r < rank; r++)
            {
                var k = Vector512.Create(c[r]);
                float* row = a + (long)r * inputs + p;
                o0 = Avx512F.FusedMultiplyAdd(k, Vector512.Load(row), o0);
                o1 = Avx512F.FusedMultiplyAdd(k, Vector512.Load(row + Lanes), o1);
                o2 = Avx512F.FusedMultiplyAdd(k, Vector512.Load(row + 2 * Lanes), o2);
                o3 = Avx512F.FusedMultiplyAdd(k, Vector512.Load(row + 3 * Lanes), o3);
            }
            Vector512.Store(o0, output + p); Vector512.Store(o1, output + p + Lanes);
            Vector512.Store(o2, output + p + 2 * Lanes); Vector512.Store(o3, output + p + 3 * Lanes);
        }
        for (; p + Lanes <= inputs; p += Lanes)
        {
            Vector512<float> o = default;
            for (int r = 0; r < rank; r++) o = Avx512F.FusedMultiplyAdd(Vector512.Create(c[r]), Vector512.Load(a + (long)r * inputs + p), o);
            Vector512.Store(o, output + p);
        }
        for (; p < inputs; p++)
        {
            float o = 0;
            for (int r = 0; r < rank; r++) o = MathF.FusedMultiplyAdd(c[r], a[(long)r * inputs + p], o);
            output[p] = o;
        }
    }

    /// <summary>
    /// target[j, r] (n x rank, or rank x n when <paramref name="transposed"/>) = sum over blocks of partials[block, j, r]
    /// (blocks x n x rp), in block order: block 0's partials become the running sums, whole vectors at a time (each
    /// element's additions in the same order as one at a time), then its first rank columns are copied out.
    /// </summary>
    private static void SumBlocks(float* partials, int blocks, int n, int rp, float* target, int rank, bool transposed)
    {
        long size = (long)n * rp; // a multiple of 16
        for (long i = 0; i < size; i += Lanes)
        {
            var sum = Vector512<float>.Zero + Vector512.Load(partials + i);
            for (int block = 1; block < blocks; block++) sum += Vector512.Load(partials + block * size + i);
            Vector512.Store(sum, partials + i);
        }
        for (int j = 0; j < n; j++)
            for (int r = 0; r < rank; r++)
                target[transposed ? (long)r * n + j : (long)j * rank + r] = partials[(long)j * rp + r];
    }

    /// <summary>A pooled, pinned float buffer (64-byte aligned) for one call's scratch or partial sums.</summary>
    private readonly struct Scratch : IDisposable
    {
        private readonly float[]? array;
        private readonly System.Runtime.InteropServices.GCHandle handle;

        public float* Pointer { get; }

        public Scratch(int floats)
        {
            if (floats <= 0) return;
            array = ArrayPool<float>.Shared.Rent(floats + 16);
            handle = System.Runtime.InteropServices.GCHandle.Alloc(array, System.Runtime.InteropServices.GCHandleType.Pinned);
            nint start = handle.AddrOfPinnedObject();
            Pointer = (float*)((start + 63) & ~(nint)63);
        }

        public void Dispose()
        {
            if (array is null) return;
            handle.Free();
            ArrayPool<float>.Shared.Return(array);
        }
    }
}
