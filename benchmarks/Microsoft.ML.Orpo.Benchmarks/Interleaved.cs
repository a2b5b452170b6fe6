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

    internal static double Median(IEnumerable<double> values)
    {
        var sorted = values.Order().ToList();
        int n = sorted.Count;
        return n % 2 == 1 ? sorted[n / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2;
    }

    private static JsonArray Seconds(IEnumerable<double> values) => new(values.Select(v => (JsonNode)Math.Round(v, 3)).ToArray());
}

/// <summary>
/// <see cref="PackedGemm"/> reading a row-major A in place against packing it first (the path before
/// <c>KernelRows</c>), products alternated in one process on the training step's shapes: per shape, the median per-round
/// ratio of packed to in-place CPU time (above 1: in place is faster) and the in-place GFLOP/s.
/// </summary>
internal static unsafe class GemmPaths
{
    public static JsonObject RowsVersusPackedA(int rounds)
    {
        var json = new JsonObject { ["metric"] = "gemm_rows_over_packed_a" };
        var ratios = new List<double>();
        // (m, k, n, transB): 41.7M x W^T and dy W at 2048 rows, its LM head chunk (one pair: 384 rows) both ways, the 0.5B shape's MLP.
        foreach (var (m, k, n, transB) in new[] { (2048, 512, 512, true), (2048, 512, 1376, true), (2048, 1376, 512, true),
                     (2048, 512, 512, false), (2048, 1376, 512, false), (2048, 512, 1376, false),
                     (384, 512, 32000, true), (384, 32000, 512, false), (512, 896, 4864, true), (512, 4864, 896, false) })
        {
            using var scope = NewDisposeScope();
            manual_seed(11);
            var a = randn(m, k);
            var b = transB ? randn(n, k) : randn(k, n);
            var c1 = empty(m, n);
            var c2 = empty(m, n);
            float* pa = CpuKernel.Address(a), pb = CpuKernel.Address(b), p1 = CpuKernel.Address(c1), p2 = CpuKernel.Address(c2);
            int ldb = transB ? k : n;
            double Cpu(Action action)
            {
                var cpu = Process.GetCurrentProcess().TotalProcessorTime;
                action();
                return (Process.GetCurrentProcess().TotalProcessorTime - cpu).TotalSeconds;
            }
            void Rows() => PackedGemm.Multiply(m, n, k, pa, k, false, pb, ldb, transB, p1, n, false);
            void Packed() => PackedGemm.MultiplyPackingA(m, n, k, pa, k, false, pb, ldb, transB, p2, n, false);
            Rows(); Packed();
            int reps = Math.Max(1, (int)(2e9 / (2.0 * m * n * k)));
            var rows = new List<double>();
            var packed = new List<double>();
            for (int r = 0; r < rounds; r++)
            {
                double tr = 0, tp = 0;
                if (r % 2 == 0) { tr = Cpu(() => { for (int i = 0; i < reps; i++) Rows(); }); tp = Cpu(() => { for (int i = 0; i < reps; i++) Packed(); }); }
                else { tp = Cpu(() => { for (int i = 0; i < reps; i++) Packed(); }); tr = Cpu(() => { for (int i = 0; i < reps; i++) Rows(); }); }
                rows.Add(tr / reps);
                packed.Add(tp / reps);
            }
            if (!c1.eq(c2).all().item<bool>()) throw new InvalidOperationException($"{m}x{k}x{n}: the two paths differ");
            string name = $"{m}x{k}x{n}{(transB ? "t" : "n")}";
            double ratio = Interleaved.Median(packed.Zip(rows, (p, q) => p / q));
            ratios.Add(ratio);
            json[name] = Math.Round(ratio, 3);
            json[$"{name}.gflops"] = Math.Round(2.0 * m * n * k / Interleaved.Median(rows) / 1e9, 1);
            json[$"{name}.packed_gflops"] = Math.Round(2.0 * m * n * k / Interleaved.Median(packed) / 1e9, 1);
        }
        json["value"] = Math.Round(Interleaved.Median(ratios), 3);
        return json;
    }
}
