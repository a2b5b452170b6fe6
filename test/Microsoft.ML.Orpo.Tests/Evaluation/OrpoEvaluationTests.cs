using Microsoft.ML.Orpo.Tests.Infrastructure;

namespace Microsoft.ML.Orpo.Tests.Evaluation;

[TestClass]
public sealed class OrpoEvaluationTests
{
    [TestMethod]
    public void EvaluateEqualsTheValidationMetricsTrainingReportsForTheSameWeights()
    {
        var ml = new MLContext(seed: 1);
        var (train, heldOut) = ProtagonistPairs.Create();
        var heldOutView = EvaluationFixtures.ToDataView(ml, heldOut);
        var options = EvaluationFixtures.Options(epochs: 2);
        options.ValidationSet = heldOutView;
        using var model = ml.Transforms.OrpoFineTune(options).Fit(EvaluationFixtures.ToDataView(ml, train));

        var duringTraining = model.TrainingHistory[^1].Validation!;
        var evaluated = model.Evaluate(heldOutView);
        Console.WriteLine($"validation at the last step: {duringTraining}");
        Console.WriteLine($"Evaluate afterwards:         {evaluated}");
        Assert.AreEqual(duringTraining, evaluated, "the same weights and pairs give the same metrics, field for field");
        Assert.AreEqual(heldOut.Count, evaluated.Pairs);
        Assert.AreEqual(Math.Exp(evaluated.NllLoss), evaluated.ChosenPerplexity, 1e-12);
        Assert.AreEqual(0.25 * evaluated.ChosenLogProbability, evaluated.RewardsChosen, 1e-12);
    }

    [TestMethod]
    public void EvaluateOnTheBaseModelEqualsTheFirstTrainingStepOverTheSameBatch()
    {
        // One optimiser step over the whole unshuffled set: step 1's metrics are computed on the base weights over
        // exactly the pairs Evaluate scores, so they must agree (up to float summation order).
        var ml = new MLContext(seed: 1);
        var train = ProtagonistPairs.Create().Train.Take(12).ToList();
        var data = EvaluationFixtures.ToDataView(ml, train);
        var options = EvaluationFixtures.Options(lambda: 0.5, batchSize: train.Count);
        options.Shuffle = false;
        using var fitted = ml.Transforms.OrpoFineTune(options).Fit(data);
        using var baseModel = OrpoTransformer.FromPretrained(ml, TestAssets.Stories260KHf);

        var step1 = fitted.TrainingHistory[0];
        var evaluated = baseModel.Evaluate(data, lambda: 0.5);
        Console.WriteLine($"step 1: loss {step1.Loss:R} nll {step1.NllLoss:R} L_OR {step1.OddsRatioLoss:R} margin {step1.RewardsMargin:R} acc {step1.RewardsAccuracy}");
        Console.WriteLine($"base:   loss {evaluated.Loss:R} nll {evaluated.NllLoss:R} L_OR {evaluated.OddsRatioLoss:R} margin {evaluated.RewardsMargin:R} acc {evaluated.RewardsAccuracy}");
        Assert.HasCount(1, fitted.TrainingHistory);
        Assert.AreEqual(train.Count, evaluated.Pairs);
        const double tolerance = 1e-5;
        Assert.AreEqual(step1.Loss, evaluated.Loss, tolerance);
        Assert.AreEqual(step1.NllLoss, evaluated.NllLoss, tolerance);
        Assert.AreEqual(step1.OddsRatioLoss, evaluated.OddsRatioLoss, tolerance);
        Assert.AreEqual(step1.LogOddsRatio, evaluated.LogOddsRatio, tolerance);
        Assert.AreEqual(step1.LogOddsChosen, evaluated.LogOddsChosen, tolerance);
        Assert.AreEqual(step1.RewardsChosen, evaluated.RewardsChosen, tolerance);
        Assert.AreEqual(step1.RewardsRejected, evaluated.RewardsRejected, tolerance);
        Assert.AreEqual(step1.RewardsAccuracy, evaluated.RewardsAccuracy);
        Assert.AreEqual(step1.RewardsMargin, evaluated.RewardsMargin, tolerance);
        Assert.AreEqual(step1.ChosenLogProbability, evaluated.ChosenLogProbability, tolerance);
        Assert.AreEqual(step1.RejectedLogProbability, evaluated.RejectedLogProbability, tolerance);
    }

    [TestMethod]
    public void EvaluateRejectsDataWithNothingToScore()
    {
        var ml = new MLContext(seed: 1);
        using var model = OrpoTransformer.FromPretrained(ml, TestAssets.Stories260KHf);
        var same = EvaluationFixtures.ToDataView(ml, new[] { new ProtagonistPairs.Pair("Once upon a time", "Sue ran.", "Sue ran.") });
        var e = Assert.ThrowsExactly<InvalidOperationException>(() => model.Evaluate(same));
        StringAssert.Contains(e.Message, "identical");
    }
}
