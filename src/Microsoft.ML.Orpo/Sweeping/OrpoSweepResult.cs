using Microsoft.ML.Orpo.Sweeping;

namespace Microsoft.ML.Orpo;

/// <summary>
/// What an <see cref="OrpoSweepExperiment"/> produced: the trial table and the best trial's fitted model. The caller
/// owns <see cref="BestModel"/> and should dispose it.
/// </summary>
public sealed class OrpoSweepResult
{
    private readonly MLContext mlContext;

    internal OrpoSweepResult(MLContext mlContext, IReadOnlyList<OrpoSweepTrial> trials, OrpoSweepTrial bestTrial, OrpoTransformer bestModel,
        OrpoSweepMetric metric, bool maximize, string tuner, TimeSpan elapsed)
    {
        this.mlContext = mlContext;
        Trials = trials;
        BestTrial = bestTrial;
        BestModel = bestModel;
        Metric = metric;
        Maximize = maximize;
        Tuner = tuner;
        Elapsed = elapsed;
    }

    /// <summary>Every trial in the order it ran, failed and canceled ones included.</summary>
    public IReadOnlyList<OrpoSweepTrial> Trials { get; }

    /// <summary>The best completed trial among those trained for the most epochs.</summary>
    public OrpoSweepTrial BestTrial { get; }

    /// <summary>The best trial's fitted model (the other trials' models were disposed).</summary>
    public OrpoTransformer BestModel { get; }

    /// <summary>The optimised validation metric.</summary>
    public OrpoSweepMetric Metric { get; }

    /// <summary>Whether <see cref="Metric"/> was maximised.</summary>
    public bool Maximize { get; }

    /// <summary>The tuner's description, e.g. "SuccessiveHalving(eta=3)".</summary>
    public string Tuner { get; }

    /// <summary>Wall time of the whole sweep.</summary>
    public TimeSpan Elapsed { get; }

    /// <summary>Optimiser steps of all trials together: the sweep's training cost, independent of machine speed.</summary>
    public int TotalTrainingSteps => Trials.Sum(t => t.TrainingSteps);

    /// <summary>
    /// The trial table as an <see cref="IDataView"/>, one row per trial, with the same columns as the CSV: Trial, Rung,
    /// Lambda, LearningRate, Epochs, Status (text), Metric, the validation metrics (NaN for a trial that did not
    /// complete), TrainingSteps, DurationSeconds and Error (text).
    /// </summary>
    public IDataView ToDataView() => mlContext.Data.LoadFromEnumerable(Trials.Select(SweepTrialRow.From).ToList());

    /// <summary>Writes the trial table as CSV (invariant culture, header row, RFC 4180 quoting).</summary>
    public void SaveCsv(TextWriter writer)
    {
        ArgumentNullException.ThrowIfNull(writer);
        SweepTrialTable.WriteCsv(Trials, writer);
    }

    /// <summary>Writes the trial table as a CSV file (UTF-8), creating its folder.</summary>
    public void SaveCsv(string path)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        string? directory = Path.GetDirectoryName(Path.GetFullPath(path));
        if (directory is not null) Directory.CreateDirectory(directory);
        using var writer = new StreamWriter(path);
        SaveCsv(writer);
    }

    /// <summary>The trial table as aligned text, for consoles and logs.</summary>
    public string FormatTable() => SweepTrialTable.Format(Trials, Metric, BestTrial.Id);
}
