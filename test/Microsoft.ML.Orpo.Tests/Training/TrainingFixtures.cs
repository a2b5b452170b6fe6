using TorchSharp;
using Microsoft.ML.Orpo.Modeling;
using Microsoft.ML.Orpo.Tests.Infrastructure;
using Microsoft.ML.Orpo.Training;
using Microsoft.ML.Orpo.Preferences;
using Microsoft.ML.Orpo.ModelFiles;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Tests.Training;

/// <summary>Shared set-up for the training tests: stories260K and encoded protagonist pairs.</summary>
internal static class TrainingFixtures
{
    public static CausalLanguageModel LoadModel() => CausalLanguageModel.Load(TestAssets.Stories260KHf, null, "cpu");

    public static List<EncodedPair> Encode(CausalLanguageModel model, IEnumerable<ProtagonistPairs.Pair> pairs, int maxLength = 512)
    {
        var encoder = new PairEncoder(model.Tokenizer, null, maxLength, maxLength / 2);
        return pairs.Select(p => encoder.Encode(p.Prompt, p.Chosen, p.Rejected, out _)!).ToList();
    }

    public static List<EncodedPair> TrainPairs(CausalLanguageModel model, int count) =>
        Encode(model, ProtagonistPairs.Create().Train.Take(count));

    /// <summary>Plain settings: no schedule, clipping, decay, shuffling or grouping; the lengths <see cref="Encode"/> uses.</summary>
    public static TrainingSettings Plain(int batchSize, int epochs = 1, double lambda = 0.1, double learningRate = 1e-3) => new()
    {
        Lambda = lambda,
        LearningRate = learningRate,
        Epochs = epochs,
        BatchSize = batchSize,
        Schedule = LearningRateSchedule.Constant,
        MaxGradNorm = 0,
        WeightDecay = 0,
        Shuffle = false,
        GroupByLength = false,
        Seed = 1,
        MaxLength = 512,
        MaxPromptLength = 256,
    };

    public static Dictionary<string, float[]> Snapshot(CausalLanguageModel model)
    {
        using var noGrad = no_grad();
        return model.Network.NamedWeights().ToDictionary(p => p.Name, p => p.Parameter.to_type(ScalarType.Float32).data<float>().ToArray());
    }

    public static double MaxDifference(Dictionary<string, float[]> a, Dictionary<string, float[]> b) =>
        a.Keys.Max(k => a[k].Zip(b[k], (x, y) => Math.Abs((double)x - y)).Max());

    public static bool BitIdentical(Dictionary<string, float[]> a, Dictionary<string, float[]> b) =>
        a.Count == b.Count && a.Keys.All(k => b.ContainsKey(k) && a[k].AsSpan().SequenceEqual(b[k]));
}
