using Microsoft.ML.Orpo.Kernels;
using Microsoft.ML.Orpo.Ops;
using Microsoft.ML.Orpo.Ops.Reference;
using Microsoft.ML.Orpo.Tests.Infrastructure;
using TorchSharp.Modules;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Microsoft.ML.Orpo.Tests.Lora;

/// <summary>
/// The CPU paths of the adapter: <see cref="LoraLinear"/> (projection and adapter as one autograd node, its base products
/// in float32 or bfloat16) against the composed definition, and <see cref="HashedDropout"/>'s mask against <see cref="ReferenceDropout"/>'s.
/// </summary>
[TestClass]
public sealed class LoraKernelTests
{
    private static (Tensor Output, Tensor Dx, Tensor DA, Tensor DB) Run(Func<Tensor, Parameter, Parameter, Tensor> update, Tensor x0, Tensor a0, Tensor b0, Tensor upstream)
    {
        var x = x0.clone().requires_grad_(true);
        var a = new Parameter(a0.clone(), true);
        var b = new Parameter(b0.clone(), true);
        var output = update(x, a, b);
        (output * upstream).sum().backward();
        return (output.detach(), x.grad!.clone(), a.grad!.clone(), b.grad!.clone());
    }

    private static void AssertClose(Tensor expected, Tensor actual, string what)
    {
        double scale = Math.Max(1e-6, expected.abs().max().item<float>());
        double worst = (expected - actual).abs().max().item<float>();
        Assert.IsLessThan(1e-5 * scale, worst, $"{what}: worst {worst} against scale {scale}");
    }

    [TestMethod]
    [DataRow(0.0, false, false, 4, 48)]
    [DataRow(0.3, false, true, 4, 48)]
    [DataRow(0.3, true, false, 4, 48)]
    [DataRow(0.05, true, true, 4, 48)]
    [DataRow(0.05, false, false, 16, 53, DisplayName = "rank 16 (whole vectors), 53 inputs (a partial vector)")]
    [DataRow(0.1, false, true, 20, 70, DisplayName = "rank 20 (two vectors, padded), 70 inputs")]
    public void LoraLinearMatchesTheComposedDefinitionInValuesAndGradients(double probability, bool bfloat16Weight, bool bias, int rank, int inputs)
    {
        manual_seed(11);
        var x = randn(2, 150, inputs);       // 300 rows: more than a chunk of 128, the last one partial
        var weight = randn(40, inputs) * 0.1;
        if (bfloat16Weight) weight = weight.to_type(ScalarType.BFloat16);
        var biasValues = bias ? randn(40) : null;
        var a = randn(rank, inputs) * 0.2;
        var b = randn(40, rank) * 0.2;
        var upstream = randn(2, 150, 40);
        const double scale = 2.0;
        var dropout = new LoraDropout(probability);
        using var on = dropout.During(3, 1, 0);
        long? seed = dropout.StreamSeed(5);
        Assert.AreEqual(probability > 0, seed.HasValue);
        var fused = Run((xi, ai, bi) =>
        {
            Assert.IsTrue(LoraLinear.Supports(xi, weight, biasValues, ai, bi, null));
            return LoraLinear.Apply(xi, weight, biasValues, ai, bi, scale, seed, probability);
        }, x, a, b, upstream);
        var composed = Run((xi, ai, bi) =>
        {
            var dropped = seed is long s ? ReferenceDropout.Apply(xi, s, probability) : xi;
            return F.linear(xi, weight.to_type(ScalarType.Float32), biasValues) + F.linear(F.linear(dropped, ai), bi) * scale;
        }, x, a, b, upstream);
        AssertClose(composed.Output, fused.Output, "output");
        AssertClose(composed.Dx, fused.Dx, "dx");
        AssertClose(composed.DA, fused.DA, "dA");
        AssertClose(composed.DB, fused.DB, "dB");
    }

    [TestMethod]
    [DataRow(0.0, false, false)]
    [DataRow(0.3, false, true)]
    [DataRow(0.05, true, true, DisplayName = "bfloat16-stored weight, bias, dropout")]
    public void LoraLinearWithBFloat16ProductsMultipliesTheBaseInBFloat16AndTheAdapterInFloat32(double probability, bool bfloat16Weight, bool bias)
    {
        manual_seed(13);
        var x = randn(2, 150, 53);
        var weight = randn(40, 53) * 0.1;
        if (bfloat16Weight) weight = weight.to_type(ScalarType.BFloat16);
        var biasValues = bias ? randn(40) : null;
        var a = randn(16, 53) * 0.2;
        var b = randn(40, 16) * 0.2;
        var upstream = randn(2, 150, 40);
        const double scale = 2.0;
        var dropout = new LoraDropout(probability);
        using var on = dropout.During(3, 1, 0);
        long? seed = dropout.StreamSeed(5);
        var fused = Run((xi, ai, bi) =>
        {
            Assert.IsTrue(LoraLinear.Supports(xi, weight, biasValues, ai, bi, ScalarType.BFloat16));
            var y = LoraLinear.Apply(xi, weight, biasValues, ai, bi, scale, seed, probability, ScalarType.BFloat16);
            Assert.AreEqual(ScalarType.Float32, y.dtype, "the output stays float32");
            return y;
        }, x, a, b, upstream);
        Tensor Adapter(Tensor xi, Tensor ai, Tensor bi) =>
            F.linear(F.linear(seed is long s ? ReferenceDropout.Apply(xi, s, probability) : xi, ai), bi) * scale;
        // The definition: the bfloat16 product of the bfloat16-cast input and weight, widened; bias and adapter in float32.
        var composed = Run((xi, ai, bi) =>
        {
            var product = F.linear(xi.to_type(ScalarType.BFloat16), weight.to_type(ScalarType.BFloat16)).to_type(ScalarType.Float32);
            return (biasValues is null ? product : product + biasValues) + Adapter(xi, ai, bi);
        }, x, a, b, upstream);
        AssertClose(composed.Output, fused.Output, "output");
        AssertClose(composed.Dx, fused.Dx, "dx");
        AssertClose(composed.DA, fused.DA, "dA");
        AssertClose(composed.DB, fused.DB, "dB");
        Assert.AreEqual(ScalarType.Float32, fused.Dx.dtype);
        // And not the float32 product: the base really multiplied in bfloat16 (2^-9 relative roundings of its inputs).
        var float32 = Run((xi, ai, bi) => F.linear(xi, weight.to_type(ScalarType.Float32), biasValues) + Adapter(xi, ai, bi), x, a, b, upstream);
        double apart = (float32.Output - fused.Output).abs().max().item<float>() / float32.Output.abs().max().item<float>();
        Assert.IsGreaterThan(1e-4, apart, "the base product was not rounded to bfloat16");
        Assert.IsLessThan(2e-2, apart);
    }

    [TestMethod]
    public void LoraLinearGivesTheSameValuesAndGradientsOnAnyThreadCount()
    {
        manual_seed(12);
        var x = randn(3, 170, 72);            // 510 rows: four row blocks, the last one partial; 8-row groups with a tail
        var weight = randn(50, 72) * 0.1;
        var a = randn(16, 72) * 0.2;
        var b = randn(50, 16) * 0.2;
        var upstream = randn(3, 170, 50);
        var dropout = new LoraDropout(0.1);
        using var on = dropout.During(3, 1, 0);
        long? seed = dropout.StreamSeed(2);
        ThreadCounts.AssertSameResults(() =>
        {
            var (output, dx, da, db) = Run((xi, ai, bi) => LoraLinear.Apply(xi, weight, null, ai, bi, 2.0, seed, 0.1), x, a, b, upstream);
            return new[] { output, dx, da, db };
        });
    }

    [TestMethod]
    [DataRow(0.05)]
    [DataRow(0.5)]
    public void TheKernelsMaskIsTheReferenceMaskBitForBit(double probability)
    {
        var x = randn(3, 1000, 37);            // 111000 elements: several kernel chunks, a ragged vector tail
        foreach (long seed in new[] { 1L, -7L, 0x123456789ABCDEFL })
        {
            var kernel = HashedDropout.Apply(x, seed, probability);
            var reference = ReferenceDropout.Apply(x, seed, probability);
            Assert.IsTrue(kernel.eq(reference).all().item<bool>(), $"seed {seed}: kernel and reference masks differ");
        }
    }

    [TestMethod]
    [DataRow(37, DisplayName = "37 wide: two words, the second partial, all on the scalar tail past 32")]
    [DataRow(53, DisplayName = "53 wide: three whole words and a partial one")]
    [DataRow(512, DisplayName = "512 wide: whole 16-lane vectors")]
    public void TheMaskBitsKeptByTheForwardPassApplyTheHashedMaskBitForBit(int width)
    {
        const int rows = 6;
        const double p = 0.3;
        const long seed = -0x5EED1234L;
        manual_seed(21);
        float[] x = randn(rows * width).data<float>().ToArray(), g = randn(rows * width).data<float>().ToArray();
        float[] h = randn(rows * width).data<float>().ToArray(), start = randn(rows * width).data<float>().ToArray();
        bool[] reference = (ReferenceDropout.Apply(ones(rows, width), seed, p) > 0).flatten().data<bool>().ToArray();
        int words = HashedDropout.BitWords(width);
        var bits = new ushort[rows * words];
        for (int row = 0; row < rows; row++)
        {
            int first = row * width;
            var rowBits = bits.AsSpan(row * words, words);
            float[] hashed = new float[width], recorded = new float[width];
            HashedDropout.MaskRows(x.AsSpan(first, width), hashed, first, seed, p, accumulate: false);
            HashedDropout.MaskRowRecording(x.AsSpan(first, width), recorded, rowBits, first, seed, p);
            AssertSameBits(hashed, recorded, $"row {row}: x * mask");
            for (int i = 0; i < width; i++)
                Assert.AreEqual(reference[first + i], ((rowBits[i / 16] >> (i % 16)) & 1) != 0, $"row {row}, element {i}: the recorded bit");

            // The backward pass's two uses: target = mask * x with addTarget += mask * update, and target += mask * update.
            float[] hashedTarget = new float[width], bitsTarget = new float[width];
            float[] hashedAdd = start.AsSpan(first, width).ToArray(), bitsAdd = start.AsSpan(first, width).ToArray();
            HashedDropout.MaskRows(x.AsSpan(first, width), hashedTarget, false, g.AsSpan(first, width), hashedAdd, first, seed, p);
            HashedDropout.MaskRowFromBits(rowBits, x.AsSpan(first, width), bitsTarget, false, g.AsSpan(first, width), bitsAdd, p);
            AssertSameBits(hashedTarget, bitsTarget, $"row {row}: dropped x");
            AssertSameBits(hashedAdd, bitsAdd, $"row {row}: accumulated update beside it");
            float[] hashedSum = start.AsSpan(first, width).ToArray(), bitsSum = start.AsSpan(first, width).ToArray();
            HashedDropout.MaskRows(h.AsSpan(first, width), hashedSum, first, seed, p, accumulate: true);
            HashedDropout.MaskRowFromBits(rowBits, h.AsSpan(first, width), bitsSum, true, default, default, p);
            AssertSameBits(hashedSum, bitsSum, $"row {row}: accumulated update");
        }
    }

    private static void AssertSameBits(float[] expected, float[] actual, string what)
    {
        for (int i = 0; i < expected.Length; i++)
            Assert.AreEqual(BitConverter.SingleToInt32Bits(expected[i]), BitConverter.SingleToInt32Bits(actual[i]), $"{what}, element {i}");
    }

    [TestMethod]
    public void HashedDropoutKeepsAboutOneMinusPScalesTheRestAndRepeatsPerSeed()
    {
        var x = ones(1000, 1000);
        var first = HashedDropout.Apply(x, 12345, 0.05);
        var again = HashedDropout.Apply(x, 12345, 0.05);
        var other = HashedDropout.Apply(x, 12346, 0.05);
        double kept = (first > 0).to_type(ScalarType.Float32).mean().item<float>();
        Assert.IsLessThan(0.002, Math.Abs(kept - 0.95), $"kept fraction {kept}");
        Assert.AreEqual(1 / 0.95, first.max().item<float>(), 1e-6);
        Assert.IsTrue(first.eq(again).all().item<bool>(), "same seed, same mask");
        double agree = (first > 0).eq(other > 0).to_type(ScalarType.Float32).mean().item<float>();
        Assert.IsLessThan(0.95, agree, $"another seed draws another mask (agreement {agree})");
    }
}
