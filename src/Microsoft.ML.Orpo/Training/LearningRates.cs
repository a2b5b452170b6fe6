namespace Microsoft.ML.Orpo.Training;

/// <summary>The learning rate of each optimiser step: linear warm-up, then the chosen decay.</summary>
internal static class LearningRates
{
    /// <param name="schedule">Decay shape.</param>
    /// <param name="baseRate">Peak learning rate.</param>
    /// <param name="step">0-based optimiser step.</param>
    /// <param name="totalSteps">Planned optimiser steps.</param>
    /// <param name="warmupSteps">Steps of linear warm-up from 0.</param>
    public static double At(LearningRateSchedule schedule, double baseRate, int step, int totalSteps, int warmupSteps)
    {
        if (step < warmupSteps) return baseRate * (step + 1) / warmupSteps;
        double progress = totalSteps <= warmupSteps ? 0 : (double)(step - warmupSteps) / (totalSteps - warmupSteps);
        return schedule switch
        {
            LearningRateSchedule.Constant => baseRate,
            LearningRateSchedule.Linear => baseRate * (1 - progress),
            LearningRateSchedule.Cosine => baseRate * 0.5 * (1 + Math.Cos(Math.PI * progress)),
            _ => throw new ArgumentOutOfRangeException(nameof(schedule), schedule, "Unknown learning-rate schedule."),
        };
    }
}
