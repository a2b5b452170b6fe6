using Microsoft.ML.Orpo.Modeling;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Training;

/// <summary>The objective's metrics over a set of pairs, without gradients (validation and held-out evaluation).</summary>
internal static class PreferenceEvaluator
{
    public static OrpoPreferenceMetrics Evaluate(LlamaForCausalLM network, IReadOnlyList<EncodedPair> pairs, TrainingSettings settings)
    {
        bool wasTraining = network.training;
        network.eval();
        try
        {
            using var noGrad = no_grad();
            var device = network.LmHeadWeight.device;
            double nllTokens = pairs.Sum(p => settings.IncludePromptInNll ? p.PromptIds.Count + p.ChosenIds.Count - 1.0 : p.ChosenIds.Count);
            var statistics = new OrpoBatchStatistics();
            foreach (var chunk in pairs.Chunk(Math.Max(1, settings.BatchSize)))
            {
                using var scope = NewDisposeScope();
                using var batch = PreferenceBatch.Create(chunk, settings.IncludePromptInNll, device);
                statistics += PreferenceForward.Loss(network, batch, settings.Lambda, nllTokens, pairs.Count).Statistics;
            }
            return statistics.ToMetrics(settings.Lambda);
        }
        finally
        {
            if (wasTraining) network.train();
        }
    }
}
