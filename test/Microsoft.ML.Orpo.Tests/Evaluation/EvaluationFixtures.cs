using Microsoft.ML.Orpo.Tests.Infrastructure;

namespace Microsoft.ML.Orpo.Tests.Evaluation;

/// <summary>Preference pairs as IDataViews and ORPO options on stories260K, shared by the evaluation and sweep tests.</summary>
internal static class EvaluationFixtures
{
    public sealed class PairRow
    {
        public string Prompt { get; set; } = "";
        public string Chosen { get; set; } = "";
        public string Rejected { get; set; } = "";
    }

    public static IDataView ToDataView(MLContext ml, IEnumerable<ProtagonistPairs.Pair> pairs) =>
        ml.Data.LoadFromEnumerable(pairs.Select(p => new PairRow { Prompt = p.Prompt, Chosen = p.Chosen, Rejected = p.Rejected }).ToList());

    public static OrpoOptions Options(double lambda = 0.25, int epochs = 1, int batchSize = 8, double learningRate = 1e-3) => new()
    {
        BaseModelPath = TestAssets.Stories260KHf,
        Lambda = lambda,
        Epochs = epochs,
        BatchSize = batchSize,
        LearningRate = learningRate,
        LearningRateSchedule = LearningRateSchedule.Constant,
        Seed = 1,
    };
}
