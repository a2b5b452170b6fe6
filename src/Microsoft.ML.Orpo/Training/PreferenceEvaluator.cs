using Microsoft.ML.Orpo.Modeling;
using Microsoft.ML.Orpo.Preferences;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Training;

/// <summary>The objective's metrics over a set of pairs, without gradients (validation and held-out evaluation).</summary>
internal static class PreferenceEvaluator
{
    public static OrpoPreferenceMetrics Evaluate(LlamaForCausalLM network, IReadOnlyList<EncodedPair> pairs, TrainingSettings settings)
    {
        // No train/eval switch: the decoder has no dropout, and the flag is shared with concurrent generation.
        using var noGrad = no_grad();
        var device = network.LmHeadWeight.device;
        double nllTokens = pairs.Sum(p => (double)p.NllTokenCount(settings.IncludePromptInNll));
        var statistics = new OrpoBatchStatistics();
        foreach (var chunk in pairs.Chunk(Math.Max(1, settings.BatchSize)))
        {
            using var scope = NewDisposeScope();
            // The training layout and chunked LM head, so validation never needs more memory than a training step.
            statistics += PreferenceForward.Loss(network, chunk, settings, device, nllTokens, pairs.Count).Terms.Statistics;
        }
        return statistics.ToMetrics(settings.Lambda);
    }
}
