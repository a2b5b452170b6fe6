using Microsoft.ML.Orpo.Generation;
using Microsoft.ML.Orpo.Modeling;
using Microsoft.ML.Orpo.Tests.Infrastructure;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Tests.Kernels;

/// <summary>
/// The decoding product <c>x W^T</c> for a few rows (<see cref="FewRowsLinear"/>): independent of the thread count, what
/// it takes, and decoding through it. Its values against the reference are <see cref="OpEquivalenceTests"/>'.
/// </summary>
[TestClass]
public sealed class FewRowsLinearTests
{
    [TestMethod]
    public void ResultsDoNotDependOnTheThreadCount()
    {
        using var scope = NewDisposeScope();
        manual_seed(2);
        var x = randn(5, 64);
        var weight = randn(20000, 64);
        ThreadCounts.AssertSameResults(() => new[] { FewRowsLinear.Apply(x, weight) });
    }

    [TestMethod]
    public void OnlyInferenceOnAFewFloat32RowsAgainstALargeWeight()
    {
        using var scope = NewDisposeScope();
        var weight = randn(32000, 64);
        Assert.IsTrue(FewRowsLinear.Supports(randn(16, 64), weight));
        Assert.IsFalse(FewRowsLinear.Supports(randn(17, 64), weight), "more rows: libtorch's GEMM");
        Assert.IsFalse(FewRowsLinear.Supports(randn(2, 64), randn(512, 64)), "a weight that stays in cache: libtorch");
        Assert.IsFalse(FewRowsLinear.Supports(randn(2, 64).requires_grad_(true), weight), "training needs the autograd graph");
        using (no_grad())
            Assert.IsTrue(FewRowsLinear.Supports(randn(2, 64).requires_grad_(true), weight), "no graph is recorded under no_grad");
        Assert.IsFalse(FewRowsLinear.Supports(randn(2, 64, dtype: ScalarType.Float64), weight.to_type(ScalarType.Float64)));
        Assert.IsFalse(FewRowsLinear.Supports(randn(2, 64), weight.t().contiguous().t()), "a transposed weight view");
    }

    [TestMethod]
    public void DecodingThroughTheKernelMatchesTheFullForwardPass()
    {
        // Wide enough that every projection (512 x 512 up) and the LM head take the kernel while decoding; with
        // biases and grouped-query attention. The full forward pass (20 rows) stays on libtorch's GEMM.
        var config = new LlamaConfig
        {
            HiddenSize = 512, IntermediateSize = 600, NumHiddenLayers = 2, NumAttentionHeads = 8, NumKeyValueHeads = 4, HeadDim = 64,
            VocabSize = 2100, MaxPositionEmbeddings = 64, RmsNormEps = 1e-5, AttentionBias = true, OutputProjectionBias = true, MlpBias = true,
        }.Validate();
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        manual_seed(12);
        using var network = new LlamaForCausalLM(config);
        network.eval();
        var ids = randint(3, 2100, new long[] { 2, 10 });
        var whole = network.Forward(ids).select(1, 9);                                                // (2, V)
        using var cache = network.CreateCache(2, 10, ScalarType.Float32, CPU);
        network.HiddenStates(ids.narrow(1, 0, 9), cache: cache);
        var mask = AttentionMasks.KeyPadding(ones(2, 10, dtype: ScalarType.Bool), ScalarType.Float32);
        Assert.IsTrue(FewRowsLinear.Supports(randn(2, 1, 512), network.LmHeadWeight), "the decoding step's LM head takes the kernel");
        var decoded = network.Forward(ids.narrow(1, 9, 1), full(2, 1, 9L, dtype: ScalarType.Int64), mask, cache).select(1, 0);
        double error = (decoded - whole).abs().max().ToDouble(), scale = whole.abs().max().ToDouble();
        Assert.IsLessThan(1e-5 * scale, error, $"cached decoding vs full forward: worst {error:E2} at scale {scale:F3}");
    }
}
