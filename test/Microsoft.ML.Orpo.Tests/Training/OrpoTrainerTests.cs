using TorchSharp;
using Microsoft.ML.Orpo.Tests.Infrastructure;
using Microsoft.ML.Orpo.Training;

namespace Microsoft.ML.Orpo.Tests.Training;

[TestClass]
public sealed class OrpoTrainerTests
{
    // Float64 shows the accumulation arithmetic is the large batch's exactly. In float32 the micro-batch and
    // large-batch forward passes round differently, and AdamW's first steps (about lr * sign(g)) amplify that
    // rounding for coordinates whose gradient is near epsilon, so float32 agrees to about 1e-5.
    [TestMethod]
    [DataRow(true, 1e-9)]
    [DataRow(false, 2e-5)]
    public void AccumulationOverMicroBatchesEqualsOneLargeBatch(bool float64, double tolerance)
    {
        using var large = TrainingFixtures.LoadModel();
        using var accumulated = TrainingFixtures.LoadModel();
        if (float64)
        {
            large.Network.to(TorchSharp.torch.ScalarType.Float64);
            accumulated.Network.to(TorchSharp.torch.ScalarType.Float64);
        }
        var pairs = TrainingFixtures.TrainPairs(large, 8);
        // Two optimiser steps over 8 pairs of different lengths: as one batch, and as 4 micro-batches of 2.
        var largeHistory = new OrpoTrainer(large, TrainingFixtures.Plain(batchSize: 8, epochs: 2)).Train(pairs);
        var accumulatedHistory = new OrpoTrainer(accumulated,
            TrainingFixtures.Plain(batchSize: 2, epochs: 2) with { GradientAccumulationSteps = 4 }).Train(pairs);

        double difference = TrainingFixtures.MaxDifference(TrainingFixtures.Snapshot(large), TrainingFixtures.Snapshot(accumulated));
        Console.WriteLine($"accumulation ({(float64 ? "float64" : "float32")}): max weight difference after 2 steps {difference:E2}");
        Assert.IsLessThan(tolerance, difference);
        Assert.HasCount(2, accumulatedHistory);
        for (int i = 0; i < 2; i++)
        {
            Assert.AreEqual(largeHistory[i].Loss, accumulatedHistory[i].Loss, 1e-6);
            Assert.AreEqual(largeHistory[i].GradNorm, accumulatedHistory[i].GradNorm, 1e-5 * largeHistory[i].GradNorm);
            Assert.AreEqual(largeHistory[i].RewardsMargin, accumulatedHistory[i].RewardsMargin, 1e-7);
        }
    }

    [TestMethod]
    public void SameSeedGivesBitIdenticalWeightsAndOtherSeedDoesNot()
    {
        Dictionary<string, float[]> Run(int seed)
        {
            using var model = TrainingFixtures.LoadModel();
            var pairs = TrainingFixtures.TrainPairs(model, 12);
            var settings = TrainingFixtures.Plain(batchSize: 4) with { Shuffle = true, GroupByLength = true, Seed = seed };
            new OrpoTrainer(model, settings).Train(pairs);
            return TrainingFixtures.Snapshot(model);
        }
        var first = Run(5);
        Assert.IsTrue(TrainingFixtures.BitIdentical(first, Run(5)), "same seed must give bit-identical weights");
        Assert.IsFalse(TrainingFixtures.BitIdentical(first, Run(6)), "another seed shuffles differently");
    }

    [TestMethod]
    public void CancellationAndCorruptCheckpointResumeToBitIdenticalWeights()
    {
        var settings = TrainingFixtures.Plain(batchSize: 4, epochs: 2) with
        {
            Shuffle = true, GroupByLength = true, Seed = 3, Schedule = LearningRateSchedule.Cosine, WarmupRatio = 0.2,
            MaxGradNorm = 1.0, WeightDecay = 0.01, CheckpointInterval = 2, CheckpointsToKeep = 3,
        };
        Dictionary<string, float[]> expected;
        IReadOnlyList<OrpoStepMetrics> expectedHistory;
        using (var model = TrainingFixtures.LoadModel())
        {
            var pairs = TrainingFixtures.TrainPairs(model, 16);
            expectedHistory = new OrpoTrainer(model, settings).Train(pairs);
            expected = TrainingFixtures.Snapshot(model);
        }
        Assert.HasCount(8, expectedHistory);

        string directory = TestAssets.NewTempDirectory();
        var checkpointed = settings with { CheckpointDirectory = directory };
        int seed = Environment.TickCount;
        int stopAfter = new Random(seed).Next(5, 8); // a random step after the checkpoints at 2 and 4
        Console.WriteLine($"kill-and-resume: random seed {seed}, stopping after step {stopAfter}");
        using (var model = TrainingFixtures.LoadModel())
        {
            var pairs = TrainingFixtures.TrainPairs(model, 16);
            using var cancel = new CancellationTokenSource();
            var callbacks = new TrainingCallbacks { CancellationToken = cancel.Token, AfterStep = s => { if (s == stopAfter) cancel.Cancel(); } };
            Assert.ThrowsExactly<OperationCanceledException>(() => new OrpoTrainer(model, checkpointed, callbacks).Train(pairs));
        }
        // Damage the newest checkpoint: resume must fall back to the one before it.
        string newest = Directory.GetDirectories(directory, "checkpoint-*").Order().Last();
        string weights = Path.Combine(newest, "model.safetensors");
        File.WriteAllBytes(weights, File.ReadAllBytes(weights)[..1000]);

        var log = new List<string>();
        using (var model = TrainingFixtures.LoadModel())
        {
            var pairs = TrainingFixtures.TrainPairs(model, 16);
            var history = new OrpoTrainer(model, checkpointed, new TrainingCallbacks { Log = log.Add }).Train(pairs);
            Assert.IsTrue(TrainingFixtures.BitIdentical(expected, TrainingFixtures.Snapshot(model)), "resumed run must end bit-identical");
            CollectionAssert.AreEqual(expectedHistory.Select(h => h.Loss).ToList(), history.Select(h => h.Loss).ToList());
        }
        Console.WriteLine($"kill-and-resume: canceled after step {stopAfter}, damaged {Path.GetFileName(newest)}; log: {string.Join(" | ", log.Where(l => l.Contains("checkpoint", StringComparison.OrdinalIgnoreCase)))}");
        Assert.IsTrue(log.Any(l => l.Contains("Skipping damaged checkpoint", StringComparison.Ordinal)));
        Directory.Delete(directory, recursive: true);
    }

    [TestMethod]
    public void NonFiniteLossStopsWithAnErrorNamingTheStep()
    {
        using var model = TrainingFixtures.LoadModel();
        var pairs = TrainingFixtures.TrainPairs(model, 4);
        var e = Assert.ThrowsExactly<InvalidOperationException>(() =>
            new OrpoTrainer(model, TrainingFixtures.Plain(batchSize: 2, epochs: 3, learningRate: 1e12)).Train(pairs));
        StringAssert.Contains(e.Message, "step");
        Console.WriteLine(e.Message);
    }

    [TestMethod]
    public void OrpoSwitchesThePreferredProtagonist()
    {
        var started = DateTime.UtcNow;
        using var model = TrainingFixtures.LoadModel();
        var (trainSet, heldOutSet) = ProtagonistPairs.Create();
        var train = TrainingFixtures.Encode(model, trainSet);
        var heldOut = TrainingFixtures.Encode(model, heldOutSet);
        var settings = TrainingFixtures.Plain(batchSize: 8, epochs: 3, lambda: 0.25) with { Shuffle = true, GroupByLength = true };
        var before = PreferenceEvaluator.Evaluate(model.Network, heldOut, settings);
        var prompt = new List<int> { 1 };
        prompt.AddRange(model.Tokenizer.Encode("Once upon a time, there was a little girl named"));
        string Continue() => model.Tokenizer.Decode(Microsoft.ML.Orpo.Generation.TextGenerator.Generate(
            model.Network, new[] { prompt }, new GenerationOptions { MaxNewTokens = 12 }, new HashSet<int> { 2 })[0]);
        string textBefore = Continue();

        new OrpoTrainer(model, settings).Train(train);
        var after = PreferenceEvaluator.Evaluate(model.Network, heldOut, settings);
        string textAfter = Continue();
        Console.WriteLine($"held-out accuracy {before.RewardsAccuracy:F2} -> {after.RewardsAccuracy:F2}, margin {before.RewardsMargin:F3} -> {after.RewardsMargin:F3}");
        Console.WriteLine($"greedy before: '{textBefore}'  after: '{textAfter}'  ({(DateTime.UtcNow - started).TotalSeconds:F0} s)");

        Assert.IsLessThan(0.9, before.RewardsAccuracy, "the base model does not already prefer the new name");
        Assert.IsGreaterThan(before.RewardsMargin, after.RewardsMargin, "the margin grows");
        Assert.IsGreaterThanOrEqualTo(0.9, after.RewardsAccuracy);
        StringAssert.Contains(textBefore, ProtagonistPairs.Habitual);
        StringAssert.StartsWith(textAfter.TrimStart(), ProtagonistPairs.Preferred);
        Assert.IsLessThan(120.0, (DateTime.UtcNow - started).TotalSeconds, "the experiment runs in under two minutes");
    }

    [TestMethod]
    public void ValidationRunsEveryIntervalAndAtTheEndOnTheUpdatedWeights()
    {
        using var model = TrainingFixtures.LoadModel();
        var (trainSet, heldOutSet) = ProtagonistPairs.Create();
        var train = TrainingFixtures.Encode(model, trainSet.Take(20));
        var heldOut = TrainingFixtures.Encode(model, heldOutSet);
        var settings = TrainingFixtures.Plain(batchSize: 4) with { ValidationInterval = 2 };
        var history = new OrpoTrainer(model, settings).Train(train, heldOut);
        CollectionAssert.AreEqual(new[] { 2, 4, 5 }, history.Where(h => h.Validation is not null).Select(h => h.Step).ToArray());
        var final = PreferenceEvaluator.Evaluate(model.Network, heldOut, settings);
        Assert.AreEqual(final.Loss, history[^1].Validation!.Loss, 1e-12);
        Assert.AreEqual(heldOut.Count, history[^1].Validation!.Pairs);
    }

    [TestMethod]
    public void LearningRateSchedulesWarmUpThenDecay()
    {
        Assert.AreEqual(0.25, LearningRates.At(LearningRateSchedule.Linear, 1.0, 0, 10, 4), 1e-12);
        Assert.AreEqual(1.0, LearningRates.At(LearningRateSchedule.Linear, 1.0, 3, 10, 4), 1e-12);
        Assert.AreEqual(1.0 - 2.0 / 6, LearningRates.At(LearningRateSchedule.Linear, 1.0, 6, 10, 4), 1e-12);
        Assert.AreEqual(0.5 * (1 + Math.Cos(Math.PI * 3 / 6)), LearningRates.At(LearningRateSchedule.Cosine, 1.0, 7, 10, 4), 1e-12);
        Assert.AreEqual(1.0, LearningRates.At(LearningRateSchedule.Constant, 1.0, 9, 10, 0), 1e-12);
    }
}
