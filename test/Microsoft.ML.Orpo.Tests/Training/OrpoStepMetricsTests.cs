using System.Text.Json;

namespace Microsoft.ML.Orpo.Tests.Training;

/// <summary>Step metrics are the objective's metrics plus the step's fields, and saved histories keep their layout.</summary>
[TestClass]
public sealed class OrpoStepMetricsTests
{
    private static readonly OrpoPreferenceMetrics Objective = new()
    {
        Loss = 1.5, NllLoss = 1.25, OddsRatioLoss = 2.5, LogOddsRatio = -2.5, LogOddsChosen = 0.25, RewardsChosen = -0.125,
        RewardsRejected = -0.25, RewardsAccuracy = 0.75, RewardsMargin = 0.125, ChosenLogProbability = -1.25,
        RejectedLogProbability = -2.5, ChosenPerplexity = 3.5, Pairs = 4,
    };

    [TestMethod]
    public void StepMetricsCarryEveryObjectiveMetric()
    {
        var step = new OrpoStepMetrics(Objective) { Step = 3, LearningRate = 1e-3 };
        foreach (var property in typeof(OrpoPreferenceMetrics).GetProperties())
            Assert.AreEqual(property.GetValue(Objective), property.GetValue(step), property.Name);
        Assert.AreEqual(3, step.Step);
    }

    [TestMethod]
    public void SavedHistoriesListStepAndEpochFirstAndTheStepFieldsAfterTheObjective()
    {
        var step = new OrpoStepMetrics(Objective) { Step = 3, Epoch = 0.5, TotalSteps = 6, Validation = Objective };
        string json = JsonSerializer.Serialize(step);
        var names = JsonDocument.Parse(json).RootElement.EnumerateObject().Select(p => p.Name).ToArray();
        CollectionAssert.AreEqual(new[]
        {
            "Step", "Epoch", "Loss", "NllLoss", "OddsRatioLoss", "LogOddsRatio", "LogOddsChosen", "RewardsChosen", "RewardsRejected",
            "RewardsAccuracy", "RewardsMargin", "ChosenLogProbability", "RejectedLogProbability", "ChosenPerplexity", "Pairs",
            "LearningRate", "GradNorm", "TokensPerSecond", "Elapsed", "EstimatedTimeRemaining", "TotalSteps", "Validation",
        }, names);
        Assert.AreEqual(step, JsonSerializer.Deserialize<OrpoStepMetrics>(json));
    }
}
