using Microsoft.ML.Orpo.Tests.Infrastructure;

namespace Microsoft.ML.Orpo.Tests.Evaluation;

[TestClass]
public sealed class FromPretrainedOptionsTests
{
    [TestMethod]
    public void BaseModelMetricsEqualTheFirstStepsMetricsAndTrainingImprovesThem()
    {
        var ml = new MLContext(seed: 1);
        var data = ml.Data.LoadFromEnumerable(ProtagonistPairs.Create().Train.Take(8));
        var options = new OrpoOptions
        {
            BaseModelPath = TestAssets.Stories260KHf, Lambda = 0.25, LearningRate = 1e-3, BatchSize = 8, Epochs = 2, Seed = 3,
        };

        using var baseModel = OrpoTransformer.FromPretrained(ml, options);
        var before = baseModel.Evaluate(data);
        using var fitted = ml.Transforms.OrpoFineTune(options).Fit(data);
        var after = fitted.Evaluate(data);

        // One batch holds every pair, so step 1's metrics are the base model's metrics on this set.
        var step1 = fitted.TrainingHistory[0];
        Assert.AreEqual(8, before.Pairs);
        Assert.AreEqual(step1.Loss, before.Loss, 1e-4);
        Assert.AreEqual(step1.NllLoss, before.NllLoss, 1e-4);
        Assert.AreEqual(step1.RewardsMargin, before.RewardsMargin, 1e-5);
        Assert.AreEqual(step1.RewardsAccuracy, before.RewardsAccuracy, 1e-9);
        Assert.IsLessThan(before.Loss, after.Loss);
        Assert.IsGreaterThan(before.RewardsMargin, after.RewardsMargin);
        Assert.AreEqual(Math.Exp(before.NllLoss), before.ChosenPerplexity, 1e-6 * before.ChosenPerplexity);
    }

    [TestMethod]
    public void MissingColumnIsReported()
    {
        var ml = new MLContext(seed: 1);
        using var model = OrpoTransformer.FromPretrained(ml, TestAssets.Stories260KHf);
        var data = ml.Data.LoadFromEnumerable(ProtagonistPairs.Create().Train.Take(2));
        var e = Assert.Throws<ArgumentException>(() => model.Evaluate(data, chosenColumnName: "Better"));
        StringAssert.Contains(e.Message, "Better");
    }
}
