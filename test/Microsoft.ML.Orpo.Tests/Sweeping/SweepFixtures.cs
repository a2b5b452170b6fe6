using Microsoft.ML.Orpo.Tests.Evaluation;
using Microsoft.ML.Orpo.Tests.Infrastructure;

namespace Microsoft.ML.Orpo.Tests.Sweeping;

/// <summary>A small protagonist-preference sweep on stories260K and a synchronous trial monitor.</summary>
internal static class SweepFixtures
{
    /// <summary>An experiment over <paramref name="trainPairs"/> training pairs, scored on the held-out pairs.</summary>
    public static OrpoSweepExperiment Experiment(MLContext ml, int trainPairs, int epochs, int batchSize = 8, double learningRate = 1e-3)
    {
        var (train, heldOut) = ProtagonistPairs.Create();
        var options = EvaluationFixtures.Options(epochs: epochs, batchSize: batchSize, learningRate: learningRate);
        return new OrpoSweepExperiment(ml)
            .SetBaseOptions(options)
            .SetDataset(EvaluationFixtures.ToDataView(ml, train.Take(trainPairs)), EvaluationFixtures.ToDataView(ml, heldOut));
    }

    /// <summary>Reports on the calling thread (unlike <see cref="Progress{T}"/>, which posts).</summary>
    public sealed class Monitor<T>(Action<T> onReport) : IProgress<T>
    {
        public void Report(T value) => onReport(value);
    }
}
