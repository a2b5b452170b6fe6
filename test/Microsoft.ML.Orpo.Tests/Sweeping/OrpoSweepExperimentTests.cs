using System.Diagnostics;
using Microsoft.ML.Data;

namespace Microsoft.ML.Orpo.Tests.Sweeping;

[TestClass]
public sealed class OrpoSweepExperimentTests
{
    [TestMethod]
    public async Task ADivergingTrialIsRecordedAsFailedAndTheSweepGoesOnAndTheTableExports()
    {
        var ml = new MLContext(seed: 1);
        var log = new List<string>();
        ml.Log += (_, e) => { if (e.Source == "OrpoSweep") lock (log) log.Add(e.RawMessage); };
        var result = await SweepFixtures.Experiment(ml, trainPairs: 8, epochs: 2, batchSize: 4)
            .SetSearchSpace(new OrpoSearchSpace { Lambda = SweepRange.Choice(0.1, 0.25), LearningRate = SweepRange.Choice(1e-3, 1e6) })
            .SetMetric(OrpoSweepMetric.LogOddsChosen)
            .RunAsync();
        using var best = result.BestModel;
        Console.WriteLine(result.FormatTable());

        CollectionAssert.AreEqual(new[] { OrpoTrialStatus.Completed, OrpoTrialStatus.Failed, OrpoTrialStatus.Completed, OrpoTrialStatus.Failed },
            result.Trials.Select(t => t.Status).ToArray(), "the trial after the first divergence still ran");
        foreach (var failed in result.Trials.Where(t => t.Status == OrpoTrialStatus.Failed))
        {
            Assert.AreEqual(1e6, failed.LearningRate);
            StringAssert.Contains(failed.Error, "InvalidOperationException");
            StringAssert.Contains(failed.Error, "diverged");
            Assert.IsTrue(double.IsNaN(failed.Metric));
            Assert.IsNull(failed.Validation);
            Assert.IsLessThan(4, failed.TrainingSteps, "it stopped before its last step");
        }
        Assert.AreEqual(1e-3, result.BestTrial.LearningRate);
        Assert.AreEqual(result.Trials.Where(t => t.Status == OrpoTrialStatus.Completed).MaxBy(t => t.Metric), result.BestTrial);
        Assert.IsFalse(string.IsNullOrEmpty(best.Generate("Once upon a time", new GenerationOptions { MaxNewTokens = 4 })));

        // Trial table: IDataView and CSV.
        var view = result.ToDataView();
        var statuses = view.GetColumn<string>("Status").ToArray();
        CollectionAssert.AreEqual(result.Trials.Select(t => t.Status.ToString()).ToArray(), statuses);
        CollectionAssert.AreEqual(result.Trials.Select(t => t.Lambda).ToArray(), view.GetColumn<double>("Lambda").ToArray());
        Assert.AreEqual(NumberDataViewType.Int32, view.Schema["TrainingSteps"].Type);
        var csv = new StringWriter();
        result.SaveCsv(csv);
        string[] lines = csv.ToString().Split(Environment.NewLine, StringSplitOptions.RemoveEmptyEntries);
        Assert.HasCount(5, lines);
        StringAssert.StartsWith(lines[0], "Trial,Rung,Lambda,LearningRate,Epochs,Status,Metric,");
        StringAssert.Contains(lines[2], ",Failed,NaN,");

        // Progress per trial on the ML.NET log.
        Assert.HasCount(4, log.Where(m => m.Contains("trial ", StringComparison.Ordinal) && m.Contains(" -> ", StringComparison.Ordinal)).ToList());
        Assert.IsTrue(log.Any(m => m.StartsWith("trial 2 ", StringComparison.Ordinal) && m.Contains("Failed", StringComparison.Ordinal)));
    }

    [TestMethod]
    public async Task TheSweepEndsWithinOneTrialOfItsTimeBudget()
    {
        var ml = new MLContext(seed: 1);
        var clock = Stopwatch.StartNew();
        var result = await SweepFixtures.Experiment(ml, trainPairs: 8, epochs: 3, batchSize: 4)
            .SetSearchSpace(new OrpoSearchSpace { Lambda = SweepRange.LogScale(0.01, 1, 20) })
            .SetTrainingTimeInSeconds(1)
            .RunAsync();
        clock.Stop();
        using var best = result.BestModel;
        var last = result.Trials[^1];
        Console.WriteLine($"time budget 1 s: {result.Trials.Count} of 20 trials in {result.Elapsed.TotalSeconds:F2} s " +
                          $"(last trial {last.Duration.TotalSeconds:F2} s, await {clock.Elapsed.TotalSeconds:F2} s)\n{result.FormatTable()}");

        Assert.IsLessThan(20, result.Trials.Count, "the budget stopped the sweep");
        Assert.IsTrue(result.Trials.All(t => t.Status == OrpoTrialStatus.Completed));
        // Every trial but the last started before the budget ran out; the last one ran to its end.
        Assert.IsLessThan(1.0, result.Trials.SkipLast(1).Sum(t => t.Duration.TotalSeconds));
        Assert.IsLessThanOrEqualTo(1.0 + last.Duration.TotalSeconds + 0.5, result.Elapsed.TotalSeconds);
    }

    [TestMethod]
    public async Task CancellationStopsTheRunningTrialAndReturnsTheTrialsSoFar()
    {
        var ml = new MLContext(seed: 1);
        using var cancel = new CancellationTokenSource();
        int trialsDone = 0;
        var options = Evaluation.EvaluationFixtures.Options(epochs: 3, batchSize: 4);
        // Cancel at the second optimiser step of the second trial.
        options.Progress = new SweepFixtures.Monitor<OrpoStepMetrics>(step => { if (trialsDone == 1 && step.Step == 2) cancel.Cancel(); });
        var experiment = SweepFixtures.Experiment(ml, trainPairs: 8, epochs: 3, batchSize: 4)
            .SetBaseOptions(options)
            .SetSearchSpace(new OrpoSearchSpace { Lambda = SweepRange.LogScale(0.01, 1, 5) })
            .SetMonitor(new SweepFixtures.Monitor<OrpoSweepTrial>(_ => trialsDone++));
        var result = await experiment.RunAsync(cancel.Token);
        using var best = result.BestModel;
        Console.WriteLine(result.FormatTable());

        Assert.HasCount(2, result.Trials);
        Assert.AreEqual(OrpoTrialStatus.Completed, result.Trials[0].Status);
        Assert.AreEqual(OrpoTrialStatus.Canceled, result.Trials[1].Status);
        Assert.AreEqual(2, result.Trials[1].TrainingSteps);
        Assert.AreEqual(1, result.BestTrial.Id);

        using var before = new CancellationTokenSource();
        before.Cancel();
        await Assert.ThrowsAsync<OperationCanceledException>(() => experiment.RunAsync(before.Token));
    }

    [TestMethod]
    public async Task TrialsTrainWithTheBaseOptionsPrecision()
    {
        var ml = new MLContext(seed: 1);
        async Task<double> FirstLoss(OrpoPrecision precision)
        {
            var options = Evaluation.EvaluationFixtures.Options(epochs: 1, batchSize: 4);
            options.Seed = 3;
            options.Precision = precision;
            var result = await SweepFixtures.Experiment(ml, trainPairs: 4, epochs: 1, batchSize: 4)
                .SetBaseOptions(options).SetSearchSpace(new OrpoSearchSpace { Lambda = SweepRange.Choice(0.1) }).SetMaxTrials(1).RunAsync();
            result.BestModel.Dispose();
            return result.Trials.Single().History[0].Loss;
        }
        double float32 = await FirstLoss(OrpoPrecision.Float32);
        double bfloat16 = await FirstLoss(OrpoPrecision.BFloat16);
        Assert.AreNotEqual(float32, bfloat16, "the trial must train in the base options' precision");
        Assert.AreEqual(float32, bfloat16, 1e-2 * float32);
    }

    [TestMethod]
    public async Task RandomSearchDrawsWithinTheRangeAndIsDeterministicForASeed()
    {
        var ml = new MLContext(seed: 1);
        var space = new OrpoSearchSpace { Lambda = SweepRange.LogScale(0.05, 1.0), LearningRate = SweepRange.LogScale(1e-4, 1e-3) };
        async Task<double[]> Lambdas(int seed)
        {
            var result = await SweepFixtures.Experiment(ml, trainPairs: 4, epochs: 1, batchSize: 4)
                .SetSearchSpace(space).SetRandomSearchTuner(seed).SetMaxTrials(3).RunAsync();
            result.BestModel.Dispose();
            Assert.IsTrue(result.Trials.All(t => t.LearningRate is >= 1e-4 and <= 1e-3));
            return result.Trials.Select(t => t.Lambda).ToArray();
        }
        var first = await Lambdas(5);
        Assert.HasCount(3, first);
        Assert.IsTrue(first.All(l => l is >= 0.05 and <= 1.0));
        CollectionAssert.AreEqual(first, await Lambdas(5));
        CollectionAssert.AreNotEqual(first, await Lambdas(6));
    }

    [TestMethod]
    public void SweepRangesSpreadGridPointsOnTheirScale()
    {
        var log = SweepRange.LogScale(0.01, 1, 5).GridValues;
        Assert.AreEqual(0.01, log[0]);
        Assert.AreEqual(0.1, log[2], 1e-12);
        Assert.AreEqual(1.0, log[4]);
        CollectionAssert.AreEqual(new[] { 0.0, 0.5, 1.0 }, SweepRange.Linear(0, 1, 3).GridValues.ToArray());
        CollectionAssert.AreEqual(new[] { 0.1, 0.5 }, SweepRange.Choice(0.5, 0.1, 0.5).GridValues.ToArray());
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => SweepRange.LogScale(0, 1));
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => new OrpoSweepExperiment(new MLContext()).SetSearchSpace(
            new OrpoSearchSpace { Lambda = SweepRange.Linear(-1, 1) }));
        Assert.ThrowsExactly<InvalidOperationException>(() => new OrpoSweepExperiment(new MLContext()).RunAsync());
    }
}
