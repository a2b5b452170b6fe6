using System.Diagnostics;
using System.Globalization;
using Microsoft.ML.Runtime;

namespace Microsoft.ML.Orpo.Sweeping;

/// <summary>One execution of an <see cref="OrpoSweepExperiment"/>: the trial loop, budgets, logging and the best model.</summary>
internal sealed class SweepRun(MLContext mlContext, OrpoOptions baseOptions, IDataView trainData, IDataView validationData,
    OrpoSearchSpace searchSpace, OrpoSweepTuner tuner, OrpoSweepMetric metric, bool maximize, int? maxTrials, TimeSpan? timeBudget,
    IProgress<OrpoSweepTrial>? monitor)
{
    private readonly List<OrpoSweepTrial> trials = new();
    private OrpoSweepTrial? bestTrial;
    private OrpoTransformer? bestModel;

    public OrpoSweepResult Execute(CancellationToken cancellationToken)
    {
        var clock = Stopwatch.StartNew();
        IHostEnvironment env = mlContext;
        using var channel = ((IChannelProvider)mlContext).Start("OrpoSweep");
        try
        {
            cancellationToken.ThrowIfCancellationRequested();
            int seed = baseOptions.Seed ?? env.Register("OrpoSweep").Rand.Next();
            var runner = SweepTrialRunner.Prepare(env, baseOptions, trainData, validationData, seed, channel);
            var plan = tuner.CreatePlan(new SweepPlanContext(searchSpace, baseOptions.LearningRate, baseOptions.Epochs,
                maxTrials, timeBudget is not null, seed));
            channel.Info(MessageSensitivity.None, string.Create(CultureInfo.InvariantCulture,
                $"ORPO sweep: tuner {tuner}, lambda {searchSpace.Lambda}, learning rate {searchSpace.LearningRate?.ToString() ?? baseOptions.LearningRate.ToString("G3", CultureInfo.InvariantCulture)}, " +
                $"metric {metric} ({(maximize ? "maximize" : "minimize")}), {runner.TrainingPairs} training / {runner.ValidationPairs} validation pairs, " +
                $"budget {maxTrials?.ToString(CultureInfo.InvariantCulture) ?? "unlimited"} trials, {(timeBudget is { } t ? $"{t.TotalSeconds:F0} s" : "no time limit")}."));

            while (!cancellationToken.IsCancellationRequested)
            {
                if (maxTrials is int max && trials.Count >= max)
                {
                    channel.Info(MessageSensitivity.None, $"ORPO sweep: trial budget of {max} reached.");
                    break;
                }
                if (timeBudget is { } budget && trials.Count > 0 && clock.Elapsed >= budget)
                {
                    channel.Info(MessageSensitivity.None, string.Create(CultureInfo.InvariantCulture,
                        $"ORPO sweep: time budget of {budget.TotalSeconds:F0} s reached after {clock.Elapsed.TotalSeconds:F1} s."));
                    break;
                }
                var proposal = plan.Next();
                if (proposal is null) break;
                var trial = RunTrial(runner, proposal, cancellationToken, channel);
                plan.Report(proposal, trial.Status == OrpoTrialStatus.Completed ? Oriented(trial.Metric) : double.NegativeInfinity);
                monitor?.Report(trial);
                if (trial.Status == OrpoTrialStatus.Canceled) break;
            }

            if (bestTrial is null || bestModel is null)
            {
                cancellationToken.ThrowIfCancellationRequested();
                if (trials.Any(t => t.Status == OrpoTrialStatus.Canceled))
                    throw new OperationCanceledException("The ORPO sweep was canceled before any trial completed.");
                throw new InvalidOperationException($"No trial of the ORPO sweep completed ({trials.Count} ran). " +
                    string.Join(" | ", trials.Where(t => t.Error is not null).Select(t => $"trial {t.Id}: {t.Error}").Take(3)));
            }
            channel.Info(MessageSensitivity.None, string.Create(CultureInfo.InvariantCulture,
                $"ORPO sweep done in {clock.Elapsed.TotalSeconds:F1} s: {trials.Count} trials, {trials.Sum(t => t.TrainingSteps)} training steps; " +
                $"best trial {bestTrial.Id}: lambda {bestTrial.Lambda:G4}, learning rate {bestTrial.LearningRate:G3}, {metric} {bestTrial.Metric:F4}."));
            var result = new OrpoSweepResult(mlContext, trials.ToArray(), bestTrial, bestModel, metric, maximize, tuner.ToString(), clock.Elapsed);
            bestModel = null;
            return result;
        }
        finally
        {
            bestModel?.Dispose();
        }
    }

    private OrpoSweepTrial RunTrial(SweepTrialRunner runner, TrialProposal proposal, CancellationToken cancellationToken, IChannel channel)
    {
        int id = trials.Count + 1;
        int steps = 0;
        var clock = Stopwatch.StartNew();
        var trial = new OrpoSweepTrial
        {
            Id = id, Rung = proposal.Rung, Lambda = proposal.Lambda, LearningRate = proposal.LearningRate, Epochs = proposal.Epochs,
        };
        OrpoTransformer? model = null;
        try
        {
            model = runner.Run(proposal, cancellationToken, step => steps = step, message => channel.Trace(MessageSensitivity.None, message));
            var validation = model.TrainingHistory[^1].Validation!;
            trial = trial with
            {
                Status = OrpoTrialStatus.Completed, Metric = metric.ValueOf(validation), Validation = validation,
                History = model.TrainingHistory, TrainingSteps = model.TrainingHistory.Count,
            };
        }
        catch (OperationCanceledException e)
        {
            trial = trial with { Status = OrpoTrialStatus.Canceled, Error = e.Message, TrainingSteps = steps };
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            trial = trial with { Status = OrpoTrialStatus.Failed, Error = $"{e.GetType().Name}: {e.Message}", TrainingSteps = steps };
        }
        trial = trial with { Duration = clock.Elapsed };
        trials.Add(trial);
        channel.Info(MessageSensitivity.None, Describe(trial));
        if (model is not null) KeepIfBest(trial, model);
        return trial;
    }

    /// <summary>Keeps the model of the best completed trial among those with the most epochs; disposes every other.</summary>
    private void KeepIfBest(OrpoSweepTrial trial, OrpoTransformer model)
    {
        if (!double.IsFinite(trial.Metric) && bestTrial is not null)
        {
            model.Dispose();
            return;
        }
        bool better = bestTrial is null
            || trial.Epochs > bestTrial.Epochs
            || (trial.Epochs == bestTrial.Epochs && Oriented(trial.Metric) > Oriented(bestTrial.Metric));
        if (!better)
        {
            model.Dispose();
            return;
        }
        bestModel?.Dispose();
        bestModel = model;
        bestTrial = trial;
    }

    private double Oriented(double value) => double.IsNaN(value) ? double.NegativeInfinity : maximize ? value : -value;

    private string Describe(OrpoSweepTrial t)
    {
        string outcome = t.Status == OrpoTrialStatus.Completed
            ? string.Create(CultureInfo.InvariantCulture,
                $"{metric} {t.Metric:F4}, accuracy {t.Validation!.RewardsAccuracy:F3}, log-probs chosen {t.Validation.ChosenLogProbability:F3} rejected {t.Validation.RejectedLogProbability:F3}")
            : $"{t.Status}: {t.Error}";
        return string.Create(CultureInfo.InvariantCulture,
            $"trial {t.Id} (rung {t.Rung}, {t.Epochs} epochs): lambda {t.Lambda:G4}, learning rate {t.LearningRate:G3} -> {outcome} " +
            $"[{t.TrainingSteps} steps, {t.Duration.TotalSeconds:F2} s]");
    }
}
