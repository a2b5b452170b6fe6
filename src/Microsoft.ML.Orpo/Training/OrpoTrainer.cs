using System.Diagnostics;
using Microsoft.ML.Orpo.Modeling;
using Microsoft.ML.Orpo.Ops;
using Microsoft.ML.Orpo.ModelFiles;
using Microsoft.ML.Orpo.Preferences;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Training;

/// <summary>Where the trainer reports and how it is stopped.</summary>
internal sealed record TrainingCallbacks
{
    public Action<string>? Log { get; init; }
    public IProgress<OrpoStepMetrics>? Progress { get; init; }
    public CancellationToken CancellationToken { get; init; }
    /// <summary>Polled between micro-batches, e.g. MLContext.CancelExecution().</summary>
    public Func<bool>? IsCanceled { get; init; }
    /// <summary>Called after each optimiser step with its 1-based number (tests use it to interrupt runs).</summary>
    public Action<int>? AfterStep { get; init; }
}

/// <summary>
/// The ORPO training loop: AdamW with warm-up and decay, gradient clipping, gradient accumulation equal to a large
/// batch, validation, NaN/inf guard, cancellation, and atomic checkpoints that resume to bit-identical weights.
/// </summary>
internal sealed class OrpoTrainer
{
    private readonly CausalLanguageModel model;
    private readonly TrainingSettings settings;
    private readonly TrainingCallbacks callbacks;

    public OrpoTrainer(CausalLanguageModel model, TrainingSettings settings, TrainingCallbacks? callbacks = null)
    {
        this.model = model;
        this.settings = settings;
        this.callbacks = callbacks ?? new TrainingCallbacks();
    }

    /// <summary>Trains in place and returns one metrics entry per optimiser step (resumed steps included).</summary>
    public IReadOnlyList<OrpoStepMetrics> Train(IReadOnlyList<EncodedPair> train, IReadOnlyList<EncodedPair>? validation = null)
    {
        var parameters = model.Network.TrainableWeights();
        using var optimizer = new AdamW(parameters, settings.AdamBeta1, settings.AdamBeta2, settings.AdamEpsilon, settings.WeightDecay);
        using var logitsScratch = new LogitsScratch();
        var store = settings.CheckpointDirectory is null ? null : new CheckpointStore(settings.CheckpointDirectory, settings.CheckpointsToKeep);
        string fingerprint = CheckpointStore.Fingerprint(settings, train);

        var history = new List<OrpoStepMetrics>();
        int startStep = 0;
        var run = settings;
        if (store?.TryResume(model.Network, optimizer, fingerprint, settings.Precision, callbacks.Log) is { } resumed)
        {
            history.AddRange(resumed.History);
            startStep = resumed.Step;
            // A seed taken from the MLContext differs between runs; the interrupted run's seed decides the data order.
            if (!settings.SeedIsExplicit) run = settings with { Seed = resumed.Seed };
        }
        var planner = new BatchPlanner(train, run);
        int totalSteps = planner.TotalSteps;
        if (startStep > 0) callbacks.Log?.Invoke($"Resumed from checkpoint at step {startStep} of {totalSteps}.");
        int warmupSteps = (int)Math.Ceiling(settings.WarmupRatio * totalSteps);
        callbacks.Log?.Invoke($"ORPO: {train.Count} pairs, {totalSteps} optimiser steps of {planner.PairsPerStep} pairs, lambda {settings.Lambda}, learning rate {settings.LearningRate}{(settings.Precision == OrpoPrecision.Float32 ? "" : $", {settings.Precision} mixed precision")}.");

        var clock = Stopwatch.StartNew();
        for (int step = startStep; step < totalSteps; step++)
        {
            ThrowIfCanceled(step);
            var stepStart = clock.Elapsed;
            var microBatches = planner.MicroBatches(step);
            double learningRate = LearningRates.At(settings.Schedule, settings.LearningRate, step, totalSteps, warmupSteps);
            var (statistics, gradNorm, tokens) = ComputeGradients(train, microBatches, step, run.Seed, logitsScratch);
            if (!double.IsFinite(statistics.NllSum) || !double.IsFinite(statistics.LogSigmoidSum) || !double.IsFinite(gradNorm))
                throw new InvalidOperationException(
                    $"ORPO training diverged at step {step + 1}: the loss or gradient is not finite (NLL sum {statistics.NllSum}, gradient norm {gradNorm}). " +
                    "The weights were not updated with it; lower LearningRate or set MaxGradNorm.");
            optimizer.Step(learningRate);

            var stepTime = clock.Elapsed - stepStart;
            int done = step + 1 - startStep;
            var metrics = new OrpoStepMetrics(statistics.ToMetrics(settings.Lambda))
            {
                Step = step + 1,
                Epoch = (double)(step + 1) / planner.StepsPerEpoch,
                LearningRate = learningRate,
                GradNorm = gradNorm,
                TokensPerSecond = tokens / Math.Max(stepTime.TotalSeconds, 1e-9),
                Elapsed = clock.Elapsed,
                EstimatedTimeRemaining = clock.Elapsed / done * (totalSteps - step - 1),
                TotalSteps = totalSteps,
            };
            bool lastStep = step + 1 == totalSteps;
            if (validation is { Count: > 0 } && (lastStep || (settings.ValidationInterval > 0 && (step + 1) % settings.ValidationInterval == 0)))
                metrics = metrics with { Validation = PreferenceEvaluator.Evaluate(model.Network, validation, settings) };
            history.Add(metrics);
            Report(metrics);
            if (store is not null && (lastStep || (settings.CheckpointInterval > 0 && (step + 1) % settings.CheckpointInterval == 0)))
                store.Save(step + 1, model.Network, optimizer, history, fingerprint, run.Seed, settings.Precision);
            callbacks.AfterStep?.Invoke(step + 1);
        }
        model.Network.eval();
        return history;
    }

    private (OrpoBatchStatistics Statistics, double GradNorm, double Tokens) ComputeGradients(
        IReadOnlyList<EncodedPair> train, IReadOnlyList<int[]> microBatches, int step, int seed, LogitsScratch logitsScratch)
    {
        var network = model.Network;
        network.train();
        network.zero_grad();
        network.Adapters?.ZeroGradients();
        var stepPairs = microBatches.SelectMany(b => b).Select(i => train[i]).ToList();
        double stepNllTokens = stepPairs.Sum(p => (double)p.NllTokenCount(settings.IncludePromptInNll));
        var statistics = new OrpoBatchStatistics();
        double tokens = 0;
        for (int micro = 0; micro < microBatches.Count; micro++)
        {
            var indices = microBatches[micro];
            ThrowIfCanceled(step);
            using var scope = NewDisposeScope();
            // Adapter dropout masks follow from (seed, step, micro-batch): recomputed layers and resumed runs redraw them.
            using var dropout = network.Adapters?.Dropout.During(seed, step, micro);
            var (terms, batchTokens) = PreferenceForward.Loss(network, indices.Select(i => train[i]).ToList(), settings,
                model.Device, stepNllTokens, stepPairs.Count, logitsScratch);
            terms.Loss.backward();
            statistics += terms.Statistics;
            tokens += batchTokens;
        }
        double gradNorm = GradientNorm.ClipAndMeasure(network.TrainableWeights(), settings.MaxGradNorm);
        return (statistics, gradNorm, tokens);
    }

    private void ThrowIfCanceled(int step)
    {
        if (callbacks.CancellationToken.IsCancellationRequested || callbacks.IsCanceled?.Invoke() == true)
            throw new OperationCanceledException($"ORPO training was canceled during step {step + 1}.", callbacks.CancellationToken);
    }

    private void Report(OrpoStepMetrics m)
    {
        callbacks.Progress?.Report(m);
        if (callbacks.Log is null) return;
        string validation = m.Validation is { } v
            ? $" | validation loss {v.Loss:F4} acc {v.RewardsAccuracy:P0} margin {v.RewardsMargin:F4}"
            : "";
        callbacks.Log($"step {m.Step}/{m.TotalSteps} epoch {m.Epoch:F2} loss {m.Loss:F4} nll {m.NllLoss:F4} L_OR {m.OddsRatioLoss:F4} " +
                      $"acc {m.RewardsAccuracy:P0} margin {m.RewardsMargin:F4} lr {m.LearningRate:E2} |g| {m.GradNorm:F3} " +
                      $"{m.TokensPerSecond:F0} tok/s ETA {m.EstimatedTimeRemaining:hh\\:mm\\:ss}{validation}");
    }
}
