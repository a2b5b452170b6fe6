using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.ML.Orpo;
using Microsoft.ML.Orpo.Benchmarks;
using Microsoft.ML.Orpo.Modeling;
using Microsoft.ML.Orpo.Training;
using static TorchSharp.torch;

// Usage: Microsoft.ML.Orpo.Benchmarks [--quick] [--threads N] [--interop N] [--only a,b] [--out results.jsonl] [--list]
//        Microsoft.ML.Orpo.Benchmarks --export-gguf DIR [--quick]   (the models, prompts and our ids for benchmarks/llamacpp)
//        Microsoft.ML.Orpo.Benchmarks --fingerprint DIR   (greedy texts and ORPO trajectories, exactly: diff two builds)
// Every scenario runs in a child process of its own (peak RSS is per scenario); one JSON object per result line,
// then a summary table with model FLOPs utilisation against the matmul peak measured in the same run (the bf16 peak
// for bf16 mixed-precision scenarios).
var options = BenchOptions.Parse(args);
if (options.Fingerprint is not null)
{
    Fingerprint.Run(options.Fingerprint);
    return 0;
}
if (options.ExportGguf is not null)
{
    GgufExport.Run(options.ExportGguf, 64, options.Quick ? 64 : 256);
    return 0;
}
if (options.Scenario is not null)
{
    if (options.Threads > 0) set_num_threads(options.Threads);
    if (options.Interop > 0) set_num_interop_threads(options.Interop);
    var plan = Plan.All(options.Quick).Single(p => p.Name == options.Scenario);
    var result = plan.Run();
    result["impl"] = "orpo-dotnet";
    result["scenario"] = plan.Name;
    result["threads"] = get_num_threads();
    Console.WriteLine(result.ToJsonString(new JsonSerializerOptions { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping }));
    return 0;
}

// Profiles, interleaved A/B runs, the LoRA scenarios (benchmarks/lora.sh) and the checkpoint export/load run only when named.
var plans = Plan.All(options.Quick).Where(p => options.Only.Count == 0
    ? !p.Name.StartsWith("profile", StringComparison.Ordinal) && !p.Name.StartsWith("ab.", StringComparison.Ordinal)
        && !p.Name.StartsWith("lora.", StringComparison.Ordinal) && !p.Name.StartsWith("export.", StringComparison.Ordinal)
        && !p.Name.StartsWith("load.", StringComparison.Ordinal)
    : options.Only.Any(o => p.Name.Contains(o, StringComparison.Ordinal))).ToList();
if (options.List) { foreach (var p in plans) Console.WriteLine(p.Name); return 0; }
var results = new List<JsonObject>();
using var sink = options.Out is null ? null : new StreamWriter(options.Out, append: false);
foreach (var plan in plans)
{
    var child = new ProcessStartInfo(Environment.ProcessPath!) { RedirectStandardOutput = true, UseShellExecute = false };
    foreach (var a in args) child.ArgumentList.Add(a);
    child.ArgumentList.Add("--scenario");
    child.ArgumentList.Add(plan.Name);
    if (Path.GetFileNameWithoutExtension(Environment.ProcessPath!) == "dotnet")
        child.ArgumentList.Insert(0, typeof(BenchOptions).Assembly.Location);
    using var process = Process.Start(child)!;
    string output = process.StandardOutput.ReadToEnd();
    process.WaitForExit();
    foreach (var line in output.Split('\n').Where(l => l.StartsWith('{')))
    {
        var json = JsonNode.Parse(line)!.AsObject();
        results.Add(json);
        Console.WriteLine(line);
        sink?.WriteLine(line);
        sink?.Flush();
    }
    if (process.ExitCode != 0) Console.Error.WriteLine($"scenario {plan.Name} failed with exit code {process.ExitCode}");
}
Summary.Print(results);
return 0;

/// <summary>Command-line options.</summary>
internal sealed record BenchOptions(bool Quick, int Threads, int Interop, IReadOnlyList<string> Only, string? Out, string? Scenario, bool List,
    string? ExportGguf, string? Fingerprint)
{
    public static BenchOptions Parse(string[] args)
    {
        bool quick = false, list = false;
        int threads = 0, interop = 0;
        var only = new List<string>();
        string? output = null, scenario = null, exportGguf = null, fingerprint = null;
        for (int i = 0; i < args.Length; i++)
        {
            switch (args[i])
            {
                case "--quick": quick = true; break;
                case "--list": list = true; break;
                case "--threads": threads = int.Parse(args[++i], CultureInfo.InvariantCulture); break;
                case "--interop": interop = int.Parse(args[++i], CultureInfo.InvariantCulture); break;
                case "--only": only.AddRange(args[++i].Split(',', StringSplitOptions.RemoveEmptyEntries)); break;
                case "--out": output = args[++i]; break;
                case "--scenario": scenario = args[++i]; break;
                case "--export-gguf": exportGguf = args[++i]; break;
                case "--fingerprint": fingerprint = args[++i]; break;
                default: throw new ArgumentException($"unknown argument '{args[i]}'");
            }
        }
        return new BenchOptions(quick, threads, interop, only, output, scenario, list, exportGguf, fingerprint);
    }
}

/// <summary>A named scenario.</summary>
internal sealed record Plan(string Name, Func<JsonObject> Run)
{
    public static IEnumerable<Plan> All(bool quick)
    {
        yield return new("matmul", () => Scenarios.Matmul(quick));
        // "concat" is the library's default path (concatenated chosen+rejected rows, chunked LM head over scored
        // positions); "plain" is the same without chunking (full logits); "shared" adds prefix sharing; "bf16" is
        // "concat" with OrpoPrecision.BFloat16 (bf16 matmuls, fp32 weights, gradients and AdamW state).
        int chunk = TrainingSettings.DefaultLogitsChunkRows, steps41 = quick ? 1 : 2;
        const OrpoPrecision bf16 = OrpoPrecision.BFloat16;
        yield return new("train.stories260K.concat.64+192", () => Scenarios.Train("stories260K", 64, 192, 4, 2, quick ? 4 : 10, false, chunk));
        yield return new("train.stories260K.bf16.64+192", () => Scenarios.Train("stories260K", 64, 192, 4, 2, quick ? 4 : 10, false, chunk, precision: bf16));
        yield return new("train.stories260K.plain.64+192", () => Scenarios.Train("stories260K", 64, 192, 4, 2, quick ? 4 : 10, false, 0));
        yield return new("train.llama41m.concat.64+192", () => Scenarios.Train("llama41m", 64, 192, 4, 1, steps41, false, chunk));
        yield return new("train.llama41m.bf16.64+192", () => Scenarios.Train("llama41m", 64, 192, 4, 1, steps41, false, chunk, precision: bf16));
        yield return new("train.llama41m.plain.64+192", () => Scenarios.Train("llama41m", 64, 192, 4, 1, steps41, false, 0));
        yield return new("train.llama41m.concat-recompute.64+192", () => Scenarios.Train("llama41m", 64, 192, 4, 1, steps41, false, chunk, recompute: true));
        yield return new("train.llama41m.plain-recompute.64+192", () => Scenarios.Train("llama41m", 64, 192, 4, 1, steps41, false, 0, recompute: true));
        yield return new("train.llama41m.shared.64+192", () => Scenarios.Train("llama41m", 64, 192, 4, 1, 1, true, chunk));
        yield return new("train.llama41m.concat.128+128", () => Scenarios.Train("llama41m", 128, 128, 4, 1, 1, false, chunk));
        yield return new("train.llama41m.shared.128+128", () => Scenarios.Train("llama41m", 128, 128, 4, 1, 1, true, chunk));
        yield return new("train.llama41m.concat.170+86", () => Scenarios.Train("llama41m", 170, 86, 4, 1, 1, false, chunk));
        yield return new("train.llama41m.shared.170+86", () => Scenarios.Train("llama41m", 170, 86, 4, 1, 1, true, chunk));
        // LoRA (rank 16, alpha 32, dropout 0.05, all seven projections) against full fine-tuning, steps of 4 pairs x
        // 64+192 tokens. *-micro: one pair per forward and backward (BatchSize 1, GradientAccumulationSteps 4: the same
        // update), so only one pair's activations are alive at a time; the 0.5B shape's main configuration. The 0.5B
        // shape also with recomputed activations (qwen05b) and with 4 pairs stored (qwen05b-stored); 1 warm-up + 1
        // measured step there. qwen05b-disk: one pair per pass from the bf16 checkpoint export.qwen05b writes (the
        // process's peak RSS then includes loading it).
        // qwen05b-micro-bf16: qwen05b-micro with Precision = BFloat16 (bf16 products, fp32 adapters, gradients and AdamW).
        const OrpoPrecision fp32 = OrpoPrecision.Float32;
        foreach (var (model, name, recompute, micro, warm, measured, precision) in new[] { ("llama41m", "llama41m", false, 4, 1, steps41, fp32),
                     ("llama41m", "llama41m-micro", false, 1, 1, steps41, fp32), ("qwen05b", "qwen05b-micro", false, 1, 1, 1, fp32),
                     ("qwen05b", "qwen05b-micro-bf16", false, 1, 1, 1, bf16),
                     ("qwen05b", "qwen05b", true, 4, 1, 1, fp32), ("qwen05b", "qwen05b-stored", false, 4, 1, 1, fp32),
                     ("qwen05b-disk", "qwen05b-disk", false, 1, 1, 1, fp32) })
        {
            yield return new($"lora.{name}.full", () => Scenarios.Train(model, 64, 192, 4, warm, measured, false, chunk, recompute, precision, microBatch: micro));
            foreach (bool bf16Base in new[] { false, true })
                yield return new($"lora.{name}.{(bf16Base ? "bf16" : "fp32")}base", () => Scenarios.Train(model, 64, 192, 4, warm, measured, false, chunk, recompute,
                    precision, lora: new LoraConfig(16, 32, 0.05, LoraOptions.AllLinear, bf16Base), microBatch: micro));
        }
        // DoRA (UseDora) in the llama41m and qwen05b-micro configurations: with dropout 0.05 a step runs each base product
        // twice (PEFT's formula); without dropout DoRA is the fused LoRA projection rescaled per row, against plain LoRA
        // without dropout.
        foreach (var (model, name, micro, measured) in new[] { ("llama41m", "llama41m", 4, steps41), ("qwen05b", "qwen05b-micro", 1, 1) })
            foreach (var (suffix, dropout, dora) in new[] { ("dora", 0.05, true), ("dora-nodropout", 0.0, true), ("nodropout", 0.0, false) })
                foreach (bool bf16Base in new[] { false, true })
                    yield return new($"lora.{name}-{suffix}.{(bf16Base ? "bf16" : "fp32")}base", () => Scenarios.Train(model, 64, 192, 4, 1, measured, false, chunk,
                        lora: new LoraConfig(16, 32, dropout, LoraOptions.AllLinear, bf16Base, UseDora: dora), microBatch: micro));
        // The LoRA configurations above with SharedPromptForward (each pair's prompt computed once for both responses).
        foreach (var (model, name, micro, measured) in new[] { ("llama41m", "llama41m", 4, steps41), ("qwen05b", "qwen05b-micro", 1, 1) })
            foreach (bool bf16Base in new[] { false, true })
                yield return new($"lora.{name}-shared.{(bf16Base ? "bf16" : "fp32")}base", () => Scenarios.Train(model, 64, 192, 4, 1, measured, true, chunk,
                    lora: new LoraConfig(16, 32, 0.05, LoraOptions.AllLinear, bf16Base), microBatch: micro));
        // Loading a 0.5B-shaped bf16 checkpoint from disk (run only when named; export.qwen05b writes it first).
        yield return new("export.qwen05b", CheckpointLoad.Export);
        yield return new("load.qwen05b.streamed", () => CheckpointLoad.Load(stateDict: false));
        yield return new("load.qwen05b.state-dict", () => CheckpointLoad.Load(stateDict: true));
        yield return new("load.qwen05b.bf16-projections", () => CheckpointLoad.Load(stateDict: false, bf16Projections: true));
        // Interleaved A/B in one process: shared-prompt over concatenated tok/s (median of per-round ratios).
        foreach (var (p, r) in new[] { (170, 86), (128, 128), (64, 192) })
            yield return new($"ab.llama41m.shared-vs-concat.{p}+{r}", () => Interleaved.SharedVersusConcat("llama41m", p, r, 4, quick ? 3 : 6));
        yield return new("ab.gemm.rows-vs-packed-a", () => GemmPaths.RowsVersusPackedA(quick ? 3 : 7));
        yield return new("ab.llama41m.packed-gemm", () => Interleaved.PackedGemmVersusLibtorch("llama41m", 64, 192, 4, quick ? 3 : 6));
        yield return new("ab.stories260K.packed-gemm", () => Interleaved.PackedGemmVersusLibtorch("stories260K", 64, 192, 4, quick ? 10 : 30));
        yield return new("profile.stories260K", () => Profile.Step("stories260K", 64, 192, 4, 3, false, 0));
        yield return new("profile.llama41m", () => Profile.Step("llama41m", 64, 192, 4, 1, false, 0));
        yield return new("profile.llama41m.chunked", () => Profile.Step("llama41m", 64, 192, 4, 1, false, chunk));
        yield return new("profile.precision.stories260K", () => PrecisionProfile.Run("stories260K", 64, 192, 4, quick ? 4 : 10));
        yield return new("profile.precision.llama41m", () => PrecisionProfile.Run("llama41m", 64, 192, 4, quick ? 2 : 4));
        foreach (bool bf16Base in new[] { false, true })
            yield return new($"profile.llama41m.lora.{(bf16Base ? "bf16" : "fp32")}base", () => Profile.Step("llama41m", 64, 192, 4, 2, false, chunk,
                lora: new LoraConfig(16, 32, 0.05, LoraOptions.AllLinear, bf16Base)));
        yield return new("profile.lora.pieces", () => LoraProfile.Run(quick ? 5 : 11, new[] { (512, 512), (512, 1376), (1376, 512) }));
        yield return new("profile.lora.pieces.qwen05b", () => LoraProfile.Run(quick ? 3 : 5, new[] { (896, 896), (896, 4864), (4864, 896) }));
        yield return new("profile.llama41m.lora.full", () => Profile.Step("llama41m", 64, 192, 4, 2, false, chunk));
        yield return new("profile.llama41m.bf16", () => Profile.Step("llama41m", 64, 192, 4, 1, false, chunk, bf16));
        yield return new("profile.attention.stories", () => AttentionProfile.Run(8, 8, 256, 8));
        yield return new("profile.attention.llama41m", () => AttentionProfile.Run(8, 8, 256, 64));
        yield return new("profile.losshead.llama41m", () => LossHeadProfile.Run(quick ? 2 : 5));
        foreach (var (p, r) in new[] { (170, 86), (128, 128), (64, 192) })
            yield return new($"profile.attention.shared.{p}+{r}", () => SharedAttentionProfile.Run(p, r, 4, 8, 64, quick ? 5 : 11));
        yield return new("profile.pieces.stories260K", () => PieceProfile.Run("stories260K"));
        int n = quick ? 64 : 256;
        foreach (var model in new[] { "stories260K", "llama41m" })
            foreach (int batch in new[] { 1, 8 })
            {
                yield return new($"gen.{model}.cache.b{batch}", () => Scenarios.Generate(model, batch, 64, n, cache: true));
                // Full recompute of the 41.7M model at batch 8 would take minutes on 2 cores; it is measured at batch 1.
                if (model == "stories260K" || batch == 1)
                    yield return new($"gen.{model}.recompute.b{batch}", () => Scenarios.Generate(model, batch, 64, n, cache: false));
            }
    }
}

/// <summary>The human-readable table after the JSON lines.</summary>
internal static class Summary
{
    public static void Print(IReadOnlyList<JsonObject> results)
    {
        var matmul = results.FirstOrDefault(r => (string?)r["scenario"] == "matmul");
        double peak = matmul?["value"]?.GetValue<double>() ?? double.NaN;
        double bf16Peak = matmul?["bf16_value"]?.GetValue<double>() ?? double.NaN;
        Console.WriteLine();
        Console.WriteLine($"matmul peak (this run): fp32 {peak:F1}, bf16 {bf16Peak:F1} GFLOP/s; MFU = model GFLOP/s / the peak of the scenario's precision");
        Console.WriteLine($"{"scenario",-42} {"value",12} {"unit",-10} {"MFU",7} {"peak RSS MiB",13}");
        foreach (var r in results.Where(r => (string?)r["scenario"] != "matmul"))
        {
            double value = r["value"]!.GetValue<double>();
            double model = r["model_gflops"]?.GetValue<double>() ?? double.NaN;
            double rss = r["peak_rss_mib"]?.GetValue<double>() ?? double.NaN;
            string metric = (string?)r["metric"] ?? "";
            string unit = metric.StartsWith("train", StringComparison.Ordinal) ? "tok/s"
                : metric.StartsWith("gen", StringComparison.Ordinal) ? "new tok/s" : metric.Contains("_over_", StringComparison.Ordinal) ? "ratio" : "";
            double denominator = (string?)r["precision"] == "bf16" ? bf16Peak : peak;
            Console.WriteLine($"{r["scenario"],-42} {value,12:F1} {unit,-10} {model / denominator,7:P1} {rss,13:F0}");
        }
        // Ratios inside this run.
        Ratio(results, "train.llama41m.concat.64+192", "train.llama41m.plain.64+192", "peak_rss_mib", "chunked / plain peak RSS");
        Ratio(results, "train.llama41m.concat.64+192", "train.llama41m.plain.64+192", "value", "chunked / plain tok/s");
        Ratio(results, "train.llama41m.concat-recompute.64+192", "train.llama41m.plain-recompute.64+192", "peak_rss_mib", "chunked / plain peak RSS, recomputed activations");
        Ratio(results, "train.llama41m.concat-recompute.64+192", "train.llama41m.concat.64+192", "peak_rss_mib", "recomputed / stored activations peak RSS (chunked)");
        Ratio(results, "train.llama41m.concat-recompute.64+192", "train.llama41m.concat.64+192", "value", "recomputed / stored activations tok/s (chunked)");
        Ratio(results, "train.stories260K.concat.64+192", "train.stories260K.plain.64+192", "value", "stories260K chunked / plain tok/s");
        foreach (var model in new[] { "stories260K", "llama41m" })
        {
            Ratio(results, $"train.{model}.bf16.64+192", $"train.{model}.concat.64+192", "value", $"{model} bf16 / fp32 tok/s");
            Ratio(results, $"train.{model}.bf16.64+192", $"train.{model}.concat.64+192", "peak_rss_mib", $"{model} bf16 / fp32 peak RSS");
        }
        Ratio(results, "matmul", "matmul", "bf16_value", "value", "bf16 / fp32 matmul peak");
        foreach (var shape in new[] { "170+86", "128+128", "64+192" })
            Ratio(results, $"train.llama41m.shared.{shape}", $"train.llama41m.concat.{shape}", "value", $"shared / concat tok/s at {shape}");
        foreach (var model in new[] { "stories260K", "llama41m" })
            Ratio(results, $"gen.{model}.cache.b1", $"gen.{model}.recompute.b1", "value", $"{model} KV cache / recompute, batch 1");
        Ratio(results, "gen.stories260K.cache.b8", "gen.stories260K.recompute.b8", "value", "stories260K KV cache / recompute, batch 8");
        foreach (var model in new[] { "llama41m", "llama41m-micro", "qwen05b-micro", "qwen05b", "qwen05b-stored" })
            foreach (var mode in new[] { "fp32base", "bf16base" })
            {
                Ratio(results, $"lora.{model}.{mode}", $"lora.{model}.full", "value", $"{model} LoRA {mode} / full fine-tuning tok/s (target >= 1.3)");
                Ratio(results, $"lora.{model}.{mode}", $"lora.{model}.full", "peak_rss_mib", $"{model} LoRA {mode} / full fine-tuning peak RSS (target <= 0.45 at the 0.5B shape)");
            }
    }

    private static void Ratio(IReadOnlyList<JsonObject> results, string a, string b, string field, string label) =>
        Ratio(results, a, b, field, field, label);

    private static void Ratio(IReadOnlyList<JsonObject> results, string a, string b, string fieldA, string fieldB, string label)
    {
        var x = results.FirstOrDefault(r => (string?)r["scenario"] == a)?[fieldA]?.GetValue<double>();
        var y = results.FirstOrDefault(r => (string?)r["scenario"] == b)?[fieldB]?.GetValue<double>();
        if (x is double p && y is double q && q > 0)
            Console.WriteLine(JsonSerializer.Serialize(new { ratio = label, value = Math.Round(p / q, 3) },
                new JsonSerializerOptions { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping }));
    }
}
