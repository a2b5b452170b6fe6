using Microsoft.ML.Orpo.Tests.Infrastructure;
using Microsoft.ML.Orpo.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Tests.Kernels;

/// <summary>The fused LM head's row kernel (<see cref="SoftmaxRows"/>) against float64 tensor ops.</summary>
[TestClass]
public sealed class SoftmaxRowsTests
{
    [TestMethod]
    [DataRow(5, 32000, 3.0, DisplayName = "LM-head rows, vocabulary 32000")]
    [DataRow(9, 1037, 30.0, DisplayName = "width not a multiple of the vector width; logits up to +-90")]
    [DataRow(1, 3, 1.0, DisplayName = "narrower than one vector")]
    public void LogSumExpAndGradientMatchFloat64(int rows, int width, double spread)
    {
        using var scope = NewDisposeScope();
        manual_seed(rows * 7 + width);
        var logits = randn(rows, width) * spread;
        var targets = randint(0, width, new long[] { rows, 1 }, dtype: ScalarType.Int64);
        var g = randn(rows, 1);
        var wide = logits.to_type(ScalarType.Float64);
        var expectedLse = wide.logsumexp(1);
        var expectedGradient = wide.log_softmax(1).exp().mul(g.to_type(ScalarType.Float64).neg())
            .scatter_add(1, targets, g.to_type(ScalarType.Float64));

        Assert.IsTrue(SoftmaxRows.Supports(logits));
        var lse = SoftmaxRows.LogSumExp(logits);
        double lseError = (lse.to_type(ScalarType.Float64) - expectedLse).abs().max().ToDouble();
        Assert.IsLessThan(2e-6 * (expectedLse.abs().max().ToDouble() + 1), lseError, $"log-sum-exp: worst {lseError:E2}");

        SoftmaxRows.ToLossGradient(logits, lse.unsqueeze(1), g, targets);
        var bound = expectedGradient.abs() * 1e-5 + g.abs().max().ToDouble() * 1e-7;
        var error = (logits.to_type(ScalarType.Float64) - expectedGradient).abs();
        Assert.IsTrue(error.le(bound).all().ToBoolean(), $"gradient: worst {error.max().ToDouble():E2}");
    }

    [TestMethod]
    public void SixteenLaneSumsKeepTheBitsOfTheEightLaneOnes()
    {
        // Where 512-bit vectors are fast the row sums run 16 lanes at a time, holding the two 8-lane accumulators in one
        // register: the log-sum-exp must not change by a bit (nor, with it, the losses of earlier runs).
        if (!SoftmaxRows.Wide) Assert.Inconclusive("No fast 512-bit vectors here (or Vector<float> is not 8 lanes): only one path runs.");
        using var scope = NewDisposeScope();
        manual_seed(12);
        foreach (int width in new[] { 32000, 151936, 1037, 24, 15 })
        {
            var row = (randn(width) * 8).data<float>().ToArray();
            row[width / 2] = 40; // one dominant logit, the rest far below it
            float wide = SoftmaxRows.RowLogSumExp(row, wide: true), narrow = SoftmaxRows.RowLogSumExp(row, wide: false);
            Assert.AreEqual(BitConverter.SingleToInt32Bits(narrow), BitConverter.SingleToInt32Bits(wide), $"width {width}: {narrow:R} against {wide:R}");
        }
    }

    [TestMethod]
    public void MinusInfinityLogitsGetZeroProbabilityAndNaNPropagates()
    {
        using var scope = NewDisposeScope();
        var logits = tensor(new float[] { 0f, float.NegativeInfinity, 1f, float.NegativeInfinity, 2f, 0f, float.NaN, 1f }).view(2, 4);
        var lse = SoftmaxRows.LogSumExp(logits);
        Assert.AreEqual(Math.Log(1 + Math.E), lse[0].ToDouble(), 1e-6, "masked-out logits add nothing");
        Assert.IsTrue(double.IsNaN(lse[1].ToDouble()), "a NaN logit makes the row NaN, as libtorch's logsumexp does");
        SoftmaxRows.ToLossGradient(logits, lse.unsqueeze(1), ones(2, 1), tensor(new long[] { 0, 0 }).view(2, 1));
        Assert.AreEqual(0.0, logits[0, 1].ToDouble(), "zero gradient for a -inf logit");
        Assert.AreEqual(1 - 1 / (1 + Math.E), logits[0, 0].ToDouble(), 1e-6, "target: 1 - softmax");
    }

    [TestMethod]
    public void ResultsDoNotDependOnTheThreadCount()
    {
        using var scope = NewDisposeScope();
        manual_seed(11);
        var logits = randn(37, 5000) * 4;
        var targets = randint(0, 5000, new long[] { 37, 1 }, dtype: ScalarType.Int64);
        var g = randn(37, 1);
        ThreadCounts.AssertSameResults(() =>
        {
            var copy = logits.clone();
            var lse = SoftmaxRows.LogSumExp(copy);
            SoftmaxRows.ToLossGradient(copy, lse.unsqueeze(1), g, targets);
            return new[] { lse, copy };
        });
    }
}
