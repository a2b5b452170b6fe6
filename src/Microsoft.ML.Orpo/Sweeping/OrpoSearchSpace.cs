namespace Microsoft.ML.Orpo;

/// <summary>The hyperparameters an <see cref="OrpoSweepExperiment"/> searches; everything else comes from its base <see cref="OrpoOptions"/>.</summary>
public sealed class OrpoSearchSpace
{
    /// <summary>
    /// The odds-ratio weight. Default: log scale from 0.01 to 1 with 5 grid points (0.01, 0.0316, 0.1, 0.316, 1),
    /// spanning the paper's recommended 0.1 to 0.25 and its ablation's 0.1 to 1.
    /// </summary>
    public SweepRange Lambda { get; set; } = SweepRange.LogScale(0.01, 1.0, 5);

    /// <summary>The peak learning rate; null (the default) keeps the base options' <see cref="OrpoOptions.LearningRate"/>.</summary>
    public SweepRange? LearningRate { get; set; }

    /// <summary>Checks the values a trial may get: lambda &gt;= 0, learning rate &gt; 0.</summary>
    internal void Validate()
    {
        if (Lambda is null) throw new ArgumentNullException(nameof(Lambda), "OrpoSearchSpace.Lambda must not be null.");
        if (Lambda.Min < 0) throw new ArgumentOutOfRangeException(nameof(Lambda), Lambda.Min, "OrpoSearchSpace.Lambda must not go below 0.");
        if (LearningRate is not null && !(LearningRate.Min > 0))
            throw new ArgumentOutOfRangeException(nameof(LearningRate), LearningRate.Min, "OrpoSearchSpace.LearningRate must stay above 0.");
    }
}
