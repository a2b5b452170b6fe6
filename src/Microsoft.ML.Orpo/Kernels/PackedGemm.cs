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
        for (int half = 0; half < NR; half += 16)
            for (int p = 0; p < vectorised; p += 16)
                TransposeBlock(b, (long)(j0 + half) * ldb + p0 + p, ldb, panel + p * NR + half, NR, twelveRows: false);
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
            // Row-major A: 12 rows x 16 columns transposed in registers, 12 floats stored per column.
            int vectorised = count == MR ? kc & ~15 : 0;
            for (int p = 0; p < vectorised; p += 16)
                TransposeBlock(new Source(a, bfloat16: false), (long)(i0 + ir) * lda + p0 + p, lda, panel + p * MR, MR, twelveRows: true);
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
    /// 16 rows of 16 from <paramref name="b"/> (row i at <c>first + i * stride</c>) transposed in registers and stored
    /// as 16 rows, row q at <c>target + q * targetStride</c>: 32-bit then 64-bit interleaves within 128-bit lanes, then
    /// two rounds of 128-bit lane shuffles. With <paramref name="twelveRows"/> only 12 rows are read and 12 floats
    /// stored per row (an A panel). Locals, not an array: the 16 vectors stay in registers; through a stack array the
    /// products at 384-512 rows ran ~10% slower (benchmarks/README.md, "Measurements behind the code: PackedGemm").
    /// A method of its own, compiled optimised at once: inlined into its callers (which dynamic PGO may inline into
    /// the thread loop) it sometimes exhausted the inliner's budget and left its 16 loads as calls.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static void TransposeBlock(Source b, long first, int stride, float* target, int targetStride, bool twelveRows)
    {
        var r0 = b.Load16(first + 0L * stride); var r1 = b.Load16(first + 1L * stride); var r2 = b.Load16(first + 2L * stride); var r3 = b.Load16(first + 3L * stride);
        var r4 = b.Load16(first + 4L * stride); var r5 = b.Load16(first + 5L * stride); var r6 = b.Load16(first + 6L * stride); var r7 = b.Load16(first + 7L * stride);
        var r8 = b.Load16(first + 8L * stride); var r9 = b.Load16(first + 9L * stride); var r10 = b.Load16(first + 10L * stride); var r11 = b.Load16(first + 11L * stride);
        Vector512<float> r12 = r0, r13 = r0, r14 = r0, r15 = r0;
        if (!twelveRows)
        {
            r12 = b.Load16(first + 12L * stride); r13 = b.Load16(first + 13L * stride); r14 = b.Load16(first + 14L * stride); r15 = b.Load16(first + 15L * stride);
        }
        var t0 = Avx512F.UnpackLow(r0, r1); var t1 = Avx512F.UnpackHigh(r0, r1);
        var t2 = Avx512F.UnpackLow(r2, r3); var t3 = Avx512F.UnpackHigh(r2, r3);
        var t4 = Avx512F.UnpackLow(r4, r5); var t5 = Avx512F.UnpackHigh(r4, r5);
        var t6 = Avx512F.UnpackLow(r6, r7); var t7 = Avx512F.UnpackHigh(r6, r7);
        var t8 = Avx512F.UnpackLow(r8, r9); var t9 = Avx512F.UnpackHigh(r8, r9);
        var t10 = Avx512F.UnpackLow(r10, r11); var t11 = Avx512F.UnpackHigh(r10, r11);
        var t12 = Avx512F.UnpackLow(r12, r13); var t13 = Avx512F.UnpackHigh(r12, r13);
        var t14 = Avx512F.UnpackLow(r14, r15); var t15 = Avx512F.UnpackHigh(r14, r15);
        r0 = Avx512F.UnpackLow(t0.AsDouble(), t2.AsDouble()).AsSingle(); r1 = Avx512F.UnpackHigh(t0.AsDouble(), t2.AsDouble()).AsSingle();
        r2 = Avx512F.UnpackLow(t1.AsDouble(), t3.AsDouble()).AsSingle(); r3 = Avx512F.UnpackHigh(t1.AsDouble(), t3.AsDouble()).AsSingle();
        r4 = Avx512F.UnpackLow(t4.AsDouble(), t6.AsDouble()).AsSingle(); r5 = Avx512F.UnpackHigh(t4.AsDouble(), t6.AsDouble()).AsSingle();
        r6 = Avx512F.UnpackLow(t5.AsDouble(), t7.AsDouble()).AsSingle(); r7 = Avx512F.UnpackHigh(t5.AsDouble(), t7.AsDouble()).AsSingle();
        r8 = Avx512F.UnpackLow(t8.AsDouble(), t10.AsDouble()).AsSingle(); r9 = Avx512F.UnpackHigh(t8.AsDouble(), t10.AsDouble()).AsSingle();
        r10 = Avx512F.UnpackLow(t9.AsDouble(), t11.AsDouble()).AsSingle(); r11 = Avx512F.UnpackHigh(t9.AsDouble(), t11.AsDouble()).AsSingle();
        r12 = Avx512F.UnpackLow(t12.AsDouble(), t14.AsDouble()).AsSingle(); r13 = Avx512F.UnpackHigh(t12.AsDouble(), t14.AsDouble()).AsSingle();
        r14 = Avx512F.UnpackLow(t13.AsDouble(), t15.AsDouble()).AsSingle(); r15 = Avx512F.UnpackHigh(t13.AsDouble(), t15.AsDouble()).AsSingle();
        t0 = Avx512F.Shuffle4x128(r0, r4, 0x88); t4 = Avx512F.Shuffle4x128(r0, r4, 0xDD);
        t8 = Avx512F.Shuffle4x128(r8, r12, 0x88); t12 = Avx512F.Shuffle4x128(r8, r12, 0xDD);
        t1 = Avx512F.Shuffle4x128(r1, r5, 0x88); t5 = Avx512F.Shuffle4x128(r1, r5, 0xDD);
        t9 = Avx512F.Shuffle4x128(r9, r13, 0x88); t13 = Avx512F.Shuffle4x128(r9, r13, 0xDD);
        t2 = Avx512F.Shuffle4x128(r2, r6, 0x88); t6 = Avx512F.Shuffle4x128(r2, r6, 0xDD);
        t10 = Avx512F.Shuffle4x128(r10, r14, 0x88); t14 = Avx512F.Shuffle4x128(r10, r14, 0xDD);
        t3 = Avx512F.Shuffle4x128(r3, r7, 0x88); t7 = Avx512F.Shuffle4x128(r3, r7, 0xDD);
        t11 = Avx512F.Shuffle4x128(r11, r15, 0x88); t15 = Avx512F.Shuffle4x128(r11, r15, 0xDD);
        StoreRow(Avx512F.Shuffle4x128(t0, t8, 0x88), target + 0 * targetStride, twelveRows);
        StoreRow(Avx512F.Shuffle4x128(t0, t8, 0xDD), target + 8 * targetStride, twelveRows);
        StoreRow(Avx512F.Shuffle4x128(t4, t12, 0x88), target + 4 * targetStride, twelveRows);
        StoreRow(Avx512F.Shuffle4x128(t4, t12, 0xDD), target + 12 * targetStride, twelveRows);
        StoreRow(Avx512F.Shuffle4x128(t1, t9, 0x88), target + 1 * targetStride, twelveRows);
        StoreRow(Avx512F.Shuffle4x128(t1, t9, 0xDD), target + 9 * targetStride, twelveRows);
        StoreRow(Avx512F.Shuffle4x128(t5, t13, 0x88), target + 5 * targetStride, twelveRows);
        StoreRow(Avx512F.Shuffle4x128(t5, t13, 0xDD), target + 13 * targetStride, twelveRows);
        StoreRow(Avx512F.Shuffle4x128(t2, t10, 0x88), target + 2 * targetStride, twelveRows);
        StoreRow(Avx512F.Shuffle4x128(t2, t10, 0xDD), target + 10 * targetStride, twelveRows);
        StoreRow(Avx512F.Shuffle4x128(t6, t14, 0x88), target + 6 * targetStride, twelveRows);
        StoreRow(Avx512F.Shuffle4x128(t6, t14, 0xDD), target + 14 * targetStride, twelveRows);
        StoreRow(Avx512F.Shuffle4x128(t3, t11, 0x88), target + 3 * targetStride, twelveRows);
        StoreRow(Avx512F.Shuffle4x128(t3, t11, 0xDD), target + 11 * targetStride, twelveRows);
        StoreRow(Avx512F.Shuffle4x128(t7, t15, 0x88), target + 7 * targetStride, twelveRows);
        StoreRow(Avx512F.Shuffle4x128(t7, t15, 0xDD), target + 15 * targetStride, twelveRows);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreRow(Vector512<float> row, float* target, bool twelve)
    {
        if (!twelve)
        {
            Vector512.Store(row, target);
            return;
        }
        Vector256.Store(row.GetLower(), target);
        Vector128.Store(row.GetUpper().GetLower(), target + 8);
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
