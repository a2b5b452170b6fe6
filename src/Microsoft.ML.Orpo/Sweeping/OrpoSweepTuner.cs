using Microsoft.ML.Orpo.Sweeping;

namespace Microsoft.ML.Orpo;

/// <summary>
/// How an <see cref="OrpoSweepExperiment"/> picks its trials (ML.NET AutoML's tuner role): <see cref="Grid"/>,
/// <see cref="Random"/> or <see cref="SuccessiveHalving"/>.
/// </summary>
public abstract class OrpoSweepTuner
{
    private protected OrpoSweepTuner()
    {
    }

    /// <summary>Every combination of the search space's grid values, each trained for the base epochs, in increasing order.</summary>
    public static OrpoSweepTuner Grid() => new GridTuner();

    /// <summary>
    /// Independent random draws from the search space (log-uniform on log-scale ranges), each trained for the base
    /// epochs; as many as the experiment's trial budget allows (10 when it has neither a trial nor a time budget).
    /// </summary>
    /// <param name="seed">Seed of the draws; null: the experiment's seed.</param>
    public static OrpoSweepTuner Random(int? seed = null) => new RandomTuner(seed);

    /// <summary>
    /// Successive halving over the search space's grid: every configuration first trains for a fraction of the base
    /// epochs; the best 1/<paramref name="reductionFactor"/> are retrained (from the base model) with
    /// <paramref name="reductionFactor"/> times the epochs, and so on until the survivors train for the full base
    /// epochs. With n configurations and E base epochs the rungs are E/eta^(R-1), ..., E/eta, E epochs, with
    /// R = 1 + min(floor(log_eta n), floor(log_eta(E / minEpochs))) rungs.
    /// </summary>
    /// <param name="reductionFactor">eta: the fraction kept and the growth of the budget per rung, &gt;= 2. Default 3.</param>
    /// <param name="minEpochs">The smallest budget a rung trains for. Default 1.</param>
    public static OrpoSweepTuner SuccessiveHalving(int reductionFactor = 3, int minEpochs = 1)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(reductionFactor, 2);
        ArgumentOutOfRangeException.ThrowIfLessThan(minEpochs, 1);
        return new SuccessiveHalvingTuner(reductionFactor, minEpochs);
    }

    /// <summary>A short description for logs, e.g. "SuccessiveHalving(eta=3)".</summary>
    public abstract override string ToString();

    internal abstract ISweepPlan CreatePlan(SweepPlanContext context);
}
