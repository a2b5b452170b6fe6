using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Microsoft.ML.Orpo.Kernels;

/// <summary>
/// Single-precision matrix product <c>C = [C +] op(A) op(B)</c> for AVX-512 CPUs, in the BLIS layout (Van Zee and
/// van de Geijn, 2015): a KC x NC block of op(B) is packed into NR-column panels, an MC x KC block of op(A) into MR-row
/// panels, and a 12 x 32 register-blocked micro-kernel (24 accumulators, one broadcast of A times two vectors of B per
/// step) runs over them. libtorch's CPU build multiplies with MKL, which on non-Intel CPUs takes its AVX2
/// (<c>def_sgemm_kernel_0_zen</c>) path, slower on the training shapes than this kernel's AVX-512 loop. Every element
/// of C is summed in the same order whatever the thread count (threads split MC blocks of rows), so results do not
/// depend on it.
/// (benchmarks/README.md, "Measurements behind the code: PackedGemm")
/// </summary>
internal static unsafe class PackedGemm
{
    private const int MR = 12, NR = 32;
    // Tuned over KC 128-768, MC 72-288, NC 256-2048 and both loop orders: deeper panels pay for their C traffic.
    // (benchmarks/README.md, "Measurements behind the code: PackedGemm")
    private const int KC = 512, MC = 12 * MR, NC = 64 * NR;

    // Packing buffers, one set per thread that packs, kept for the thread's lifetime (a few MB): allocating per call
    // would page-fault a fresh 4 MB on every product. Pinned managed arrays, so that they go with their thread (a
    // thread pool retires idle threads); the panels start at the first 64-byte boundary inside.
    [ThreadStatic] private static float[]? packedA; // MC * KC floats
    [ThreadStatic] private static float[]? packedB; // KC * NC floats

    [ThreadStatic] private static long products;

    /// <summary>Products this thread has run through the kernel (tests check that a path takes it).</summary>
    public static long ProductsOnThisThread => products;

    /// <summary>Whether this CPU can run the kernel (AVX-512F).</summary>
    public static bool IsSupported => Avx512F.IsSupported;

    /// <summary>
    /// Whether products here use the kernel: where <see cref="KernelPolicy"/> forces it, wherever it is supported;
    /// otherwise where the policy allows it and <see cref="Preferred"/> says so.
    /// </summary>
    public static bool IsEnabled
    {
        get
        {
            var policy = KernelPolicy.Current;
            if (policy.ForcePackedGemm) return IsSupported;
            return policy.Mode == KernelMode.Auto && (policy.Disabled & CpuKernels.MatrixProduct) == 0 && Preferred;
        }
    }

    /// <summary>
    /// The dispatcher's own decision for this process (<see cref="PreferredOn"/> for this CPU). Tests and benchmarks
    /// ask it instead of assuming what a CPU gets.
    /// </summary>
    public static bool Preferred => simulatedVendor is { } vendor ? PreferredOn(vendor, IsSupported) : preferred;

    /// <summary>The vendor the dispatcher decides for: this CPU's, or the one <see cref="SimulateVendor"/> set.</summary>
    public static string Vendor => simulatedVendor ?? cpuVendor;

    private static readonly string cpuVendor = CpuVendor();
    private static readonly bool preferred = PreferredOn(cpuVendor, IsSupported);
    private static string? simulatedVendor;

    /// <summary>
    /// The kernel replaces libtorch's GEMM on AVX-512 CPUs except Intel's. libtorch multiplies with MKL, which on
    /// Intel dispatches to its own AVX-512 kernels and on other vendors to its AVX2 path (see benchmarks/README.md,
    /// "Which CPUs take which path"); without AVX-512 the kernel cannot run.
    /// </summary>
    /// <param name="vendor">The CPUID vendor string, e.g. "GenuineIntel" or "AuthenticAMD".</param>
    /// <param name="avx512">Whether the CPU (as .NET sees it) has AVX-512F.</param>
    public static bool PreferredOn(string vendor, bool avx512) => avx512 && vendor != "GenuineIntel";

    /// <summary>The CPUID vendor string ("GenuineIntel", "AuthenticAMD", ...), or "" where there is no x86 CPUID.</summary>
    public static string CpuVendor()
    {
        if (!X86Base.IsSupported) return "";
        var (_, ebx, ecx, edx) = X86Base.CpuId(0, 0); // the vendor string, 4 bytes each in EBX, EDX, ECX
        Span<int> parts = [ebx, edx, ecx];
        return System.Text.Encoding.ASCII.GetString(System.Runtime.InteropServices.MemoryMarshal.AsBytes(parts));
    }

    /// <summary>
    /// Until disposed, the whole process decides as it would on a CPU of <paramref name="vendor"/> with this CPU's
    /// instruction sets (the test suite runs an Intel leg on any AVX-512 machine this way).
    /// </summary>
    public static IDisposable SimulateVendor(string vendor)
    {
        ArgumentException.ThrowIfNullOrEmpty(vendor);
        string? outer = Interlocked.Exchange(ref simulatedVendor, vendor);
        return new KernelScope(() => Volatile.Write(ref simulatedVendor, outer));
    }

    /// <summary>
    /// C (m x n, row stride <paramref name="ldc"/>) = op(A) op(B), plus C's old values when <paramref name="accumulate"/>.
    /// op(A) is m x k: <c>a[i * lda + p]</c>, or <c>a[p * lda + i]</c> when <paramref name="transA"/>; op(B) is k x n:
    /// <c>b[p * ldb + j]</c>, or <c>b[j * ldb + p]</c> when <paramref name="transB"/>. C must not overlap A or B.
    /// The work is split over torch's intra-op threads unless <paramref name="parallel"/> is false (callers that
    /// already run one product per thread).
    /// </summary>
    public static void Multiply(int m, int n, int k, float* a, int lda, bool transA, float* b, int ldb, bool transB,
        float* c, int ldc, bool accumulate, bool parallel = true) =>
        Multiply(m, n, k, a, lda, transA, b, bfloat16B: false, ldb, transB, c, ldc, accumulate, parallel, packRowMajorA: false);

    /// <summary>
    /// As <see cref="Multiply(int, int, int, float*, int, bool, float*, int, bool, float*, int, bool, bool)"/>, with a
    /// row-major A packed into panels as a transposed one is, instead of read where it lies (the kernel's path until
    /// 2026-12-07): for the test that the two agree bit for bit and the benchmark that compares them.
    /// </summary>
    internal static void MultiplyPackingA(int m, int n, int k, float* a, int lda, bool transA, float* b, int ldb, bool transB,
        float* c, int ldc, bool accumulate) =>
        Multiply(m, n, k, a, lda, transA, b, bfloat16B: false, ldb, transB, c, ldc, accumulate, parallel: true, packRowMajorA: true);

    /// <summary>
    /// As the float32 overload, with B stored in bfloat16 (<paramref name="b"/> holds bfloat16 bit patterns): each
    /// element is widened to float32 exactly as it is packed, so the result equals the product with a converted copy of
    /// B, bit for bit, without making that copy (a frozen bfloat16 base under LoRA).
    /// </summary>
    public static void MultiplyBFloat16B(int m, int n, int k, float* a, int lda, bool transA, ushort* b, int ldb, bool transB,
        float* c, int ldc, bool accumulate, bool parallel = true) =>
        Multiply(m, n, k, a, lda, transA, b, bfloat16B: true, ldb, transB, c, ldc, accumulate, parallel, packRowMajorA: false);

    private static void Multiply(int m, int n, int k, float* a, int lda, bool transA, void* b, bool bfloat16B, int ldb, bool transB,
        float* c, int ldc, bool accumulate, bool parallel, bool packRowMajorA)
    {
        if (!IsSupported) throw new PlatformNotSupportedException("PackedGemm needs AVX-512F.");
        products++;
        if (m <= 0 || n <= 0) return;
        if (k <= 0)
        {
            if (!accumulate)
                for (int i = 0; i < m; i++) new Span<float>(c + (long)i * ldc, n).Clear();
            return;
        }
        float* bBlock = Buffer(ref packedB, KC * NC);
        nint aAddress = (nint)a, bAddress = (nint)b, cAddress = (nint)c, bBlockAddress = (nint)bBlock;
        for (int jc = 0; jc < n; jc += NC)
        {
            int nc = Math.Min(NC, n - jc);
            for (int pc = 0; pc < k; pc += KC)
            {
                int kc = Math.Min(KC, k - pc);
                bool add = accumulate || pc > 0;
                int panels = (nc + NR - 1) / NR;
                int jcc = jc, pcc = pc;
                ForEach(parallel, panels, panel =>
                    PackB(new Source((void*)bAddress, bfloat16B), ldb, transB, pcc, kc, jcc + panel * NR, Math.Min(NR, nc - panel * NR),
                        (float*)bBlockAddress + (long)panel * kc * NR));
                ForEach(parallel, (m + MC - 1) / MC, block =>
                {
                    int ic = block * MC, mc = Math.Min(MC, m - ic);
                    float* aBlock = Buffer(ref packedA, MC * KC), cBlock = (float*)cAddress + (long)ic * ldc + jcc;
                    int direct = transA || packRowMajorA ? 0 : mc / MR * MR; // whole 12-row panels of a row-major A
                    if (direct > 0)
                        BlockProduct((float*)aAddress + (long)ic * lda + pcc, (long)MR * lda, lda, 1, (float*)bBlockAddress, direct, nc, kc, cBlock, ldc, add);
                    if (direct == mc) return;
                    PackA((float*)aAddress, lda, transA, ic + direct, mc - direct, pcc, kc, aBlock);
                    BlockProduct(aBlock, (long)MR * kc, 1, MR, (float*)bBlockAddress, mc - direct, nc, kc, cBlock + (long)direct * ldc, ldc, add);
                });
            }
        }
    }

    private static void ForEach(bool parallel, int blocks, Action<int> block)
    {
        if (parallel) CpuKernel.ForEachBlock(blocks, block);
        else for (int i = 0; i < blocks; i++) block(i);
    }

    private static float* Buffer(ref float[]? slot, int floats)
    {
        slot ??= GC.AllocateUninitializedArray<float>(floats + 16, pinned: true);
        nint start = (nint)Unsafe.AsPointer(ref slot[0]);
        return (float*)((start + 63) & ~(nint)63);
    }

    /// <summary>B's storage: float32, or bfloat16 widened to float32 as it is read (exact).</summary>
    private readonly struct Source(void* start, bool bfloat16)
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public Vector512<float> Load16(long index) => bfloat16
            ? Avx512F.ShiftLeftLogical(Avx512F.ConvertToVector512UInt32(Vector256.Load((ushort*)start + index)), 16).AsSingle()
            : Vector512.Load((float*)start + index);

        public float this[long index]
        {
            [MethodImpl(MethodImplOptions.AggressiveInlining)]
            get => bfloat16 ? BitConverter.Int32BitsToSingle(((ushort*)start)[index] << 16) : ((float*)start)[index];
        }
    }

    /// <summary>op(B) rows [p0, p0 + kc), columns [j0, j0 + cols) -> kc x NR panel (columns past cols are zero).</summary>
    private static void PackB(Source b, int ldb, bool transB, int p0, int kc, int j0, int cols, float* panel)
    {
        if (!transB)
        {
            for (int p = 0; p < kc; p++)
            {
                long source = (long)(p0 + p) * ldb + j0;
                float* target = panel + p * NR;
                if (cols == NR)
                {
                    Vector512.Store(b.Load16(source), target);
                    Vector512.Store(b.Load16(source + 16), target + 16);
                }
                else
                {
                    for (int j = 0; j < cols; j++) target[j] = b[source + j];
                    for (int j = cols; j < NR; j++) target[j] = 0;
                }
            }
            return;
        }
        // Transposed: B's columns are stored rows (a weight in x W^T); 16 x 16 blocks are transposed in registers.
        int vectorised = cols == NR ? kc & ~15 : 0;
        Vector512<float>* rows = stackalloc Vector512<float>[16], scratch = stackalloc Vector512<float>[16];
        for (int half = 0; half < NR; half += 16)
            for (int p = 0; p < vectorised; p += 16)
            {
                for (int r = 0; r < 16; r++) rows[r] = b.Load16((long)(j0 + half + r) * ldb + p0 + p);
                Transpose16(rows, scratch);
                for (int q = 0; q < 16; q++) Vector512.Store(rows[q], panel + (p + q) * NR + half);
            }
        for (int j = 0; j < cols; j++)
        {
            long source = (long)(j0 + j) * ldb + p0;
            for (int p = vectorised; p < kc; p++) panel[p * NR + j] = b[source + p];
        }
        for (int j = cols; j < NR; j++)
            for (int p = 0; p < kc; p++) panel[p * NR + j] = 0;
    }

    /// <summary>op(A) rows [i0, i0 + mc), columns [p0, p0 + kc) -> MR-row panels of kc x MR (rows past mc are zero).</summary>
    private static void PackA(float* a, int lda, bool transA, int i0, int mc, int p0, int kc, float* block)
    {
        Vector512<float>* rows = stackalloc Vector512<float>[16], scratch = stackalloc Vector512<float>[16];
        for (int ir = 0; ir < mc; ir += MR)
        {
            int count = Math.Min(MR, mc - ir);
            float* panel = block + (long)ir * kc;
            if (transA)
            {
                for (int p = 0; p < kc; p++)
                {
                    float* source = a + (long)(p0 + p) * lda + i0 + ir, target = panel + p * MR;
                    if (count == MR)
                    {
                        Vector256.Store(Vector256.Load(source), target);
                        Vector128.Store(Vector128.Load(source + 8), target + 8);
                        continue;
                    }
                    for (int i = 0; i < count; i++) target[i] = source[i];
                    for (int i = count; i < MR; i++) target[i] = 0;
                }
                continue;
            }
            // Row-major A: 12 rows (plus 4 ignored) x 16 columns transposed in registers, 12 floats stored per column.
            int vectorised = count == MR ? kc & ~15 : 0;
            for (int p = 0; p < vectorised; p += 16)
            {
                for (int i = 0; i < MR; i++) rows[i] = Vector512.Load(a + (long)(i0 + ir + i) * lda + p0 + p);
                for (int i = MR; i < 16; i++) rows[i] = rows[0];
                Transpose16(rows, scratch);
                for (int q = 0; q < 16; q++)
                {
                    float* target = panel + (p + q) * MR;
                    Vector256.Store(rows[q].GetLower(), target);
                    Vector128.Store(rows[q].GetUpper().GetLower(), target + 8);
                }
            }
            for (int i = 0; i < count; i++)
            {
                float* source = a + (long)(i0 + ir + i) * lda + p0;
                for (int p = vectorised; p < kc; p++) panel[p * MR + i] = source[p];
            }
            for (int i = count; i < MR; i++)
                for (int p = 0; p < kc; p++) panel[p * MR + i] = 0;
        }
    }

    /// <summary>
    /// In place, r[i][j] becomes r[j][i] for a 16 x 16 block: 32-bit then 64-bit interleaves within 128-bit lanes,
    /// then two rounds of 128-bit lane shuffles.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Transpose16(Vector512<float>* r, Vector512<float>* t)
    {
        for (int i = 0; i < 16; i += 2)
        {
            t[i] = Avx512F.UnpackLow(r[i], r[i + 1]);       // per lane: r_i[0] r_i+1[0] r_i[1] r_i+1[1]
            t[i + 1] = Avx512F.UnpackHigh(r[i], r[i + 1]);  // per lane: columns 2 and 3
        }
        for (int g = 0; g < 16; g += 4)                     // u[g + c], lane l: rows g..g+3 at column 4l + c
        {
            r[g] = Avx512F.UnpackLow(t[g].AsDouble(), t[g + 2].AsDouble()).AsSingle();
            r[g + 1] = Avx512F.UnpackHigh(t[g].AsDouble(), t[g + 2].AsDouble()).AsSingle();
            r[g + 2] = Avx512F.UnpackLow(t[g + 1].AsDouble(), t[g + 3].AsDouble()).AsSingle();
            r[g + 3] = Avx512F.UnpackHigh(t[g + 1].AsDouble(), t[g + 3].AsDouble()).AsSingle();
        }
        for (int c = 0; c < 4; c++)
        {
            t[c] = Avx512F.Shuffle4x128(r[c], r[4 + c], 0x88);      // lanes 0, 2 of rows 0-3 and 4-7
            t[4 + c] = Avx512F.Shuffle4x128(r[c], r[4 + c], 0xDD);  // lanes 1, 3
            t[8 + c] = Avx512F.Shuffle4x128(r[8 + c], r[12 + c], 0x88);
            t[12 + c] = Avx512F.Shuffle4x128(r[8 + c], r[12 + c], 0xDD);
        }
        for (int c = 0; c < 4; c++)
        {
            r[c] = Avx512F.Shuffle4x128(t[c], t[8 + c], 0x88);          // column c
            r[8 + c] = Avx512F.Shuffle4x128(t[c], t[8 + c], 0xDD);      // column 8 + c
            r[4 + c] = Avx512F.Shuffle4x128(t[4 + c], t[12 + c], 0x88); // column 4 + c
            r[12 + c] = Avx512F.Shuffle4x128(t[4 + c], t[12 + c], 0xDD);
        }
    }

    /// <summary>
    /// C block (mc x nc) [+]= A block times packed B block; edge tiles go through a local tile. A is 12-row panels,
    /// panel q at <c>a + q * panelStride</c> with <see cref="Kernel"/>'s strides inside: packed (kc * 12; 1, 12, rows
    /// past mc zero) or a row-major A read where it lies (12 * lda; lda, 1, whole panels only): its rows are already
    /// contiguous in the depth the kernel walks, so packing them only copied them. Each A panel (kc x 12, 24 KB) stays
    /// in L1 while the B panels stream past it, the faster of the two loop orders (benchmarks/README.md, "Measurements
    /// behind the code: PackedGemm").
    /// </summary>
    private static void BlockProduct(float* a, long panelStride, nint rowStride, nint depthStride, float* bBlock, int mc, int nc, int kc,
        float* c, int ldc, bool add)
    {
        float* tile = stackalloc float[MR * NR];
        for (int ir = 0; ir < mc; ir += MR)
        {
            int rows = Math.Min(MR, mc - ir);
            float* aPanel = a + ir / MR * panelStride;
            for (int jr = 0; jr < nc; jr += NR)
            {
                int cols = Math.Min(NR, nc - jr);
                float* bPanel = bBlock + (long)jr * kc, target = c + (long)ir * ldc + jr;
                if (rows == MR && cols == NR)
                {
                    Kernel(kc, aPanel, rowStride, depthStride, bPanel, target, ldc, add);
                    continue;
                }
                Kernel(kc, aPanel, rowStride, depthStride, bPanel, tile, NR, add: false);
                for (int i = 0; i < rows; i++)
                    for (int j = 0; j < cols; j++)
                        target[(long)i * ldc + j] = add ? target[(long)i * ldc + j] + tile[i * NR + j] : tile[i * NR + j];
            }
        }
    }

    /// <summary>
    /// The 12 x 32 tile of C at <paramref name="c"/> [+]= A's 12 rows times b (kc x 32, packed): A's element (i, p) is
    /// at <c>a[i * rowStride + p * depthStride]</c>, a packed panel (1, 12) or rows read where they lie (lda, 1). Four
    /// row pointers and two strides address the 12 rows.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Kernel(int kc, float* a, nint rowStride, nint depthStride, float* b, float* c, int ldc, bool add)
    {
        nint lda = rowStride, l2 = 2 * rowStride;
        float* a3 = a + 3 * lda, a6 = a + 6 * lda, a9 = a + 9 * lda;
        Vector512<float> c00 = default, c01 = default, c10 = default, c11 = default, c20 = default, c21 = default,
            c30 = default, c31 = default, c40 = default, c41 = default, c50 = default, c51 = default,
            c60 = default, c61 = default, c70 = default, c71 = default, c80 = default, c81 = default,
            c90 = default, c91 = default, ca0 = default, ca1 = default, cb0 = default, cb1 = default;
        for (int p = 0; p < kc; p++, a += depthStride, a3 += depthStride, a6 += depthStride, a9 += depthStride, b += NR)
        {
            var b0 = Vector512.Load(b);
            var b1 = Vector512.Load(b + 16);
            var x = Vector512.Create(a[0]); c00 = Avx512F.FusedMultiplyAdd(x, b0, c00); c01 = Avx512F.FusedMultiplyAdd(x, b1, c01);
            x = Vector512.Create(a[lda]); c10 = Avx512F.FusedMultiplyAdd(x, b0, c10); c11 = Avx512F.FusedMultiplyAdd(x, b1, c11);
            x = Vector512.Create(a[l2]); c20 = Avx512F.FusedMultiplyAdd(x, b0, c20); c21 = Avx512F.FusedMultiplyAdd(x, b1, c21);
            x = Vector512.Create(a3[0]); c30 = Avx512F.FusedMultiplyAdd(x, b0, c30); c31 = Avx512F.FusedMultiplyAdd(x, b1, c31);
            x = Vector512.Create(a3[lda]); c40 = Avx512F.FusedMultiplyAdd(x, b0, c40); c41 = Avx512F.FusedMultiplyAdd(x, b1, c41);
            x = Vector512.Create(a3[l2]); c50 = Avx512F.FusedMultiplyAdd(x, b0, c50); c51 = Avx512F.FusedMultiplyAdd(x, b1, c51);
            x = Vector512.Create(a6[0]); c60 = Avx512F.FusedMultiplyAdd(x, b0, c60); c61 = Avx512F.FusedMultiplyAdd(x, b1, c61);
            x = Vector512.Create(a6[lda]); c70 = Avx512F.FusedMultiplyAdd(x, b0, c70); c71 = Avx512F.FusedMultiplyAdd(x, b1, c71);
            x = Vector512.Create(a6[l2]); c80 = Avx512F.FusedMultiplyAdd(x, b0, c80); c81 = Avx512F.FusedMultiplyAdd(x, b1, c81);
            x = Vector512.Create(a9[0]); c90 = Avx512F.FusedMultiplyAdd(x, b0, c90); c91 = Avx512F.FusedMultiplyAdd(x, b1, c91);
            x = Vector512.Create(a9[lda]); ca0 = Avx512F.FusedMultiplyAdd(x, b0, ca0); ca1 = Avx512F.FusedMultiplyAdd(x, b1, ca1);
            x = Vector512.Create(a9[l2]); cb0 = Avx512F.FusedMultiplyAdd(x, b0, cb0); cb1 = Avx512F.FusedMultiplyAdd(x, b1, cb1);
        }
        Store(c, c00, c01, add); c += ldc;
        Store(c, c10, c11, add); c += ldc;
        Store(c, c20, c21, add); c += ldc;
        Store(c, c30, c31, add); c += ldc;
        Store(c, c40, c41, add); c += ldc;
        Store(c, c50, c51, add); c += ldc;
        Store(c, c60, c61, add); c += ldc;
        Store(c, c70, c71, add); c += ldc;
        Store(c, c80, c81, add); c += ldc;
        Store(c, c90, c91, add); c += ldc;
        Store(c, ca0, ca1, add); c += ldc;
        Store(c, cb0, cb1, add);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store(float* c, Vector512<float> low, Vector512<float> high, bool add)
    {
        if (add)
        {
            low += Vector512.Load(c);
            high += Vector512.Load(c + 16);
        }
        Vector512.Store(low, c);
        Vector512.Store(high, c + 16);
    }
}
