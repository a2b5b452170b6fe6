namespace Microsoft.ML.Orpo.Sweeping;

/// <summary>One trial a tuner asks for.</summary>
internal sealed record TrialProposal(int Configuration, double Lambda, double LearningRate, int Epochs, int Rung);

/// <summary>What a tuner plans over: the search space and the base budget.</summary>
internal sealed record SweepPlanContext(OrpoSearchSpace SearchSpace, double BaseLearningRate, int BaseEpochs, int? MaxTrials,
    bool HasTimeBudget, int Seed)
{
    /// <summary>Every grid combination, lambda-major, in increasing order.</summary>
    public IReadOnlyList<(double Lambda, double LearningRate)> GridConfigurations()
    {
        var rates = SearchSpace.LearningRate?.GridValues ?? new[] { BaseLearningRate };
        return SearchSpace.Lambda.GridValues.SelectMany(l => rates.Select(r => (l, r))).ToList();
    }
}

/// <summary>
/// An ask/tell plan: the experiment asks <see cref="Next"/> for a trial, runs it, and tells the plan its score
/// (higher is better; negative infinity for a failed trial) before asking again.
/// </summary>
internal interface ISweepPlan
{
    /// <summary>The next trial, or null when the plan is exhausted.</summary>
    TrialProposal? Next();

    /// <summary>The oriented score of a proposal returned by <see cref="Next"/>.</summary>
    void Report(TrialProposal proposal, double score);
}

/// <summary>A sequence of proposals that ignores scores (grid and random search).</summary>
internal sealed class FixedPlan : ISweepPlan
{
    private readonly IEnumerator<TrialProposal> proposals;

    /// <param name="proposals">Enumerated lazily, one per <see cref="Next"/> (so it may be endless).</param>
    public FixedPlan(IEnumerable<TrialProposal> proposals) => this.proposals = proposals.GetEnumerator();

    public TrialProposal? Next() => proposals.MoveNext() ? proposals.Current : null;

    public void Report(TrialProposal proposal, double score)
    {
    }
}

/// <summary>Grid search.</summary>
internal sealed class GridTuner : OrpoSweepTuner
{
    public override string ToString() => "Grid";

    internal override ISweepPlan CreatePlan(SweepPlanContext context) =>
        new FixedPlan(context.GridConfigurations().Select((c, i) => new TrialProposal(i, c.Lambda, c.LearningRate, context.BaseEpochs, 0)));
}

/// <summary>Random search.</summary>
internal sealed class RandomTuner : OrpoSweepTuner
{
    private const int DefaultTrials = 10;
    private readonly int? seed;

    public RandomTuner(int? seed) => this.seed = seed;

    public override string ToString() => "Random";

    internal override ISweepPlan CreatePlan(SweepPlanContext context)
    {
        var random = new System.Random(seed ?? context.Seed);
        int? count = context.MaxTrials ?? (context.HasTimeBudget ? null : DefaultTrials);
        var space = context.SearchSpace;
        return new FixedPlan(Draws());

        IEnumerable<TrialProposal> Draws()
        {
            for (int i = 0; count is null || i < count; i++)
            {
                double lambda = space.Lambda.Sample(random);
                double rate = space.LearningRate?.Sample(random) ?? context.BaseLearningRate;
                yield return new TrialProposal(i, lambda, rate, context.BaseEpochs, 0);
            }
        }
    }
}
