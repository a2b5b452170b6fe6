using System.Diagnostics;
using System.Text.Json.Nodes;
using Microsoft.ML.Orpo.Modeling;
using Microsoft.ML.Orpo.Training;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Benchmarks;

/// <summary>
/// Two variants of the training step in one process, steps interleaved (A, B, B, A...), so both see the same machine
/// load (shared-prompt versus concatenated layout; our GEMM versus libtorch's): the ratio is meaningful on a shared, noisy machine where separate runs are not.
/// A step is forward + backward + AdamW on the same pairs; both layouts train the same weights in turn. Each step is
/// timed by wall clock and by this process's CPU time: with one intra-op thread the CPU time hardly moves when other
/// processes compete for the cores, so its ratio is the steadier one on a shared machine.
/// </summary>
internal static class Interleaved
{
    public static JsonObject SharedVersusConcat(string modelName, int prompt, int response, int pairsPerStep, int rounds)
    {
        var concat = new TrainingSettings { Lambda = 0.1, BatchSize = pairsPerStep };
        var result = Compare(modelName, prompt, response, pairsPerStep, rounds,
            ("concat", concat, UseKernels: true), ("shared", concat with { SharedPromptForward = true }, UseKernels: true));
        result["metric"] = "shared_over_concat_tok_s";
        return result;
    }

    /// <summary>The concatenated layout's step with <see cref="PackedGemm"/> against the same step with libtorch's GEMM.</summary>
    public static JsonObject PackedGemmVersusLibtorch(string modelName, int prompt, int response, int pairsPerStep, int rounds)
    {
        var settings = new TrainingSettings { Lambda = 0.1, BatchSize = pairsPerStep };
        var result = Compare(modelName, prompt, response, pairsPerStep, rounds, ("libtorch", settings, UseKernels: false),
            ("packed", settings, UseKernels: true));
        result["metric"] = "packed_gemm_over_libtorch_tok_s";
        return result;
    }

    /// <summary>
    /// Steps of <paramref name="baseline"/> and <paramref name="candidate"/> alternated on one model and batch; value =
    /// the median per-round ratio of baseline to candidate CPU time (above 1: the candidate is faster).
    /// </summary>
    private static JsonObject Compare(string modelName, int prompt, int response, int pairsPerStep, int rounds,
        (string Name, TrainingSettings Settings, bool UseKernels) baseline, (string Name, TrainingSettings Settings, bool UseKernels) candidate)
    {
        using var model = BenchModels.Load(modelName);
        var network = model.Network;
        network.train();
        var pairs = Scenarios.Pairs(pairsPerStep, prompt, response, Math.Min(model.Config.VocabSize, 32000), 42);
        var parameters = network.NamedWeights();
        using var optimizer = new AdamW(parameters, 0.9, 0.999, 1e-8, 0);
        double nllTokens = pairs.Sum(p => (double)p.ChosenIds.Count);
        using var scratch = new LogitsScratch(); // the trainer's: one logits block for the run

        (double Wall, double Cpu) Step((string Name, TrainingSettings Settings, bool UseKernels) variant)
        {
            var cpu = Process.GetCurrentProcess().TotalProcessorTime;
            var clock = Stopwatch.StartNew();
            network.zero_grad();
            using (variant.UseKernels ? null : KernelPolicy.Without(CpuKernels.MatrixProduct))
            using (var scope = NewDisposeScope())
            {
                var (terms, _) = PreferenceForward.Loss(network, pairs, variant.Settings, CPU, nllTokens, pairs.Count, scratch);
                terms.Loss.backward();
                optimizer.Step(1e-5);
            }
            return (clock.Elapsed.TotalSeconds, (Process.GetCurrentProcess().TotalProcessorTime - cpu).TotalSeconds);
        }

        Step(baseline); // warm-up
        Step(candidate);
        var baselineSteps = new List<(double Wall, double Cpu)>();
        var candidateSteps = new List<(double Wall, double Cpu)>();
        for (int i = 0; i < rounds; i++)
        {
            // Alternate which goes first, so neither always follows the other's memory traffic.
            if (i % 2 == 0) { baselineSteps.Add(Step(baseline)); candidateSteps.Add(Step(candidate)); }
            else { candidateSteps.Add(Step(candidate)); baselineSteps.Add(Step(baseline)); }
        }
        // Per-round ratios, then their median: robust to a load spike that hits one round.
        var wall = Median(baselineSteps.Zip(candidateSteps, (b, c) => b.Wall / c.Wall));
        var cpuRatio = Median(baselineSteps.Zip(candidateSteps, (b, c) => b.Cpu / c.Cpu));
        return new JsonObject
        {
            ["value"] = Math.Round(cpuRatio, 3), ["wall_ratio"] = Math.Round(wall, 3),
            ["prompt"] = prompt, ["response"] = response, ["pairs"] = pairsPerStep, ["rounds"] = rounds,
            [$"{baseline.Name}_cpu_s"] = Seconds(baselineSteps.Select(s => s.Cpu)), [$"{candidate.Name}_cpu_s"] = Seconds(candidateSteps.Select(s => s.Cpu)),
            [$"{baseline.Name}_wall_s"] = Seconds(baselineSteps.Select(s => s.Wall)), [$"{candidate.Name}_wall_s"] = Seconds(candidateSteps.Select(s => s.Wall)),
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
