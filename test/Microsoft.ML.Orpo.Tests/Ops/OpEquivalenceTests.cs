using Microsoft.ML.Orpo.Tests.Infrastructure;
using Microsoft.ML.Orpo.Training;
using TorchSharp;
using Microsoft.ML.Orpo.Ops;
using Microsoft.ML.Orpo.Ops.Reference;
using TorchSharp.Modules;
using F = TorchSharp.torch.nn.functional;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Tests.Ops;

/// <summary>
/// Every operation's CPU kernel against its reference (<c>Ops/Reference</c>), in values and gradients, on a grid of
/// shapes: grouped-query ratios 1/2/4/7, head widths 6 to 128, odd sizes, single tokens, bfloat16 where the op takes it.
/// Each case runs the op once under a policy that enables its kernel (set here, whatever <c>ORPO_KERNELS</c> says) and
/// once under <see cref="KernelPolicy.ReferenceOnly"/>, backpropagates <c>(output * upstream).sum()</c> with the same
/// fixed random upstream, and compares outputs and the gradients of every input and weight. It also checks that the
/// kernel really ran: its <c>Supports</c> takes the inputs under the kernel policy and, for kernels built on
/// <see cref="PackedGemm"/>, the GEMM counted products; the reference run must count none.
/// </summary>
[TestClass]
public sealed class OpEquivalenceTests
{
    // Tolerances: max |kernel - reference| over max |reference|, for each output and gradient. In float32 both sides
    // compute the same sums in another order (blocked GEMM against MKL, vector lanes, chunked softmax, a 2-ulp exp),
    // which moves results by a few float32 roundings (6e-8 each) of the largest terms: observed up to 6e-6 on this grid
    // (attention's query gradient over 130 keys), so 2e-5 passes any summation order and fails a real error (a wrong
    // element, a dropped chunk, a mis-scaled gradient). Where products or gradients are rounded to bfloat16 on both
    // sides (8-bit mantissa: 4e-3 per rounding), one element may round the other way: observed up to 5e-3, so 2e-2.
    // Where no kernel applies, both runs are the same code: bit for bit.
    private const double Float32 = 2e-5, BFloat16 = 2e-2, Exact = 0;

    private const int ChunkRows = 16;

    /// <summary>How the kernel side runs and what it must show.</summary>
    private enum Path
    {
        /// <summary>The kernel takes the inputs under the default kernel policy (the packed GEMM as the vendor decides).</summary>
        Kernel,
        /// <summary>The kernel multiplies through the packed GEMM, forced on (inconclusive without AVX-512); it must count products.</summary>
        GemmKernel,
        /// <summary>No kernel takes these inputs (bfloat16): both runs give identical bits, and even a forced GEMM counts nothing.</summary>
        NoKernel,
    }

    private sealed record Case(string Name, Func<Setup> Build, Path Path = Path.Kernel, bool Gradients = true, double Tolerance = Float32);

    /// <summary>One case's inputs and the op over them.</summary>
    private sealed class Setup : IDisposable
    {
        /// <summary>The op on the kernel's side (true) or the reference's; outputs that need no gradient come back detached.</summary>
        public required Func<bool, Tensor[]> Run { get; init; }
        public string[] Outputs { get; init; } = ["output"];
        /// <summary>The inputs and weights whose gradients are compared.</summary>
        public required (string Name, Tensor Tensor)[] Leaves { get; init; }
        /// <summary>Asked under the kernel policy: whether the kernel takes these inputs (false for <see cref="Path.NoKernel"/>).</summary>
        public required Func<bool> KernelApplies { get; init; }
        /// <summary>Products the packed GEMM must at least count on the kernel's side with gradients (<see cref="Path.GemmKernel"/>; 1 without).</summary>
        public int GemmProducts { get; init; } = 1;
        /// <summary>Products the packed GEMM may at most count there: a frozen weight must cost no weight-gradient product.</summary>
        public int? MaxGemmProducts { get; init; }
        /// <summary>
        /// The least scale an error is measured against: for results that are zero in exact arithmetic, where the
        /// reference holds only rounding noise of its terms, the size of those terms.
        /// </summary>
        public double ScaleFloor { get; init; }
        public IDisposable[] Owned { get; init; } = [];

        public void Dispose()
        {
            foreach (var owned in Owned) owned.Dispose();
        }
    }

    private sealed record Result(Tensor[] Outputs, Tensor[] Gradients, Tensor[] Upstream);

    public static IEnumerable<object[]> CaseNames => Cases.Select(c => new object[] { c.Name });

    [TestMethod]
    [DynamicData(nameof(CaseNames))]
    public void KernelMatchesReference(string name)
    {
        var c = Cases.Single(x => x.Name == name);
        // One intra-op thread: the blocked attention runs its (batch, key/value head) units on pool threads, and the
        // GEMM counts products per thread. Results do not depend on the thread count (each kernel's own test checks that).
        int threads = get_num_threads();
        set_num_threads(1);
        try
        {
            using var scope = NewDisposeScope();
            manual_seed(1234);
            using var setup = c.Build();
            var kernel = Run(c, setup, kernelSide: true, upstream: null);
            var reference = Run(c, setup, kernelSide: false, kernel.Upstream);
            for (int i = 0; i < setup.Outputs.Length; i++)
                AssertAgree(kernel.Outputs[i], reference.Outputs[i], c.Tolerance, setup.ScaleFloor, setup.Outputs[i]);
            for (int i = 0; i < kernel.Gradients.Length; i++)
                AssertAgree(kernel.Gradients[i], reference.Gradients[i], c.Tolerance, setup.ScaleFloor, $"{setup.Leaves[i].Name} gradient");
        }
        finally
        {
            set_num_threads(threads);
        }
    }

    /// <summary>The op under the kernel policy or the reference one: outputs, then the leaves' gradients of (output * upstream).sum().</summary>
    private static Result Run(Case c, Setup setup, bool kernelSide, Tensor[]? upstream)
    {
        using var policy = kernelSide ? KernelScopes.DefaultPolicy() : KernelPolicy.ReferenceOnly();
        using var gemm = !kernelSide ? null
            : c.Path == Path.GemmKernel ? KernelScopes.ForcePackedGemm()
            : c.Path == Path.NoKernel && PackedGemm.IsSupported ? KernelPolicy.ForcingPackedGemm() : null;
        using var noGrad = c.Gradients ? null : no_grad();
        string side = kernelSide ? "kernel run" : "reference run";
        if (kernelSide) Assert.AreEqual(c.Path != Path.NoKernel, setup.KernelApplies(), $"whether the kernel takes these inputs ({side})");
        long before = PackedGemm.ProductsOnThisThread;
        var outputs = setup.Run(kernelSide);
        Assert.HasCount(setup.Outputs.Length, outputs);
        if (upstream is null)
        {
            manual_seed(99);
            upstream = outputs.Select(o => randn(o.shape).to_type(o.dtype)).ToArray();
        }
        var gradients = Array.Empty<Tensor>();
        if (c.Gradients)
        {
            var objective = outputs.Zip(upstream).Where(p => p.First.requires_grad).Select(p => (p.First * p.Second).sum()).Aggregate((a, b) => a + b);
            gradients = autograd.grad([objective], setup.Leaves.Select(l => l.Tensor).ToArray()).ToArray();
        }
        long products = PackedGemm.ProductsOnThisThread - before;
        if (kernelSide && c.Path == Path.GemmKernel)
        {
            Assert.IsGreaterThanOrEqualTo(c.Gradients ? setup.GemmProducts : 1, products, $"products through the packed GEMM ({side})");
            if (c.Gradients && setup.MaxGemmProducts is int most)
                Assert.IsLessThanOrEqualTo(most, products, $"products through the packed GEMM ({side}): none for a frozen weight's gradient");
        }
        else if (!kernelSide || c.Path == Path.NoKernel)
            Assert.AreEqual(0L, products, $"products through the packed GEMM ({side})");
        return new Result(outputs.Select(o => o.detach()).ToArray(), gradients, upstream);
    }

    private static void AssertAgree(Tensor kernel, Tensor reference, double tolerance, double scaleFloor, string what)
    {
        Assert.AreEqual(reference.dtype, kernel.dtype, $"{what}: type");
        CollectionAssert.AreEqual(reference.shape, kernel.shape, $"{what}: shape");
        var expected = reference.to_type(ScalarType.Float64);
        double scale = Math.Max(expected.abs().max().ToDouble(), scaleFloor);
        double error = (kernel.to_type(ScalarType.Float64) - expected).abs().max().ToDouble() / Math.Max(scale, 1e-30);
        Console.WriteLine($"{what}: relative error {error:E2} (tolerance {tolerance:E0}) at scale {scale:E2}");
        Assert.IsGreaterThan(0, scale, $"{what}: the reference is not all zero");
        Assert.IsLessThanOrEqualTo(tolerance, error, $"{what}: relative error {error:E2}");
    }

    // Attention's grid (initialised before Cases, which reads it).
    private static readonly int[] HeadDims = [8, 16, 32, 64, 96, 128];
    private static readonly (int Heads, int KvHeads)[] Groupings = [(4, 4), (8, 4), (8, 2), (7, 1)];
    private static readonly int[] Lengths = [1, 5, 37, 130];

    private static readonly Case[] Cases =
    [
        // Linear: many rows through the packed GEMM (forward, input and weight gradient: three products).
        new("Linear 2x37 rows, 257 -> 513, bias", () => Linear([2, 37], 257, 513, bias: true), Path.GemmKernel),
        new("Linear 2x20 rows, 515 -> 1031", () => Linear([2, 20], 515, 1031, bias: false), Path.GemmKernel),
        new("Linear 120 rows, 512 -> 256 (key/value projection), bias", () => Linear([120], 512, 256, bias: true), Path.GemmKernel),
        new("Linear 2x37 rows, 257 -> 513, bias, no grad", () => Linear([2, 37], 257, 513, bias: true), Path.GemmKernel, Gradients: false),
        // Linear: decoding's few rows (inference only) through FewRowsLinear.
        new("Linear 1 row (single token), 515 -> 1031, bias, no grad", () => Linear([1, 1], 515, 1031, bias: true), Gradients: false),
        new("Linear 2x1 rows, 512 -> 512, no grad", () => Linear([2, 1], 512, 512, bias: false), Gradients: false),
        new("Linear 3 rows, 515 -> 1031, bias, no grad", () => Linear([3, 1], 515, 1031, bias: true), Gradients: false),
        new("Linear 11 rows, 515 -> 1031, no grad", () => Linear([11], 515, 1031, bias: false), Gradients: false),
        new("Linear 16 rows, 600 -> 513, bias, no grad", () => Linear([2, 8], 600, 513, bias: true), Gradients: false),
        new("Linear bf16, 2x37 rows, 257 -> 513, bias", () => Linear([2, 37], 257, 513, bias: true, ScalarType.BFloat16), Path.NoKernel, Tolerance: Exact),
        new("Linear bf16, 1 row, 515 -> 1031, no grad", () => Linear([1, 1], 515, 1031, bias: false, ScalarType.BFloat16), Path.NoKernel, Gradients: false, Tolerance: Exact),

        // LoRA on a frozen float32 base: the base through the kernels (many rows: forward and input gradient, no weight
        // gradient), against the adapter's definition W x + b + s B (A x) through libtorch; input, A and B gradients.
        new("Linear + LoRA r4, 2x37 rows, 257 -> 513, frozen base", () => AdaptedLinear([2, 37], 257, 513, rank: 4, bias: false), Path.GemmKernel),
        new("Linear + LoRA r8, 120 rows, 512 -> 256, frozen base and bias", () => AdaptedLinear([120], 512, 256, rank: 8, bias: true), Path.GemmKernel),
        new("Linear + LoRA r4, 1 row (single token), 515 -> 1031, no grad", () => AdaptedLinear([1, 1], 515, 1031, rank: 4, bias: false), Gradients: false),
        // A bfloat16-stored frozen weight multiplied in float32 (FrozenLinear), against F.linear on the converted weight.
        new("FrozenLinear bf16 weight, 2x37 rows, 257 -> 513", () => FrozenLinear([2, 37], 257, 513, bias: false, rank: 0)),
        new("FrozenLinear bf16 weight and bias, 5 rows, 64 -> 172", () => FrozenLinear([5], 64, 172, bias: true, rank: 0)),
        new("FrozenLinear bf16 weight + LoRA r4, 2x37 rows, 257 -> 513", () => FrozenLinear([2, 37], 257, 513, bias: false, rank: 4)),
        new("FrozenLinear bf16 weight, 1 row, 515 -> 1031, no grad", () => FrozenLinear([1, 1], 515, 1031, bias: false, rank: 0), Gradients: false),
        // Decoding with a bfloat16 base: FewRowsLinear reads the stored bfloat16 weight and widens it a row at a time.
        new("FewRowsLinear bf16 weight and bias, 3 rows, 515 -> 1031, no grad", () => FrozenLinear([3, 1], 515, 1031, bias: true, rank: 0, fewRows: true), Gradients: false),
        new("FewRowsLinear bf16 weight + LoRA r4, 11 rows, 515 -> 1031, no grad", () => FrozenLinear([11], 515, 1031, bias: false, rank: 4, fewRows: true), Gradients: false),

        // The LM head while decoding: few rows against a large odd-sized vocabulary (FewRowsLinear).
        new("Logits 1 row, vocabulary 8191 x 64, no grad", () => Logits([1, 1], 8191, 64), Gradients: false),
        new("Logits 3 rows, vocabulary 5003 x 53, no grad", () => Logits([3, 1], 5003, 53), Gradients: false),
        new("Logits 2x8 rows, vocabulary 4099 x 128, no grad", () => Logits([2, 8], 4099, 128), Gradients: false),
        new("Logits bf16, 4 rows, vocabulary 8191 x 64, no grad", () => Logits([4, 1], 8191, 64, ScalarType.BFloat16), Path.NoKernel, Gradients: false, Tolerance: Exact),

        // RMSNorm (FusedRmsNorm): input and weight gradients.
        .. from width in new[] { 64, 96, 515 }
           from rows in new[] { 1, 37 }
           select new Case($"RmsNorm {rows} row{(rows == 1 ? "" : "s")} of {width}", () => RmsNorm(rows == 1 ? [1, width] : [1, rows, width])),
        new("RmsNorm 3x7 rows of 20", () => RmsNorm([3, 7, 20])),
        new("RmsNorm 130 rows of 3 (three chunks)", () => RmsNorm([130, 3])),
        new("RmsNorm 37 rows of 515, no grad", () => RmsNorm([1, 37, 515]), Gradients: false),
        new("RmsNorm bf16 input, 37 rows of 64", () => RmsNorm([1, 37, 64], ScalarType.BFloat16), Path.NoKernel, Tolerance: Exact),

        // The attention kernels' rotation on its own (RotateInto, RotateBack) against the rotary op: the same arithmetic.
        new("Rotary 2x37 tokens, 4 heads of 8", () => Rotary(2, 4, 37, 8), Tolerance: Exact),
        new("Rotary 2x5 tokens, 2 heads of 64", () => Rotary(2, 2, 5, 64), Tolerance: Exact),
        new("Rotary 1 token, 7 heads of 128", () => Rotary(1, 7, 1, 128), Tolerance: Exact),
        new("Rotary 3x9 tokens, 3 heads of 6", () => Rotary(3, 3, 9, 6), Tolerance: Exact),
        new("Rotary 2x5 tokens, 3 heads of 42 (16 + 4 + 1 pairs)", () => Rotary(2, 3, 5, 42), Tolerance: Exact),

        // Causal attention in the concatenated layout, rotation fused: every head width with every grouping, the
        // lengths 1, 5, 37 and 130 rotating so that each width and each grouping meets each length.
        .. from d in HeadDims.Index()
           from g in Groupings.Index()
           let length = Lengths[(d.Index + g.Index) % Lengths.Length]
           select AttentionCase(2, g.Item.Heads, g.Item.KvHeads, length, d.Item),
        AttentionCase(2, 4, 1, 19, 6),
        AttentionCase(1, 3, 3, 9, 12),
        AttentionCase(2, 8, 2, 37, 8, gradients: false),
        AttentionCase(2, 8, 2, 37, 64, gradients: false),
        AttentionCase(2, 8, 4, 37, 8, ScalarType.BFloat16),
        AttentionCase(2, 8, 4, 37, 64, ScalarType.BFloat16),
        // Rotary tables shared by the batch (1, 1, T, d): the blocked kernel cannot rotate them, the op rotates first.
        AttentionCase(2, 8, 2, 37, 64, sharedTables: true),

        // The SwiGLU tail (FusedSwiGlu): gate, up, down weight and bias gradients; odd MLP widths.
        new("SwiGlu 2x37 rows, 173 -> 64, bias", () => SwiGlu([2, 37], 173, 64, bias: true)),
        new("SwiGlu 3x20 rows, 1031 -> 96 (four chunks)", () => SwiGlu([3, 20], 1031, 96, bias: false)),
        new("SwiGlu 1 row (single token), 515 -> 512, bias", () => SwiGlu([1, 1], 515, 512, bias: true)),
        new("SwiGlu 5 rows (2-D), 9 -> 7, bias", () => SwiGlu([5], 9, 7, bias: true)),
        new("SwiGlu 2x5 rows, 173 -> 64, bias, no grad", () => SwiGlu([2, 5], 173, 64, bias: true), Gradients: false),
        new("SwiGlu bf16, 2x37 rows, 173 -> 64, bias", () => SwiGlu([2, 37], 173, 64, bias: true, ScalarType.BFloat16), Path.NoKernel, Tolerance: Exact),
        // With a LoRA adapter on the frozen down projection (FusedSwiGlu.ProductWithGradient, then the adapted projection).
        new("SwiGlu + down_proj LoRA r4, 2x37 rows, 173 -> 64", () => AdaptedSwiGlu([2, 37], 173, 64, rank: 4)),
        new("SwiGlu + down_proj LoRA r8, 3x20 rows, 1031 -> 96 (four chunks)", () => AdaptedSwiGlu([3, 20], 1031, 96, rank: 8)),
        new("SwiGlu + down_proj LoRA r4, 1 row (single token), 515 -> 512", () => AdaptedSwiGlu([1, 1], 515, 512, rank: 4)),
        new("SwiGlu + down_proj LoRA r4, 2x5 rows, 173 -> 64, no grad", () => AdaptedSwiGlu([2, 5], 173, 64, rank: 4), Gradients: false),
        // A bfloat16 frozen down projection (LoraOptions.BFloat16Base), with and without its adapter.
        new("SwiGlu + bf16 down_proj LoRA r4, 2x37 rows, 173 -> 64", () => AdaptedSwiGlu([2, 37], 173, 64, rank: 4, bfloat16Down: true)),
        new("SwiGlu + bf16 down_proj (no adapter), 3x20 rows, 1031 -> 96", () => AdaptedSwiGlu([3, 20], 1031, 96, rank: 0, bfloat16Down: true)),

        // Token log-probabilities in chunks of 16 rows (ChunkedLogProbs) against the full logits (chunkRows 0).
        new("TokenLogProbs 2x37 rows, vocabulary 4099 x 96", () => TokenLogProbs([2, 37], 4099, 96)),
        new("TokenLogProbs 2x37 rows, vocabulary 4099 x 96, packed GEMM", () => TokenLogProbs([2, 37], 4099, 96), Path.GemmKernel),
        new("TokenLogProbs 1 row, vocabulary 1031 x 24", () => TokenLogProbs([1, 1], 1031, 24)),
        new("TokenLogProbs bf16, 2x37 rows, vocabulary 4099 x 64", () => TokenLogProbs([2, 37], 4099, 64, ScalarType.BFloat16), Tolerance: BFloat16),

        // The fused LM head + ORPO loss (FusedOrpoLoss, SoftmaxRows) against token log-probabilities and the objective through autograd.
        new("OrpoHead 5 pairs, vocabulary 2053 x 96, chunks of 40 rows", () => OrpoHead(5, 2053, 96, chunkRows: 40)),
        new("OrpoHead 5 pairs, vocabulary 2053 x 96, chunks of 40 rows, packed GEMM", () => OrpoHead(5, 2053, 96, chunkRows: 40), Path.GemmKernel),
        new("OrpoHead 4 pairs, vocabulary 1031 x 64, one pair per chunk", () => OrpoHead(4, 1031, 64, chunkRows: 1)),
        new("OrpoHead 1 pair, vocabulary 1031 x 64, one chunk", () => OrpoHead(1, 1031, 64, chunkRows: 10_000)),
        new("OrpoHead bf16, 5 pairs, vocabulary 2053 x 96, chunks of 40 rows", () => OrpoHead(5, 2053, 96, chunkRows: 40, ScalarType.BFloat16), Tolerance: BFloat16),
    ];

    private static Case AttentionCase(int batch, int heads, int kvHeads, int length, int headDim, ScalarType dtype = ScalarType.Float32,
        bool gradients = true, bool sharedTables = false)
    {
        bool small = headDim <= KernelThresholds.SmallHeadMaxDim;
        string name = $"CausalAttention {batch}x{length} tokens, {heads}/{kvHeads} heads of {headDim} ({(small ? "small-head" : "blocked")} kernel)"
            + (dtype == ScalarType.Float32 ? "" : $", {dtype} inputs") + (sharedTables ? ", rotary tables shared by the batch" : "")
            + (gradients ? "" : ", no grad");
        return new Case(name, () => Attention(batch, heads, kvHeads, length, headDim, dtype, sharedTables), small ? Path.Kernel : Path.GemmKernel,
            gradients, dtype == ScalarType.Float32 ? Float32 : BFloat16);
    }

    private static (string, Tensor)[] WithBias((string, Tensor)[] leaves, Tensor? bias) => bias is null ? leaves : [.. leaves, ("bias", bias)];

    private static Setup Linear(long[] rows, int inputs, int outputs, bool bias, ScalarType? matmulType = null)
    {
        var module = nn.Linear(inputs, outputs, hasBias: bias);
        var x = randn([.. rows, inputs]).requires_grad_(true);
        bool fewRows = rows.Aggregate(1L, (a, b) => a * b) <= KernelThresholds.FewRowsMaxRows;
        return new Setup
        {
            Run = _ => [Op.Linear(x, module, matmulType)],
            Leaves = WithBias([("input", x), ("weight", module.weight!)], module.bias),
            // A matmul type other than the weight's is the reference's (mixed precision): no kernel.
            KernelApplies = () => matmulType is null && (fewRows
                ? KernelPolicy.Allows(CpuKernels.FewRowsProduct) && FewRowsLinear.Supports(x, module.weight!)
                : PackedGemm.IsEnabled),
            GemmProducts = 3, // forward, input gradient, weight gradient
            Owned = [module],
        };
    }

    /// <summary>A rank-<paramref name="rank"/> adapter with non-zero A and B (scale 2), dropout off; and the module frozen.</summary>
    private static LoraAdapter Adapter(Linear module, int rank)
    {
        foreach (var parameter in module.parameters()) parameter.requires_grad_(false);
        long inputs = module.in_features, outputs = module.out_features;
        return new LoraAdapter(new Parameter(randn(rank, inputs) / Math.Sqrt(inputs)), new Parameter(randn(outputs, rank) * 0.2),
            scale: 2, new LoraDropout(0), index: 0);
    }

    /// <summary>The definition: <c>F.linear(x, W, b) + s B (A x)</c> in float32, the weight and bias converted when stored otherwise.</summary>
    private static Tensor AdaptedReference(Tensor x, Linear module, LoraAdapter? adapter)
    {
        var y = F.linear(x, module.weight!.to_type(ScalarType.Float32), module.bias?.to_type(ScalarType.Float32));
        return adapter is null ? y : y + F.linear(F.linear(x, adapter.A), adapter.B) * adapter.Scale;
    }

    private static Setup AdaptedLinear(long[] rows, int inputs, int outputs, int rank, bool bias)
    {
        var module = nn.Linear(inputs, outputs, hasBias: bias);
        var adapter = Adapter(module, rank);
        var x = randn([.. rows, inputs]).requires_grad_(true);
        bool fewRows = rows.Aggregate(1L, (a, b) => a * b) <= KernelThresholds.FewRowsMaxRows;
        return new Setup
        {
            Run = kernel => [kernel ? Op.Linear(x, module, null, adapter) : AdaptedReference(x, module, adapter)],
            Leaves = [("input", x), ("lora A", adapter.A), ("lora B", adapter.B)],
            KernelApplies = () => fewRows
                ? KernelPolicy.Allows(CpuKernels.FewRowsProduct) && FewRowsLinear.Supports(x, module.weight!)
                : PackedGemm.IsEnabled,
            GemmProducts = 2,    // forward, input gradient
            MaxGemmProducts = 2, // and no weight gradient
            Owned = [module, adapter],
        };
    }

    private static Setup FrozenLinear(long[] rows, int inputs, int outputs, bool bias, int rank, bool fewRows = false)
    {
        var module = nn.Linear(inputs, outputs, hasBias: bias);
        var adapter = rank > 0 ? Adapter(module, rank) : null;
        foreach (var parameter in module.parameters()) parameter.requires_grad_(false);
        module.to(ScalarType.BFloat16);
        var x = randn([.. rows, inputs]).requires_grad_(true);
        return new Setup
        {
            Run = kernel => [kernel ? Op.Linear(x, module, ScalarType.Float32, adapter) : AdaptedReference(x, module, adapter)],
            Leaves = adapter is null ? [("input", x)] : [("input", x), ("lora A", adapter.A), ("lora B", adapter.B)],
            // Op.Linear's rule for FrozenLinear: a frozen weight stored in another type than the product's; decoding's
            // few rows of it go through FewRowsLinear.
            KernelApplies = fewRows
                ? () => KernelPolicy.Allows(CpuKernels.FewRowsProduct) && FewRowsLinear.Supports(x, module.weight!)
                : () => module.weight!.dtype == ScalarType.BFloat16 && !module.weight.requires_grad && module.bias?.requires_grad != true,
            Owned = adapter is null ? [module] : [module, adapter],
        };
    }

    private static Setup AdaptedSwiGlu(long[] rows, int width, int outputs, int rank, bool bfloat16Down = false)
    {
        var gate = (randn([.. rows, width]) * linspace(0.1, 12, width)).requires_grad_(true);
        var up = randn([.. rows, width]).requires_grad_(true);
        var down = nn.Linear(width, outputs, hasBias: false);
        var adapter = rank > 0 ? Adapter(down, rank) : null;
        if (bfloat16Down)
        {
            foreach (var parameter in down.parameters()) parameter.requires_grad_(false);
            down.to(ScalarType.BFloat16);
        }
        return new Setup
        {
            Run = kernel => [kernel ? Op.SwiGlu(gate, up, down, null, adapter) : AdaptedReference(ReferenceSwiGlu.Product(gate, up), down, adapter)],
            Leaves = adapter is null ? [("gate", gate), ("up", up)] : [("gate", gate), ("up", up), ("lora A", adapter.A), ("lora B", adapter.B)],
            KernelApplies = () => KernelPolicy.Allows(CpuKernels.SwiGlu) && FusedSwiGlu.SupportsProduct(gate, up),
            Owned = adapter is null ? [down] : [down, adapter],
        };
    }

    private static Setup Logits(long[] rows, int vocabulary, int width, ScalarType? matmulType = null)
    {
        var hidden = randn([.. rows, width]);
        var weight = randn(vocabulary, width) * 0.05;
        return new Setup
        {
            Run = _ => [Op.Logits(hidden, weight, (long)vocabulary * width, matmulType)],
            Leaves = [],
            KernelApplies = () => matmulType is null && KernelPolicy.Allows(CpuKernels.FewRowsProduct) && FewRowsLinear.Supports(hidden, weight),
        };
    }

    private static Setup RmsNorm(long[] shape, ScalarType dtype = ScalarType.Float32)
    {
        var x = (randn(shape) * 3).to_type(dtype).requires_grad_(true);
        var weight = (randn(shape[^1]) * 0.5 + 1).requires_grad_(true);
        return new Setup
        {
            Run = _ => [Op.RmsNorm(x, weight, 1e-5)],
            Leaves = [("input", x), ("weight", weight)],
            KernelApplies = () => KernelPolicy.Allows(CpuKernels.RmsNorm) && FusedRmsNorm.Supports(x, weight),
        };
    }

    /// <summary>cos/sin (B, 1, T, d) of the rotate-half convention at random positions and frequencies.</summary>
    private static (Tensor Cos, Tensor Sin) Angles(long batch, long length, long headDim)
    {
        var half = rand(batch, 1, length, headDim / 2) * 20;
        var angles = cat(new[] { half, half }, -1);
        return (angles.cos(), angles.sin());
    }

    private static Setup Rotary(int batch, int heads, int length, int headDim)
    {
        var leaf = randn(batch, length, heads, headDim).requires_grad_(true);
        var x = leaf.transpose(1, 2);                                                    // the projections' layout
        var (cos, sin) = Angles(batch, length, headDim);
        return new Setup
        {
            Run = kernel => [kernel ? KernelRotation.apply(x, cos, sin) : Op.Rotary(x, cos, sin)],
            Leaves = [("input", leaf)],
            KernelApplies = () => BlockedCausalAttention.SupportsRotation(x, cos),
        };
    }

    private static Setup Attention(int batch, int heads, int kvHeads, int length, int headDim, ScalarType dtype, bool sharedTables)
    {
        // Queries, keys and values as the projections make them: (B, T, heads, d) memory seen as (B, heads, T, d).
        var qLeaf = (randn(batch, length, heads, headDim) * 2).to_type(dtype).requires_grad_(true);
        var kLeaf = (randn(batch, length, kvHeads, headDim) * 2).to_type(dtype).requires_grad_(true);
        var vLeaf = randn(batch, length, kvHeads, headDim).to_type(dtype).requires_grad_(true);
        var (q, k, v) = (qLeaf.transpose(1, 2), kLeaf.transpose(1, 2), vLeaf.transpose(1, 2));
        var (cos, sin) = Angles(sharedTables ? 1 : batch, length, headDim);
        var attentionHeads = new AttentionHeads(heads, kvHeads, headDim);
        return new Setup
        {
            Run = _ => [Op.Attention(q, k, v, cos, sin, attentionHeads, new AttentionLayout(batch, length), 0)],
            Leaves = [("query", qLeaf), ("key", kLeaf), ("value", vLeaf)],
            // A single token attends to itself with probability 1: its query and key gradients are zero, the
            // reference's rounding noise of terms about as large as the inputs (1 to 2).
            ScaleFloor = length == 1 ? 1 : 0,
            KernelApplies = () =>
            {
                var (q32, k32, v32) = (q.to_type(cos.dtype), k.to_type(cos.dtype), v.to_type(cos.dtype)); // what the op hands its kernel
                return KernelPolicy.Allows(CpuKernels.Attention) && (headDim <= KernelThresholds.SmallHeadMaxDim
                    ? CausalAttention.Supports(q32, k32, v32, cos)
                    : BlockedCausalAttention.Supports(q32, k32, v32) && BlockedCausalAttention.SupportsRotation(q32, cos) != sharedTables);
            },
        };
    }

    private static Setup SwiGlu(long[] rows, int width, int outputs, bool bias, ScalarType? matmulType = null)
    {
        var type = matmulType ?? ScalarType.Float32;
        // Gate values out to +-40: the logistic function must neither overflow nor lose its tails.
        var gate = (randn([.. rows, width]) * linspace(0.1, 12, width)).to_type(type).requires_grad_(true);
        var up = randn([.. rows, width]).to_type(type).requires_grad_(true);
        var down = nn.Linear(width, outputs, hasBias: bias);
        return new Setup
        {
            Run = _ => [Op.SwiGlu(gate, up, down, matmulType)],
            Leaves = WithBias([("gate", gate), ("up", up), ("down weight", down.weight!)], down.bias),
            KernelApplies = () => KernelPolicy.Allows(CpuKernels.SwiGlu) && FusedSwiGlu.Supports(gate, up, down),
            Owned = [down],
        };
    }

    private static Setup TokenLogProbs(long[] rows, int vocabulary, int width, ScalarType? matmulType = null)
    {
        var hidden = randn([.. rows, width]).requires_grad_(true);
        var weight = (randn(vocabulary, width) * 0.1).requires_grad_(true);
        var targets = randint(0, vocabulary, rows, dtype: ScalarType.Int64);
        return new Setup
        {
            // Chunks of 16 rows: 74 rows end in a partial chunk, a single row is one.
            Run = kernel => [Op.TokenLogProbs(hidden, weight, (long)vocabulary * width, targets, kernel ? ChunkRows : 0, matmulType)],
            Leaves = [("hidden", hidden), ("weight", weight)],
            KernelApplies = () => true, // the chunked path is chosen by chunkRows, its products by the GEMM's policy
        };
    }

    private static Setup OrpoHead(int pairs, int vocabulary, int width, int chunkRows, ScalarType? matmulType = null)
    {
        // Each pair's chosen response, rejected response and chosen prompt rows (scored in the NLL only), shuffled.
        var random = new Random(pairs * 31 + vocabulary);
        var entries = Enumerable.Range(0, pairs).SelectMany(p =>
                Enumerable.Repeat((Sequence: (long)p, IsResponse: true), random.Next(2, 30))
                    .Concat(Enumerable.Repeat((Sequence: (long)(pairs + p), IsResponse: true), random.Next(2, 30)))
                    .Concat(Enumerable.Repeat((Sequence: (long)p, IsResponse: false), random.Next(0, 10))))
            .OrderBy(_ => random.Next()).ToArray();
        long n = entries.Length, m = n + 9;                                                // hidden rows nobody scores, too
        var hidden = randn(m, width).requires_grad_(true);
        var weight = (randn(vocabulary, width) * 0.1).requires_grad_(true);
        var targets = randint(0, vocabulary, [n], dtype: ScalarType.Int64);
        var rows = ScoredRows.Create(randperm(m).narrow(0, 0, n), targets, tensor(entries.Select(e => e.Sequence).ToArray()),
            tensor(entries.Select(e => e.IsResponse).ToArray()), pairs);
        var objective = new OrpoLossScale(StepNllTokens: n * 1.5, StepPairs: pairs + 2, Lambda: 0.5).Objective;
        return new Setup
        {
            Run = kernel =>
            {
                if (!kernel) return ReferenceOrpoHead(hidden, weight, rows, objective, matmulType);
                var (loss, groupSums) = Op.OrpoHead(hidden, weight, rows, objective, chunkRows, matmulType, scratch: null);
                return [loss, groupSums];
            },
            Outputs = ["loss", "group sums"],
            Leaves = [("hidden", hidden), ("weight", weight)],
            // The row kernel takes the (rows, V) logits in the hidden states' type.
            KernelApplies = () => KernelPolicy.Allows(CpuKernels.Softmax) && SoftmaxRows.Supports(empty(new long[] { 1, vocabulary }, hidden.dtype)),
            Owned = [rows],
        };
    }

    /// <summary>The fused head's definition: token log-probabilities of the scored rows, group sums and counts, the objective.</summary>
    private static Tensor[] ReferenceOrpoHead(Tensor hidden, Tensor weight, ScoredRows rows, PairObjective objective, ScalarType? matmulType)
    {
        var logp = Op.TokenLogProbs(hidden.index_select(0, rows.Sources), weight, weight.numel(), rows.Targets, 0, matmulType); // (N)
        long groups = rows.Pairs * ScoredRows.Kinds;
        var sums = zeros(groups, logp.dtype).index_add(0, rows.Groups, logp, 1).view(rows.Pairs, ScoredRows.Kinds);
        var counts = zeros(groups, logp.dtype).index_add(0, rows.Groups, ones_like(logp), 1).view(rows.Pairs, ScoredRows.Kinds);
        Tensor Mean(int kind) => sums.select(1, kind) / counts.select(1, kind);
        var nllSum = (sums.select(1, ScoredRows.ChosenResponse).sum() + sums.select(1, ScoredRows.PromptNll).sum()).neg();
        return [objective(Mean(ScoredRows.ChosenResponse), Mean(ScoredRows.RejectedResponse), nllSum), sums.detach()];
    }

    /// <summary>The attention kernels' rotation as an op of its own: <see cref="CausalAttention.RotateInto"/> forward, <see cref="CausalAttention.RotateBack"/> backward.</summary>
    private sealed class KernelRotation : autograd.SingleTensorFunction<KernelRotation>
    {
        public override string Name => "KernelRotation";

        public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
        {
            CustomBackward.Starting(ctx);
            var (x, cos, sin) = ((Tensor)vars[0], (Tensor)vars[1], (Tensor)vars[2]);
            ctx.save_for_backward([cos, sin]);
            var y = empty(x.shape);
            CausalAttention.RotateInto(x, y, cos, sin);
            return y;
        }

        public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor grad_output) => CustomBackward.Run(ctx, grad_output, saved =>
            [CausalAttention.RotateBack(grad_output.contiguous(), saved[0], saved[1]), null!, null!]);
    }
}
