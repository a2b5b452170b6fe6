using System.Diagnostics;
using System.Text.Json.Nodes;
using Microsoft.ML.Orpo.Training;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Benchmarks;

/// <summary>
/// Shared-prompt versus concatenated layout in one process, steps interleaved (concat, shared, concat, shared...), so
/// both see the same machine load: the ratio is meaningful on a shared, noisy machine where separate runs are not.
/// A step is forward + backward + AdamW on the same pairs; both layouts train the same weights in turn. Each step is
/// timed by wall clock and by this process's CPU time: with one intra-op thread the CPU time hardly moves when other
/// processes compete for the cores, so its ratio is the steadier one on a shared machine.
/// </summary>
internal static class Interleaved
{
    public static JsonObject SharedVersusConcat(string modelName, int prompt, int response, int pairsPerStep, int rounds)
    {
        using var model = BenchModels.Load(modelName);
        var network = model.Network;
        network.train();
        var pairs = Scenarios.Pairs(pairsPerStep, prompt, response, Math.Min(model.Config.VocabSize, 32000), 42);
        var concat = new TrainingSettings { Lambda = 0.1, BatchSize = pairsPerStep };
        var shared = concat with { SharedPromptForward = true };
        var parameters = network.NamedWeights();
        using var optimizer = new AdamW(parameters, 0.9, 0.999, 1e-8, 0);
        double nllTokens = pairs.Sum(p => (double)p.ChosenIds.Count);

        (double Wall, double Cpu) Step(TrainingSettings settings)
        {
            var cpu = Process.GetCurrentProcess().TotalProcessorTime;
            var clock = Stopwatch.StartNew();
            network.zero_grad();
            using (var scope = NewDisposeScope())
            {
                var (terms, _) = PreferenceForward.Loss(network, pairs, settings, CPU, nllTokens, pairs.Count);
                terms.Loss.backward();
                optimizer.Step(1e-5);
            }
            return (clock.Elapsed.TotalSeconds, (Process.GetCurrentProcess().TotalProcessorTime - cpu).TotalSeconds);
        }

        Step(concat); // warm-up
        Step(shared);
        var concatSteps = new List<(double Wall, double Cpu)>();
        var sharedSteps = new List<(double Wall, double Cpu)>();
        for (int i = 0; i < rounds; i++)
        {
            // Alternate which goes first, so neither always follows the other's memory traffic.
            if (i % 2 == 0) { concatSteps.Add(Step(concat)); sharedSteps.Add(Step(shared)); }
            else { sharedSteps.Add(Step(shared)); concatSteps.Add(Step(concat)); }
        }
        // Per-round ratios, then their median: robust to a load spike that hits one round.
        var wall = Median(concatSteps.Zip(sharedSteps, (c, s) => c.Wall / s.Wall));
        var cpuRatio = Median(concatSteps.Zip(sharedSteps, (c, s) => c.Cpu / s.Cpu));
        return new JsonObject
        {
            ["metric"] = "shared_over_concat_tok_s", ["value"] = Math.Round(cpuRatio, 3), ["wall_ratio"] = Math.Round(wall, 3),
            ["prompt"] = prompt, ["response"] = response, ["pairs"] = pairsPerStep, ["rounds"] = rounds,
            ["concat_cpu_s"] = Seconds(concatSteps.Select(s => s.Cpu)), ["shared_cpu_s"] = Seconds(sharedSteps.Select(s => s.Cpu)),
            ["concat_wall_s"] = Seconds(concatSteps.Select(s => s.Wall)), ["shared_wall_s"] = Seconds(sharedSteps.Select(s => s.Wall)),
        };
    }

    private static double Median(IEnumerable<double> values)
    {
        var sorted = values.Order().ToList();
        int n = sorted.Count;
        return n % 2 == 1 ? sorted[n / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2;
    }

    private static JsonArray Seconds(IEnumerable<double> values) => new(values.Select(v => (JsonNode)Math.Round(v, 3)).ToArray());
}
