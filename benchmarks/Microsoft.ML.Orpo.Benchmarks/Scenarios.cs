using System.Diagnostics;
using System.Globalization;
using System.Text.Json.Nodes;
using Microsoft.ML.Orpo.Generation;
using Microsoft.ML.Orpo.Modeling;
using Microsoft.ML.Orpo.Tokenization;
using Microsoft.ML.Orpo.Training;
using Microsoft.ML.Orpo.Preferences;
using Microsoft.ML.Orpo.ModelFiles;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Benchmarks;

/// <summary>
/// The benchmark models: the vendored stories260K, a randomly initialised 41.7M-parameter LLaMA, and a randomly
/// initialised model of Qwen2.5-0.5B's shape (<c>qwen05b</c>, 494M parameters, for the LoRA scenarios).
/// </summary>
internal static class BenchModels
{
    public static string RepoRoot { get; } = FindRepoRoot();

    /// <summary>dim 512, 8 layers, 8 heads, 8 KV heads, MLP 1376, vocab 32000, tied: 41.7M parameters.</summary>
    public static LlamaConfig Llama41M => new()
    {
        HiddenSize = 512, IntermediateSize = 1376, NumHiddenLayers = 8, NumAttentionHeads = 8, NumKeyValueHeads = 8,
        HeadDim = 64, VocabSize = 32000, MaxPositionEmbeddings = 1024, RmsNormEps = 1e-5, TieWordEmbeddings = true,
        BosTokenId = 1, EosTokenId = 2,
    };

    /// <summary>
    /// Qwen2.5-0.5B's shape (its config.json): 24 layers, hidden 896, 14 heads of 64, 2 KV heads, MLP 4864, vocab
    /// 151936, q/k/v biases, tied embeddings, rope theta 1e6: 494,032,768 parameters.
    /// </summary>
    public static LlamaConfig Qwen05B => new()
    {
        Architecture = ModelArchitecture.Qwen2, HiddenSize = 896, IntermediateSize = 4864, NumHiddenLayers = 24,
        NumAttentionHeads = 14, NumKeyValueHeads = 2, HeadDim = 64, VocabSize = 151936, MaxPositionEmbeddings = 32768,
        RmsNormEps = 1e-6, RopeTheta = 1e6, TieWordEmbeddings = true, AttentionBias = true, BosTokenId = 1, EosTokenId = 2,
    };

    /// <param name="name">stories260K, llama41m, qwen05b (random) or qwen05b-disk (the checkpoint export.qwen05b wrote).</param>
    /// <param name="projections">The projections' storage type, as a LoRA run with a bfloat16 base loads them (null: float32).</param>
    public static CausalLanguageModel Load(string name, ScalarType? projections = null)
    {
        string stories = Path.Combine(RepoRoot, "models", "stories260K", "hf");
        if (name == "stories260K") return CausalLanguageModel.Load(stories, null, "cpu", projections);
        if (name == "qwen05b-disk") return CausalLanguageModel.Load(CheckpointLoad.Folder, stories, "cpu", projections); // export.qwen05b wrote it
        var config = name switch
        {
            "llama41m" => Llama41M,
            "qwen05b" => Qwen05B,
            _ => throw new ArgumentException($"unknown model '{name}'"),
        };
        // Random N(0, 0.02) weights (HF's initializer_range), norms at 1, biases at 0; the tokenizer is only a placeholder here.
        manual_seed(1234);
        var tokenizer = OrpoTokenizer.Load(stories, null);
        if (name == "qwen05b")
        {
            using var lazy = new RandomWeights(config);
            return CausalLanguageModel.Create(config, lazy, tokenizer, CPU, $"random {name}", projections: projections);
        }
        // 41.7M: drawn as it always was (a full-size probe first), so its weights and losses stay those of earlier runs.
        var weights = new Dictionary<string, Tensor>();
        using (var probe = new LlamaForCausalLM(config))
            foreach (var (n, p) in probe.NamedWeights())
                weights[n] = p.dim() >= 2 ? normal(0, 0.02, p.shape) : ones(p.shape);
        try { return CausalLanguageModel.Create(config, weights, tokenizer, CPU, $"random {name}", projections: projections); }
        finally { foreach (var t in weights.Values) t.Dispose(); }
    }

    public static long ParameterCount(CausalLanguageModel model) => model.Network.NamedWeights().Sum(p => p.Parameter.numel());

    private static string FindRepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "Microsoft.ML.Orpo.sln"))) return dir.FullName;
        return Directory.GetCurrentDirectory();
    }
}

/// <summary>
/// A random state dict drawn one tensor at a time as the model copies it in (and freed at the next), so that building
/// a 0.5B model never holds a second copy of its weights (which would be the process's peak RSS). Names and shapes
/// come from a one-layer probe: every layer has layer 0's shapes.
/// </summary>
internal sealed class RandomWeights : IReadOnlyDictionary<string, Tensor>, IDisposable
{
    private readonly Dictionary<string, long[]> shapes = new(StringComparer.Ordinal);
    private Tensor? current;

    public RandomWeights(LlamaConfig config)
    {
        using var probe = new LlamaForCausalLM(config with { NumHiddenLayers = 1 });
        var layer0 = probe.NamedWeights().ToDictionary(p => p.Name, p => p.Parameter.shape, StringComparer.Ordinal);
        foreach (var (n, shape) in layer0)
            if (!n.StartsWith("model.layers.0.", StringComparison.Ordinal)) shapes[n] = shape;
            else for (int i = 0; i < config.NumHiddenLayers; i++) shapes["model.layers." + i + n["model.layers.0".Length..]] = shape;
    }

    public bool TryGetValue(string key, [System.Diagnostics.CodeAnalysis.MaybeNullWhen(false)] out Tensor value)
    {
        current?.Dispose();
        current = null;
        if (!shapes.TryGetValue(key, out var shape)) { value = null; return false; }
        value = current = shape.Length >= 2 ? normal(0, 0.02, shape) : key.EndsWith(".bias", StringComparison.Ordinal) ? zeros(shape) : ones(shape);
        return true;
    }

    public Tensor this[string key] => TryGetValue(key, out var value) ? value : throw new KeyNotFoundException(key);
    public IEnumerable<string> Keys => shapes.Keys;
    public IEnumerable<Tensor> Values => shapes.Keys.Select(k => this[k]);
    public int Count => shapes.Count;
    public bool ContainsKey(string key) => shapes.ContainsKey(key);
    public IEnumerator<KeyValuePair<string, Tensor>> GetEnumerator() => shapes.Keys.Select(k => KeyValuePair.Create(k, this[k])).GetEnumerator();
    System.Collections.IEnumerator System.Collections.IEnumerable.GetEnumerator() => GetEnumerator();
    public void Dispose() => current?.Dispose();
}

/// <summary>Peak resident memory of this process (Linux VmHWM), in MiB.</summary>
internal static class Memory
{
    public static double PeakRssMiB() => ReadStatus("VmHWM:");
    public static double RssMiB() => ReadStatus("VmRSS:");

    private static double ReadStatus(string key)
    {
        foreach (var line in File.ReadLines("/proc/self/status"))
            if (line.StartsWith(key, StringComparison.Ordinal))
                return double.Parse(line[key.Length..].Trim().Split(' ')[0], CultureInfo.InvariantCulture) / 1024.0;
        return double.NaN;
    }
}

/// <summary>One measured scenario, run in its own process so that peak memory belongs to it alone.</summary>
internal static class Scenarios
{
    /// <summary>
    /// Matmul GFLOP/s: the best of square products of a few sizes, in fp32 (<c>value</c>, the MFU denominator of fp32
    /// scenarios) and in bf16 (<c>bf16_value</c>, the denominator of bf16 mixed-precision scenarios). fp32 takes the
    /// better of libtorch's GEMM and <see cref="PackedGemm"/> (where this CPU uses it), the fastest the machine was seen to multiply.
    /// </summary>
    public static JsonObject Matmul(bool quick)
    {
        var fp32Detail = new JsonObject();
        double torchFp32 = MatmulPeak(ScalarType.Float32, quick, (a, b) => a.matmul(b), fp32Detail, "n");
        double fp32 = !PackedGemm.IsEnabled ? torchFp32
            : Math.Max(torchFp32, MatmulPeak(ScalarType.Float32, quick, (a, b) => CpuMatmul.Multiply(a, false, b, false), fp32Detail, "packed_n"));
        var bf16Detail = new JsonObject();
        double bf16 = MatmulPeak(ScalarType.BFloat16, quick, (a, b) => a.matmul(b), bf16Detail, "n");
        return new JsonObject
        {
            ["metric"] = "matmul_gflops", ["value"] = fp32, ["libtorch_value"] = torchFp32, ["detail"] = fp32Detail,
            ["bf16_value"] = bf16, ["bf16_detail"] = bf16Detail,
        };
    }

    /// <summary>The best GFLOP/s over the sizes; each size's figure goes into <paramref name="detail"/> as prefix + n.</summary>
    private static double MatmulPeak(ScalarType type, bool quick, Func<Tensor, Tensor, Tensor> multiply, JsonObject detail, string prefix)
    {
        double best = 0;
        foreach (int n in new[] { 512, 1024, 2048 })
        {
            using var scope = NewDisposeScope();
            var a = randn(n, n).to_type(type);
            var b = randn(n, n).to_type(type);
            for (int i = 0; i < 2; i++) multiply(a, b).Dispose();
            int reps = 0;
            var clock = Stopwatch.StartNew();
            while (clock.Elapsed.TotalSeconds < (quick ? 0.5 : 1.5)) { multiply(a, b).Dispose(); reps++; }
            double gflops = 2.0 * n * n * n * reps / clock.Elapsed.TotalSeconds / 1e9;
            detail[$"{prefix}{n}"] = Math.Round(gflops, 2);
            best = Math.Max(best, gflops);
        }
        return Math.Round(best, 2);
    }

    /// <summary>Synthetic pairs: random ids, BOS-led prompt, EOS-ended responses, fixed lengths.</summary>
    public static List<EncodedPair> Pairs(int count, int prompt, int response, int vocab, int seed)
    {
        var random = new Random(seed);
        List<int> Ids(int n, int? first, int? last)
        {
            var ids = Enumerable.Range(0, n).Select(_ => random.Next(3, vocab)).ToList();
            if (first is int f) ids[0] = f;
            if (last is int l) ids[^1] = l;
            return ids;
        }
        return Enumerable.Range(0, count).Select(_ => new EncodedPair(Ids(prompt, 1, null), Ids(response, null, 2), Ids(response, null, 2))).ToList();
    }

    /// <summary>ORPO training steps through <see cref="OrpoTrainer"/> (forward + backward + AdamW), timed after warm-up.</summary>
    /// <param name="lora">LoRA adapters to train instead of the weights (attached with seed 42 after loading), or null: full fine-tuning.</param>
    /// <param name="microBatch">Pairs per forward and backward (null: all of a step's pairs); the rest of the step's pairs are accumulated.</param>
    public static JsonObject Train(string modelName, int prompt, int response, int pairsPerStep, int warmup, int steps,
        bool sharedPrompt, int chunkRows, bool recompute = false, OrpoPrecision precision = OrpoPrecision.Float32, LoraConfig? lora = null,
        int? microBatch = null)
    {
        int micro = microBatch ?? pairsPerStep;
        if (pairsPerStep % micro != 0) throw new ArgumentException($"{pairsPerStep} pairs per step do not split into micro-batches of {micro}.");
        // A bfloat16 base is loaded in bfloat16, as FineTuningRun loads it.
        using var model = BenchModels.Load(modelName, lora?.BFloat16Base == true ? ScalarType.BFloat16 : null);
        long parameters = BenchModels.ParameterCount(model);
        if (lora is not null) LoraAdapters.Create(model.Network, lora, 42);
        long trainable = model.Network.TrainableWeights().Sum(p => p.Parameter.numel());
        var pairs = Pairs(pairsPerStep * (warmup + steps), prompt, response, Math.Min(model.Config.VocabSize, 32000), 42);
        var settings = new TrainingSettings
        {
            Lambda = 0.1, LearningRate = 1e-4, Schedule = LearningRateSchedule.Constant, MaxGradNorm = 0, BatchSize = micro,
            GradientAccumulationSteps = pairsPerStep / micro,
            Epochs = 1, Shuffle = false, GroupByLength = false,
            MaxLength = prompt + response, MaxPromptLength = prompt, CheckpointDirectory = null,
            SharedPromptForward = sharedPrompt, LogitsChunkRows = chunkRows, RecomputeActivations = recompute, Precision = precision,
            Lora = lora,
        };
        double rssBefore = Memory.RssMiB();
        // Process CPU time at the end of each step: CPU seconds per measured step move less than wall time when other
        // processes compete for the cores (with one intra-op thread, cpu_step_s ~ step_s on an idle machine).
        var cpuAtStep = new List<double>();
        var callbacks = new TrainingCallbacks { AfterStep = _ => cpuAtStep.Add(Process.GetCurrentProcess().TotalProcessorTime.TotalSeconds) };
        var history = new OrpoTrainer(model, settings, callbacks).Train(pairs);
        double tokensPerStep = 2.0 * pairsPerStep * (prompt + response);
        var measured = history.Skip(warmup).ToList();
        double seconds = measured.Sum(m => tokensPerStep / m.TokensPerSecond);
        double tokensPerSecond = tokensPerStep * measured.Count / seconds;
        int layers = model.Config.NumHiddenLayers, dim = model.Config.HiddenSize;
        // Model FLOPs per token (PaLM, Chowdhery et al. 2022, appendix B): 6N + 12 * layers * dim * sequence. Under LoRA
        // the frozen base does no weight-gradient product: 4N for it, 6 per adapter parameter.
        double weightFlops = lora is null ? 6.0 * parameters : 4.0 * parameters + 6.0 * trainable;
        double flopsPerToken = weightFlops + 12.0 * layers * dim * (prompt + response);
        return new JsonObject
        {
            ["metric"] = "train_tokens_per_s", ["value"] = Math.Round(tokensPerSecond, 2),
            ["model_gflops"] = Math.Round(flopsPerToken * tokensPerSecond / 1e9, 2),
            ["params"] = parameters, ["trainable_params"] = trainable, ["prompt"] = prompt, ["response"] = response, ["pairs"] = pairsPerStep, ["micro_batch"] = micro,
            ["steps"] = measured.Count, ["step_s"] = Math.Round(seconds / measured.Count, 3),
            ["cpu_step_s"] = Math.Round((cpuAtStep[^1] - cpuAtStep[warmup - 1]) / measured.Count, 3),
            ["loss_first"] = Math.Round(history[0].Loss, 5), ["loss_last"] = Math.Round(history[^1].Loss, 5),
            ["peak_rss_mib"] = Math.Round(Memory.PeakRssMiB(), 1), ["rss_before_mib"] = Math.Round(rssBefore, 1),
            ["shared_prompt"] = sharedPrompt, ["logits_chunk_rows"] = chunkRows, ["recompute_activations"] = recompute,
            ["precision"] = precision == OrpoPrecision.BFloat16 ? "bf16" : "fp32",
            ["lora"] = lora is null ? "none" : $"r{lora.Rank} alpha{lora.Alpha} dropout{lora.Dropout} {lora.TargetModules.Count} targets {(lora.BFloat16Base ? "bf16" : "fp32")} base{(lora.UseDora ? " dora" : "")}",
        };
    }

    /// <summary>Greedy decoding of <paramref name="newTokens"/> tokens per row, with the KV cache or by full recompute.</summary>
    public static JsonObject Generate(string modelName, int batch, int prompt, int newTokens, bool cache)
    {
        using var model = BenchModels.Load(modelName);
        var network = model.Network;
        long parameters = BenchModels.ParameterCount(model);
        var prompts = GenerationPrompts(model, batch, prompt);
        var options = new GenerationOptions { MaxNewTokens = newTokens, Temperature = 0 };
        var noStop = new HashSet<int>();
        Func<List<int>[]> run = cache
            ? () => TextGenerator.Generate(network, prompts, options, noStop)
            : () => Recompute(network, prompts, newTokens);
        // Warm-up, then the timed run. With the cache the warm-up is a full-length run: a short one left the per-token
        // managed code in the JIT's unoptimised tier for part of the timed run (stories260K's whole run is ~0.3 s).
        if (cache) TextGenerator.Generate(network, prompts, options, noStop);
        else Recompute(network, prompts, 4);
        var clock = Stopwatch.StartNew();
        var output = run();
        double seconds = clock.Elapsed.TotalSeconds;
        long tokens = output.Sum(o => (long)o.Count);
        // The prefill on its own (the prompt and the first new token), for the decode-only rate beside the end-to-end one
        // (benchmarks/llamacpp reports the same split).
        double prefill = double.NaN;
        if (cache)
        {
            var first = Stopwatch.StartNew();
            TextGenerator.Generate(network, prompts, new GenerationOptions { MaxNewTokens = 1, Temperature = 0 }, noStop);
            prefill = first.Elapsed.TotalSeconds;
        }
        int layers = model.Config.NumHiddenLayers, dim = model.Config.HiddenSize;
        // Per generated token with a cache: 2N + 4 * layers * dim * (attended length), averaged over the decode.
        double flopsPerToken = 2.0 * parameters + 4.0 * layers * dim * (prompt + newTokens / 2.0);
        return new JsonObject
        {
            ["metric"] = "gen_tokens_per_s", ["value"] = Math.Round(tokens / seconds, 2),
            ["model_gflops"] = Math.Round(flopsPerToken * tokens / seconds / 1e9, 3),
            ["batch"] = batch, ["prompt"] = prompt, ["new_tokens"] = newTokens, ["cache"] = cache,
            ["seconds"] = Math.Round(seconds, 3), ["peak_rss_mib"] = Math.Round(Memory.PeakRssMiB(), 1),
            ["first_ids"] = string.Join(",", output[0].Take(8)),
            ["prefill_s"] = cache ? Math.Round(prefill, 4) : null,
            ["decode_tokens_per_s"] = cache ? Math.Round((tokens - batch) / (seconds - prefill), 2) : null,
        };
    }

    /// <summary>The generation scenarios' prompts: <paramref name="batch"/> rows of <paramref name="prompt"/> random ids, BOS first.</summary>
    public static List<IReadOnlyList<int>> GenerationPrompts(CausalLanguageModel model, int batch, int prompt) =>
        Pairs(batch, prompt, 2, Math.Min(model.Config.VocabSize, 32000), 7).Select(p => (IReadOnlyList<int>)p.PromptIds).ToList();

    /// <summary>Greedy decoding without a cache: the whole sequence is run through the network for every new token.</summary>
    public static List<int>[] Recompute(LlamaForCausalLM network, IReadOnlyList<IReadOnlyList<int>> prompts, int newTokens)
    {
        using var noGrad = no_grad();
        int batch = prompts.Count, length = prompts[0].Count;
        var ids = tensor(prompts.SelectMany(p => p.Select(x => (long)x)).ToArray()).view(batch, length);
        var output = Enumerable.Range(0, batch).Select(_ => new List<int>()).ToArray();
        for (int step = 0; step < newTokens; step++)
        {
            using var scope = NewDisposeScope();
            var hidden = network.HiddenStates(ids);
            var next = network.Logits(hidden.narrow(1, hidden.shape[1] - 1, 1)).squeeze(1).argmax(-1);   // (B)
            var host = next.data<long>().ToArray();
            for (int row = 0; row < batch; row++) output[row].Add((int)host[row]);
            var grown = cat(new[] { ids, next.unsqueeze(1) }, 1).DetachFromDisposeScope();
            ids.Dispose();
            ids = grown;
        }
        ids.Dispose();
        return output;
    }
}
