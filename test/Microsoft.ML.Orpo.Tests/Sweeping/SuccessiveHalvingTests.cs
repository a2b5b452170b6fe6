namespace Microsoft.ML.Orpo.Tests.Sweeping;

[TestClass]
public sealed class SuccessiveHalvingTests
{
    [TestMethod]
    public void RungsShrinkTheConfigurationsAndGrowTheEpochsByEta()
    {
        CollectionAssert.AreEqual(new[] { (1, 9), (3, 3), (9, 1) },
            Microsoft.ML.Orpo.Sweeping.SuccessiveHalvingTuner.Rungs(configurations: 9, baseEpochs: 9, eta: 3, minEpochs: 1).ToArray());
        CollectionAssert.AreEqual(new[] { (2, 6), (6, 2) },
            Microsoft.ML.Orpo.Sweeping.SuccessiveHalvingTuner.Rungs(configurations: 6, baseEpochs: 6, eta: 3, minEpochs: 1).ToArray());
        CollectionAssert.AreEqual(new[] { (4, 5) },
            Microsoft.ML.Orpo.Sweeping.SuccessiveHalvingTuner.Rungs(configurations: 5, baseEpochs: 4, eta: 3, minEpochs: 2).ToArray());
    }

    [TestMethod]
    public async Task SuccessiveHalvingFindsTheGridsBestLambdaWithAtMostHalfTheTrainingSteps()
    {
        var space = new OrpoSearchSpace { Lambda = SweepRange.LogScale(0.01, 1.0, 9) };
        var ml = new MLContext(seed: 1);
        var grid = await SweepFixtures.Experiment(ml, trainPairs: 4, epochs: 9, batchSize: 4)
            .SetSearchSpace(space).SetGridSearchTuner().SetMetric(OrpoSweepMetric.LogOddsRatio).RunAsync();
        using var gridBest = grid.BestModel;
        var halving = await SweepFixtures.Experiment(ml, trainPairs: 4, epochs: 9, batchSize: 4)
            .SetSearchSpace(space).SetSuccessiveHalvingTuner(reductionFactor: 3).SetMetric(OrpoSweepMetric.LogOddsRatio).RunAsync();
        using var halvingBest = halving.BestModel;

        Console.WriteLine($"grid ({grid.Elapsed.TotalSeconds:F1} s):\n{grid.FormatTable()}");
        Console.WriteLine($"successive halving ({halving.Elapsed.TotalSeconds:F1} s):\n{halving.FormatTable()}");
        Console.WriteLine($"training steps: grid {grid.TotalTrainingSteps}, successive halving {halving.TotalTrainingSteps}; " +
                          $"best lambda: grid {grid.BestTrial.Lambda:G4}, successive halving {halving.BestTrial.Lambda:G4}");

        Assert.HasCount(9, grid.Trials);
        Assert.AreEqual(grid.Trials.Sum(t => t.History.Count), grid.TotalTrainingSteps);
        Assert.AreEqual(halving.Trials.Sum(t => t.History.Count), halving.TotalTrainingSteps);
        Assert.AreEqual(9 + 3 + 1, halving.Trials.Count);
        CollectionAssert.AreEqual(new[] { 1, 3, 9 }, halving.Trials.Select(t => t.Epochs).Distinct().ToArray());
        Assert.IsLessThanOrEqualTo(grid.TotalTrainingSteps / 2, halving.TotalTrainingSteps);
        Assert.AreEqual(grid.BestTrial.Lambda, halving.BestTrial.Lambda);
        Assert.AreEqual(9, halving.BestTrial.Epochs);
        // The full-budget trial of the winner is the same training run as the grid's: same metrics.
        Assert.AreEqual(grid.BestTrial.Validation, halving.BestTrial.Validation);
    }
}
