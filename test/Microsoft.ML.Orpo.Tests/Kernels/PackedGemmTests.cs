using System.Runtime.InteropServices;
using Microsoft.ML.Orpo.Modeling;
using Microsoft.ML.Orpo.Tests.Infrastructure;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Tests.Kernels;

/// <summary>
/// The AVX-512 GEMM (<see cref="PackedGemm"/>) against float64, its tensor wrapper and dispatcher, and the linear layer
/// built on it (whose values and gradients against the reference are <see cref="OpEquivalenceTests"/>').
/// </summary>
[TestClass]
public sealed class PackedGemmTests
{
    /// <summary>Every (transA, transB, accumulate) combination.</summary>
    private static readonly (bool TransA, bool TransB, bool Accumulate)[] Layouts =
        (from ta in new[] { false, true } from tb in new[] { false, true } from acc in new[] { false, true } select (ta, tb, acc)).ToArray();

    private static void RequireKernel()
    {
        if (!PackedGemm.IsSupported) Assert.Inconclusive("This CPU has no AVX-512F (or DOTNET_EnableAVX512=0): PackedGemm cannot run here.");
    }

    [TestMethod]
    [DataRow(1, 1, 1, DisplayName = "1 x 1 x 1: one padded tile")]
    [DataRow(13, 33, 17, DisplayName = "edges in every dimension")]
    [DataRow(150, 530, 70, DisplayName = "m past one row block, k past one depth block")]
    [DataRow(24, 40, 2100, DisplayName = "n past one column block (2048)")]
    [DataRow(36, 1100, 64, DisplayName = "three depth blocks summed")]
    public void MatchesFloat64ProductInEveryLayout(int m, int k, int n)
    {
        RequireKernel();
        foreach (var (transA, transB, accumulate) in Layouts)
        {
            using var scope = NewDisposeScope();
            manual_seed(m * 31 + k * 7 + n);
            var a = transA ? randn(k, m) : randn(m, k);
            var b = transB ? randn(n, k) : randn(k, n);
            var opA = (transA ? a.t() : a).to_type(ScalarType.Float64);
            var opB = (transB ? b.t() : b).to_type(ScalarType.Float64);
            const int pad = 5; // C's rows are wider than n: the kernel must use ldc and leave the rest alone
            var c = randn(m, n + pad);
            var before = c.clone();
            Run(a, transA, b, transB, c, m, k, n, n + pad, accumulate);
            var expected = opA.mm(opB) + (accumulate ? before.narrow(1, 0, n).to_type(ScalarType.Float64) : zeros(m, n, ScalarType.Float64));
            var bound = opA.abs().mm(opB.abs()) * 1e-5 + 1e-30;
            var error = (c.narrow(1, 0, n).to_type(ScalarType.Float64) - expected).abs();
            Assert.IsTrue(error.le(bound).all().ToBoolean(),
                $"{(transA ? "T" : "N")}{(transB ? "T" : "N")} accumulate={accumulate}: worst error {error.max().ToDouble():E2}");
            Assert.IsTrue(c.narrow(1, n, pad).eq(before.narrow(1, n, pad)).all().ToBoolean(), "wrote past n in a row");
        }
    }

    [TestMethod]
    [DataRow(13, 33, 17, DisplayName = "edges in every dimension")]
    [DataRow(150, 530, 70, DisplayName = "m past one row block, k past one depth block")]
    [DataRow(24, 40, 2100, DisplayName = "n past one column block (2048)")]
    public void BFloat16BEqualsTheProductWithBWidenedBitForBit(int m, int k, int n)
    {
        RequireKernel();
        foreach (var (transA, transB, accumulate) in Layouts)
        {
            using var scope = NewDisposeScope();
            manual_seed(m * 31 + k * 7 + n);
            var a = transA ? randn(k, m) : randn(m, k);
            var b16 = (transB ? randn(n, k) : randn(k, n)).to_type(ScalarType.BFloat16);
            var b32 = b16.to_type(ScalarType.Float32);
            var c16 = randn(m, n);
            var c32 = c16.clone();
            RunBFloat16(a, transA, b16, transB, c16, m, k, n, accumulate);
            Run(a, transA, b32, transB, c32, m, k, n, n, accumulate);
            Assert.IsTrue(c16.eq(c32).all().ToBoolean(),
                $"{(transA ? "T" : "N")}{(transB ? "T" : "N")} accumulate={accumulate}: worst difference {(c16 - c32).abs().max().ToDouble():E2}");
        }
    }

    [TestMethod]
    [DataRow(13, 33, 17, DisplayName = "one whole 12-row panel and one row past it")]
    [DataRow(150, 530, 70, DisplayName = "a row block of 144 and one of 6 (packed), two depth blocks")]
    [DataRow(300, 40, 2100, DisplayName = "row blocks of whole panels only, n past one column block")]
    [DataRow(11, 20, 40, DisplayName = "fewer rows than a panel: packed only")]
    public void RowMajorAReadInPlaceEqualsPackingItBitForBit(int m, int k, int n)
    {
        // The products read a row-major A where it lies (whole 12-row panels) and pack only the rows past them; the
        // path that packs every row is the one the kernel had before, and the sums must not change by a bit. A's rows
        // are wider than k (a view of a wider tensor), so the row stride is not k.
        RequireKernel();
        foreach (var (_, transB, accumulate) in Layouts.Where(l => !l.TransA))
        {
            using var scope = NewDisposeScope();
            manual_seed(m * 17 + k * 5 + n);
            const int pad = 3;
            var a = randn(m, k + pad);
            var b = transB ? randn(n, k) : randn(k, n);
            var inPlace = randn(m, n);
            var packed = inPlace.clone();
            RunRows(a, k + pad, b, transB, inPlace, m, k, n, accumulate, packA: false);
            RunRows(a, k + pad, b, transB, packed, m, k, n, accumulate, packA: true);
            Assert.IsTrue(inPlace.eq(packed).all().ToBoolean(),
                $"N{(transB ? "T" : "N")} accumulate={accumulate}: worst difference {(inPlace - packed).abs().max().ToDouble():E2}");
            var expected = a.narrow(1, 0, k).to_type(ScalarType.Float64).mm((transB ? b.t() : b).to_type(ScalarType.Float64));
            if (!accumulate)
                Assert.IsLessThan(1e-4, (inPlace.to_type(ScalarType.Float64) - expected).abs().max().ToDouble(), "against float64");
        }
    }

    [TestMethod]
    public void CpuMatmulTakesABFloat16RightFactorOnEitherPath()
    {
        using var scope = NewDisposeScope();
        manual_seed(5);
        var a = randn(300, 200);
        var b16 = randn(120, 200).to_type(ScalarType.BFloat16);       // a weight (out, in)
        var expected = a.to_type(ScalarType.Float64).mm(b16.to_type(ScalarType.Float64).t());
        foreach (bool kernel in PackedGemm.IsSupported ? new[] { true, false } : new[] { false })
        {
            using var policy = kernel ? null : KernelPolicy.Without(CpuKernels.MatrixProduct);
            long before = PackedGemm.ProductsOnThisThread;
            var product = CpuMatmul.Multiply(a, false, b16, true);
            var into = randn(300, 120);
            var old = into.clone();
            CpuMatmul.MultiplyInto(into, a, false, b16, true, accumulate: true);
            Assert.AreEqual(kernel && PackedGemm.IsEnabled, PackedGemm.ProductsOnThisThread > before, "which path ran");
            Assert.AreEqual(ScalarType.Float32, product.dtype);
            double bound = 1e-5 * a.abs().to_type(ScalarType.Float64).mm(b16.to_type(ScalarType.Float64).abs().t()).max().ToDouble();
            Assert.IsLessThan(bound, (product.to_type(ScalarType.Float64) - expected).abs().max().ToDouble(), $"kernel={kernel}");
            Assert.IsLessThan(bound * 2, (into.to_type(ScalarType.Float64) - old.to_type(ScalarType.Float64) - expected).abs().max().ToDouble(), $"kernel={kernel}, into");
        }
    }

    [TestMethod]
    public void ZeroDepthClearsOrKeepsTheOutput()
    {
        RequireKernel();
        using var scope = NewDisposeScope();
        var c = ones(3, 4);
        Run(empty(3, 0), false, empty(0, 4), false, c, 3, 0, 4, 4, accumulate: true);
        Assert.AreEqual(12.0, c.sum().ToDouble(), "accumulating an empty product keeps C");
        Run(empty(3, 0), false, empty(0, 4), false, c, 3, 0, 4, 4, accumulate: false);
        Assert.AreEqual(0.0, c.abs().sum().ToDouble(), "an empty product is zero");
    }

    [TestMethod]
    public void ResultsDoNotDependOnTheThreadCount()
    {
        using var kernel = KernelScopes.ForcePackedGemm();
        using var scope = NewDisposeScope();
        manual_seed(3);
        var a = randn(700, 600);
        var b = randn(300, 600);
        ThreadCounts.AssertSameResults(() => new[] { CpuMatmul.Multiply(a, false, b, true), CpuMatmul.Multiply(a, true, a, false) });
    }

    [TestMethod]
    public void CpuMatmulTakesTheKernelOnlyWhereItApplies()
    {
        using var kernel = KernelScopes.ForcePackedGemm();
        using var scope = NewDisposeScope();
        manual_seed(4);
        var a = randn(300, 200);
        var b = randn(200, 100);
        long before = PackedGemm.ProductsOnThisThread;
        var product = CpuMatmul.Multiply(a, false, b, false);
        Assert.AreEqual(before + 1, PackedGemm.ProductsOnThisThread, "6M multiply-adds of contiguous float32: the kernel");
        var c = empty(300, 100);
        Run(a, false, b, false, c, 300, 200, 100, 100, accumulate: false);
        Assert.IsTrue(product.eq(c).all().ToBoolean(), "the wrapper passes shapes and strides through unchanged");

        before = PackedGemm.ProductsOnThisThread;
        var small = CpuMatmul.Multiply(randn(20, 20), false, randn(20, 20), false);
        var wide = CpuMatmul.Multiply(a.to_type(ScalarType.Float64), false, b.to_type(ScalarType.Float64), false);
        var strided = CpuMatmul.Multiply(a.t().contiguous().t(), false, b, false);
        Tensor disabled;
        using (KernelPolicy.Without(CpuKernels.MatrixProduct)) disabled = CpuMatmul.Multiply(a, false, b, false);
        Assert.AreEqual(before, PackedGemm.ProductsOnThisThread, "small, float64, non-contiguous and disabled products go to libtorch");
        Assert.IsLessThan(1e-4, (strided - product).abs().max().ToDouble());
        Assert.IsLessThan(1e-4, (disabled - product).abs().max().ToDouble());
        Assert.IsLessThan(1e-9, (wide - a.to_type(ScalarType.Float64).mm(b.to_type(ScalarType.Float64))).abs().max().ToDouble());
        Assert.ThrowsExactly<ArgumentException>(() => CpuMatmul.Multiply(a, false, a, false));
    }

    [TestMethod]
    public void WithoutAScopeCpuMatmulFollowsTheDispatchersDecision()
    {
        // Runs on every CPU: the kernel is taken exactly where the dispatcher prefers it (not on Intel, not without
        // AVX-512), and the product is the same either way. The default policy, whatever ORPO_KERNELS says.
        using var policy = KernelScopes.DefaultPolicy();
        using var scope = NewDisposeScope();
        manual_seed(9);
        var a = randn(300, 200);
        var b = randn(200, 100);
        Assert.AreEqual(PackedGemm.PreferredOn(PackedGemm.Vendor, PackedGemm.IsSupported), PackedGemm.Preferred);
        Assert.AreEqual(PackedGemm.Preferred, PackedGemm.IsEnabled);
        long before = PackedGemm.ProductsOnThisThread;
        var product = CpuMatmul.Multiply(a, false, b, false);
        Assert.AreEqual(before + (PackedGemm.IsEnabled ? 1 : 0), PackedGemm.ProductsOnThisThread);
        Assert.IsLessThan(1e-4, (product - a.mm(b)).abs().max().ToDouble());
    }

    [TestMethod]
    public void TheDispatcherLeavesIntelToMklAndNeedsAvx512()
    {
        using var policy = KernelScopes.DefaultPolicy(); // the dispatcher's own decision, whatever ORPO_KERNELS says
        Assert.IsTrue(PackedGemm.PreferredOn("AuthenticAMD", avx512: true));
        Assert.IsTrue(PackedGemm.PreferredOn("HygonGenuine", avx512: true));
        Assert.IsFalse(PackedGemm.PreferredOn("GenuineIntel", avx512: true), "MKL runs its own AVX-512 kernels on Intel");
        Assert.IsFalse(PackedGemm.PreferredOn("AuthenticAMD", avx512: false));
        Assert.IsFalse(PackedGemm.PreferredOn("GenuineIntel", avx512: false));
        string vendor = PackedGemm.CpuVendor();
        Assert.IsTrue(vendor.Length is 0 or 12, $"CPUID vendor '{vendor}'");

        using (PackedGemm.SimulateVendor("GenuineIntel"))
        {
            Assert.IsFalse(PackedGemm.IsEnabled, "an Intel CPU keeps libtorch's GEMM");
            if (PackedGemm.IsSupported)
                using (KernelPolicy.ForcingPackedGemm()) Assert.IsTrue(PackedGemm.IsEnabled, "a test can still force the kernel there");
        }
        using (PackedGemm.SimulateVendor("AuthenticAMD"))
            Assert.AreEqual(PackedGemm.IsSupported, PackedGemm.IsEnabled, "AMD takes the kernel wherever AVX-512F is usable");
        using (KernelPolicy.Without(CpuKernels.MatrixProduct)) Assert.IsFalse(PackedGemm.IsEnabled);
        if (!PackedGemm.IsSupported) Assert.ThrowsExactly<PlatformNotSupportedException>(() => KernelPolicy.ForcingPackedGemm());
    }

    [TestMethod]
    public void TheWholeRunSeesTheVendorTheIntelLegAsksFor()
    {
        // .ci/run's intel leg sets ORPO_TEST_CPU_VENDOR; without this the leg would silently repeat the main one.
        string? asked = Environment.GetEnvironmentVariable("ORPO_TEST_CPU_VENDOR");
        Assert.AreEqual(string.IsNullOrEmpty(asked) ? PackedGemm.CpuVendor() : asked, PackedGemm.Vendor);
    }

    [TestMethod]
    public void LinearNodeSkipsGradientsNobodyNeeds()
    {
        using var kernel = KernelScopes.ForcePackedGemm();
        using var scope = NewDisposeScope();
        manual_seed(6);
        var x = randn(140, 160);                                   // an input that needs no gradient (frozen embeddings)
        var weight = randn(260, 160).requires_grad_(true);
        long before = PackedGemm.ProductsOnThisThread;
        PackedLinearFunction.apply(x, weight, null!).sum().backward();
        Assert.AreEqual(before + 2, PackedGemm.ProductsOnThisThread, "forward and weight gradient only");
        Assert.IsNotNull(weight.grad);
    }

    [TestMethod]
    public void TrainingStepThroughTheKernelEqualsLibtorchs()
    {
        // Wide enough that every projection (512 x 512 up) goes through PackedLinear and the LM head through the fused
        // loss's kernel products; with biases and grouped-query attention.
        using var kernel = KernelScopes.ForcePackedGemm();
        var config = new LlamaConfig
        {
            HiddenSize = 512, IntermediateSize = 600, NumHiddenLayers = 2, NumAttentionHeads = 8, NumKeyValueHeads = 4, HeadDim = 64,
            VocabSize = 2100, MaxPositionEmbeddings = 64, RmsNormEps = 1e-5, AttentionBias = true, OutputProjectionBias = true, MlpBias = true,
        }.Validate();
        using var scope = NewDisposeScope();
        manual_seed(8);
        using var network = new LlamaForCausalLM(config);
        network.train();
        var ids = randint(3, 2100, new long[] { 3, 24 });
        var targets = ids.narrow(1, 1, 23);

        (Tensor Loss, Tensor[] Gradients) Step()
        {
            network.zero_grad();
            var logits = network.Forward(ids.narrow(1, 0, 23));
            var loss = nn.functional.cross_entropy(logits.reshape(-1, 2100), targets.reshape(-1));
            loss.backward();
            return (loss.detach(), network.parameters().Select(p => p.grad!.clone()).ToArray());
        }

        long before = PackedGemm.ProductsOnThisThread;
        var (loss, gradients) = Step();
        Assert.IsGreaterThanOrEqualTo(before + 3 * 7 * 2, PackedGemm.ProductsOnThisThread, "seven projections per layer, three products each");
        (Tensor Loss, Tensor[] Gradients) reference;
        using (KernelPolicy.Without(CpuKernels.MatrixProduct)) reference = Step();
        Assert.IsLessThan(1e-5, Math.Abs(loss.ToDouble() - reference.Loss.ToDouble()));
        for (int i = 0; i < gradients.Length; i++)
        {
            double scale = reference.Gradients[i].abs().max().ToDouble() + 1e-12;
            double error = (gradients[i] - reference.Gradients[i]).abs().max().ToDouble();
            Assert.IsLessThan(1e-4 * scale, error, $"parameter {i}: worst {error:E2} at scale {scale:E2}");
        }
    }

    private static unsafe void RunBFloat16(Tensor a, bool transA, Tensor b, bool transB, Tensor c, int m, int k, int n, bool accumulate)
    {
        fixed (float* pa = MemoryMarshal.Cast<byte, float>(a.bytes), pc = MemoryMarshal.Cast<byte, float>(c.bytes))
        fixed (ushort* pb = MemoryMarshal.Cast<byte, ushort>(b.bytes))
            PackedGemm.MultiplyBFloat16B(m, n, k, pa, transA ? m : k, transA, pb, transB ? k : n, transB, pc, n, accumulate);
    }

    private static unsafe void RunRows(Tensor a, int lda, Tensor b, bool transB, Tensor c, int m, int k, int n, bool accumulate, bool packA)
    {
        fixed (float* pa = MemoryMarshal.Cast<byte, float>(a.bytes), pb = MemoryMarshal.Cast<byte, float>(b.bytes), pc = MemoryMarshal.Cast<byte, float>(c.bytes))
        {
            if (packA) PackedGemm.MultiplyPackingA(m, n, k, pa, lda, false, pb, transB ? k : n, transB, pc, n, accumulate);
            else PackedGemm.Multiply(m, n, k, pa, lda, false, pb, transB ? k : n, transB, pc, n, accumulate);
        }
    }

    private static unsafe void Run(Tensor a, bool transA, Tensor b, bool transB, Tensor c, int m, int k, int n, int ldc, bool accumulate)
    {
        fixed (float* pa = MemoryMarshal.Cast<byte, float>(a.bytes), pb = MemoryMarshal.Cast<byte, float>(b.bytes), pc = MemoryMarshal.Cast<byte, float>(c.bytes))
            PackedGemm.Multiply(m, n, k, pa, transA ? m : k, transA, pb, transB ? k : n, transB, pc, ldc, accumulate);
    }
}
