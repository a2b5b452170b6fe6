using System.Text.Json.Serialization;

namespace Microsoft.ML.Orpo;

/// <summary>
/// One optimiser step's metrics (TRL's names): the objective's metrics over the step's pairs, computed on the weights
/// before that step's update, and the step's progress, rate and timing.
/// </summary>
public sealed record OrpoStepMetrics : OrpoPreferenceMetrics
{
    /// <summary>Metrics with every value zero, to be set with an object initialiser.</summary>
    public OrpoStepMetrics()
    {
    }

    /// <summary>A step's metrics whose objective metrics are <paramref name="objective"/>'s; the step's own fields start at zero.</summary>
    /// <param name="objective">The objective's metrics over the step's pairs.</param>
    public OrpoStepMetrics(OrpoPreferenceMetrics objective)
        : base(objective)
    {
    }

    // Saved histories (model zip, checkpoints) list Step and Epoch first and the objective's metrics before the other
    // step fields, as they did before these metrics derived from OrpoPreferenceMetrics.

    /// <summary>1-based optimiser step.</summary>
    [JsonPropertyOrder(-1)]
    public int Step { get; init; }
    /// <summary>Fractional epoch at the end of this step (1.0 = one pass over the data).</summary>
    [JsonPropertyOrder(-1)]
    public double Epoch { get; init; }
    /// <summary>Learning rate used for this step's update.</summary>
    [JsonPropertyOrder(1)]
    public double LearningRate { get; init; }
    /// <summary>Global L2 norm of the gradient before clipping.</summary>
    [JsonPropertyOrder(1)]
    public double GradNorm { get; init; }
    /// <summary>Training tokens (chosen + rejected, without padding) per second in this step.</summary>
    [JsonPropertyOrder(1)]
    public double TokensPerSecond { get; init; }
    /// <summary>Wall time since training started.</summary>
    [JsonPropertyOrder(1)]
    public TimeSpan Elapsed { get; init; }
    /// <summary>Estimated time to the end of training.</summary>
    [JsonPropertyOrder(1)]
    public TimeSpan EstimatedTimeRemaining { get; init; }
    /// <summary>Total optimiser steps planned.</summary>
    [JsonPropertyOrder(1)]
    public int TotalSteps { get; init; }
    /// <summary>
    /// Validation-set metrics when validation ran after this step, else null. Unlike the other metrics of the step,
    /// they are computed on the weights after this step's update.
    /// </summary>
    [JsonPropertyOrder(1)]
    public OrpoPreferenceMetrics? Validation { get; init; }
}
