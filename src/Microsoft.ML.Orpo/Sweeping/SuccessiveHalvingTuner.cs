namespace Microsoft.ML.Orpo.Sweeping;

/// <summary>Successive halving over the grid configurations (see <see cref="OrpoSweepTuner.SuccessiveHalving"/>).</summary>
internal sealed class SuccessiveHalvingTuner : OrpoSweepTuner
{
    private readonly int eta;
    private readonly int minEpochs;

    public SuccessiveHalvingTuner(int eta, int minEpochs)
    {
        this.eta = eta;
        this.minEpochs = minEpochs;
    }

    public override string ToString() => $"SuccessiveHalving(eta={eta})";

    internal override ISweepPlan CreatePlan(SweepPlanContext context) =>
        new Plan(context.GridConfigurations(), Rungs(context.GridConfigurations().Count, context.BaseEpochs, eta, minEpochs));

    /// <summary>(epochs, configurations) per rung: budgets grow and survivors shrink by eta, ending at the base epochs.</summary>
    internal static IReadOnlyList<(int Epochs, int Configurations)> Rungs(int configurations, int baseEpochs, int eta, int minEpochs)
    {
        int rungs = 1;
        long scale = eta;
        while (configurations / scale >= 1 && baseEpochs / scale >= minEpochs)
        {
            rungs++;
            scale *= eta;
        }
        var result = new List<(int, int)>(rungs);
        int survivors = configurations;
        for (int r = 0; r < rungs; r++)
        {
            int epochs = Math.Max(minEpochs, (int)(baseEpochs / (long)Math.Pow(eta, rungs - 1 - r)));
            result.Add((r == rungs - 1 ? baseEpochs : epochs, survivors));
            survivors = Math.Max(1, survivors / eta);
        }
        return result;
    }

    private sealed class Plan : ISweepPlan
    {
        private readonly IReadOnlyList<(double Lambda, double LearningRate)> configurations;
        private readonly IReadOnlyList<(int Epochs, int Configurations)> rungs;
        private readonly Queue<int> pending = new();
        private readonly List<(int Configuration, double Score)> scores = new();
        private int rung;
        private int issued;

        public Plan(IReadOnlyList<(double, double)> configurations, IReadOnlyList<(int, int)> rungs)
        {
            this.configurations = configurations;
            this.rungs = rungs;
            for (int i = 0; i < configurations.Count; i++) pending.Enqueue(i);
        }

        public TrialProposal? Next()
        {
            if (pending.Count == 0)
            {
                if (scores.Count < issued || rung == rungs.Count - 1) return null;
                Promote();
            }
            int configuration = pending.Dequeue();
            issued++;
            var (lambda, rate) = configurations[configuration];
            return new TrialProposal(configuration, lambda, rate, rungs[rung].Epochs, rung);
        }

        public void Report(TrialProposal proposal, double score) => scores.Add((proposal.Configuration, score));

        /// <summary>Keeps the next rung's number of best configurations (ties: the earlier grid configuration).</summary>
        private void Promote()
        {
            rung++;
            // Failed configurations (score -infinity) are never promoted.
            var survivors = scores.Where(s => s.Score > double.NegativeInfinity).ToList();
            int keep = Math.Min(rungs[rung].Configurations, survivors.Count);
            foreach (var (configuration, _) in survivors.OrderByDescending(s => s.Score).ThenBy(s => s.Configuration).Take(keep).OrderBy(s => s.Configuration))
                pending.Enqueue(configuration);
            scores.Clear();
            issued = 0;
        }
    }
}
