namespace Microsoft.ML.Orpo;

/// <summary>How a sweep trial ended.</summary>
public enum OrpoTrialStatus
{
    /// <summary>Trained and evaluated.</summary>
    Completed,
    /// <summary>Training or evaluation threw (e.g. divergence); the sweep went on.</summary>
    Failed,
    /// <summary>Stopped by the caller's cancellation; the sweep stopped with it.</summary>
    Canceled,
}

/// <summary>One row of a sweep's trial table.</summary>
public sealed record OrpoSweepTrial
{
    /// <summary>1-based trial number, in the order trials ran.</summary>
    public int Id { get; init; }

    /// <summary>Successive-halving rung (0 = the smallest budget); always 0 for grid and random search.</summary>
    public int Rung { get; init; }

    /// <summary>The trial's odds-ratio weight.</summary>
    public double Lambda { get; init; }

    /// <summary>The trial's peak learning rate.</summary>
    public double LearningRate { get; init; }

    /// <summary>Epochs the trial trained for (a fraction of the base epochs on lower successive-halving rungs).</summary>
    public int Epochs { get; init; }

    /// <summary>How the trial ended.</summary>
    public OrpoTrialStatus Status { get; init; }

    /// <summary>The optimised validation metric; NaN unless <see cref="Status"/> is <see cref="OrpoTrialStatus.Completed"/>.</summary>
    public double Metric { get; init; } = double.NaN;

    /// <summary>All validation metrics after training; null unless completed.</summary>
    public OrpoPreferenceMetrics? Validation { get; init; }

    /// <summary>Optimiser steps the trial took (for a completed trial, its <see cref="History"/>'s count).</summary>
    public int TrainingSteps { get; init; }

    /// <summary>Wall time of the trial: model load, training and evaluation.</summary>
    public TimeSpan Duration { get; init; }

    /// <summary>The exception message of a failed or canceled trial, else null.</summary>
    public string? Error { get; init; }

    /// <summary>The per-step training metrics of a completed trial (empty otherwise).</summary>
    public IReadOnlyList<OrpoStepMetrics> History { get; init; } = Array.Empty<OrpoStepMetrics>();
}
