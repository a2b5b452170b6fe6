using Microsoft.ML.Orpo.Preferences;
namespace Microsoft.ML.Orpo.Training;

/// <summary>
/// Deterministic data order: epoch e's order depends only on (seed, e), so a resumed run replays exactly the
/// batches an uninterrupted run would see. Each optimiser step holds BatchSize x GradientAccumulationSteps pairs
/// split into micro-batches; with length grouping, pairs of similar length share a batch (less padding) while the
/// order of batches stays shuffled.
/// </summary>
internal sealed class BatchPlanner
{
    private readonly IReadOnlyList<EncodedPair> pairs;
    private readonly TrainingSettings settings;
    private (int Epoch, int[][] Steps)? planned;

    public BatchPlanner(IReadOnlyList<EncodedPair> pairs, TrainingSettings settings)
    {
        if (pairs.Count == 0) throw new ArgumentException("There are no pairs to train on.", nameof(pairs));
        this.pairs = pairs;
        this.settings = settings;
        PairsPerStep = settings.BatchSize * settings.GradientAccumulationSteps;
        StepsPerEpoch = (pairs.Count + PairsPerStep - 1) / PairsPerStep;
    }

    public int PairsPerStep { get; }
    public int StepsPerEpoch { get; }
    public int TotalSteps => StepsPerEpoch * settings.Epochs;

    /// <summary>The micro-batches (pair indices) of 0-based global optimiser step <paramref name="step"/>.</summary>
    public IReadOnlyList<int[]> MicroBatches(int step)
    {
        int epoch = step / StepsPerEpoch;
        if (planned?.Epoch != epoch) planned = (epoch, PlanEpoch(epoch));
        return planned.Value.Steps[step % StepsPerEpoch].Chunk(settings.BatchSize).ToArray();
    }

    private int[][] PlanEpoch(int epoch)
    {
        var order = Enumerable.Range(0, pairs.Count).ToArray();
        // System.Random with a seed is stable across processes and runtimes (HashCode.Combine would not be).
        var random = new Random(unchecked(settings.Seed * 1_000_003 + epoch));
        if (settings.Shuffle) random.Shuffle(order);
        if (settings.GroupByLength)
        {
            // Sort within mega-batches of several steps: long enough to group lengths, short enough to stay shuffled.
            order = order.Chunk(PairsPerStep * 8)
                .SelectMany(chunk => chunk.OrderByDescending(i => pairs[i].LongestLength).ThenBy(i => i))
                .ToArray();
        }
        var steps = order.Chunk(PairsPerStep).ToArray();
        if (settings.Shuffle && settings.GroupByLength) random.Shuffle(steps);
        return steps;
    }
}
