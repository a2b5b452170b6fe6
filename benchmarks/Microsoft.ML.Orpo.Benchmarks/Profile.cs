using System.Diagnostics;
using TorchSharp;
using System.Text.Json.Nodes;
using Microsoft.ML.Orpo.Modeling;
using Microsoft.ML.Orpo.Training;
using Microsoft.ML.Orpo.Preferences;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Benchmarks;

/// <summary>Where one ORPO step spends its time: batch build, forward, backward, gradient norm, AdamW (wall clock; cpu_*: process CPU time).</summary>
internal static class Profile
{
    public static JsonObject Step(string modelName, int prompt, int response, int pairsPerStep, int steps, bool shared, int chunkRows,
        OrpoPrecision precision = OrpoPrecision.Float32, LoraConfig? lora = null)
    {
        using var model = BenchModels.Load(modelName);
        var network = model.Network;
        if (lora is not null) LoraAdapters.Create(network, lora, 42);
        network.train();
        var pairs = Scenarios.Pairs(pairsPerStep, prompt, response, Math.Min(model.Config.VocabSize, 32000), 42);
        var settings = new TrainingSettings
        {
            Lambda = 0.1, BatchSize = pairsPerStep, SharedPromptForward = shared, LogitsChunkRows = chunkRows, Precision = precision,
        };
        var parameters = network.TrainableWeights();
        using var optimizer = new AdamW(parameters, 0.9, 0.999, 1e-8, 0);
        var parts = new Dictionary<string, double> { ["forward"] = 0, ["backward"] = 0, ["gradnorm"] = 0, ["adamw"] = 0, ["hidden_only"] = 0,
            ["cpu_forward"] = 0, ["cpu_backward"] = 0, ["cpu_hidden_only"] = 0 };
        double nllTokens = pairs.Sum(p => (double)p.ChosenIds.Count);
        using var scratch = new LogitsScratch(); // as the trainer: one logits block for the run
        for (int s = 0; s < steps + 1; s++)
        {
            var clock = Stopwatch.StartNew();
            double cpuStart = CpuSeconds();
            network.zero_grad();
            network.Adapters?.ZeroGradients();
            using var scope = NewDisposeScope();
            using var dropout = network.Adapters?.Dropout.During(42, s, 0);
            var (terms, _) = PreferenceForward.Loss(network, pairs, settings, CPU, nllTokens, pairs.Count, scratch);
            double forward = clock.Elapsed.TotalSeconds, cpuForward = CpuSeconds() - cpuStart;
            terms.Loss.backward();
            double backward = clock.Elapsed.TotalSeconds, cpuBackward = CpuSeconds() - cpuStart - cpuForward;
            GradientNorm.ClipAndMeasure(parameters, 0);
            double norm = clock.Elapsed.TotalSeconds;
            optimizer.Step(1e-4);
            double adam = clock.Elapsed.TotalSeconds;
            double hiddenOnly, cpuHiddenOnly;
            using (no_grad())
            {
                using var batch = PreferenceBatch.Create(pairs, false, CPU);
                var c2 = Stopwatch.StartNew();
                var cpu2 = CpuSeconds();
                network.HiddenStates(batch.InputIds, matmulType: precision.MatmulType()).Dispose();
                hiddenOnly = c2.Elapsed.TotalSeconds;
                cpuHiddenOnly = CpuSeconds() - cpu2;
            }
            if (s == 0) continue;
            parts["forward"] += forward / steps;
            parts["backward"] += (backward - forward) / steps;
            parts["gradnorm"] += (norm - backward) / steps;
            parts["adamw"] += (adam - norm) / steps;
            parts["hidden_only"] += hiddenOnly / steps;
            parts["cpu_forward"] += cpuForward / steps;
            parts["cpu_backward"] += cpuBackward / steps;
            parts["cpu_hidden_only"] += cpuHiddenOnly / steps;
        }
        var json = new JsonObject { ["metric"] = "profile_seconds", ["value"] = Math.Round(parts.Values.Take(4).Sum(), 4) };
        foreach (var (k, v) in parts) json[k] = Math.Round(v, 4);
        return json;
    }

    private static double CpuSeconds() => Process.GetCurrentProcess().TotalProcessorTime.TotalSeconds;
}

/// <summary>
/// fp32 against bf16 mixed precision, interleaved in one process on one network and batch: each round times one full
/// step (forward, backward, gradient norm, AdamW at learning rate 0, so every round does the same work) per
/// precision, back to back, so machine load drifting over minutes hits both alike. Reports the medians and the
/// median of the per-round fp32/bf16 ratios.
/// </summary>
internal static class PrecisionProfile
{
    public static JsonObject Run(string modelName, int prompt, int response, int pairsPerStep, int rounds)
    {
        using var model = BenchModels.Load(modelName);
        var network = model.Network;
        network.train();
        var pairs = Scenarios.Pairs(pairsPerStep, prompt, response, Math.Min(model.Config.VocabSize, 32000), 42);
        var parameters = network.NamedWeights();
        using var optimizer = new AdamW(parameters, 0.9, 0.999, 1e-8, 0);
        double nllTokens = pairs.Sum(p => (double)p.ChosenIds.Count);
        var precisions = new[] { OrpoPrecision.Float32, OrpoPrecision.BFloat16 };
        var seconds = precisions.ToDictionary(p => p, _ => new List<double>());
        var loss = new Dictionary<OrpoPrecision, double>();
        for (int round = 0; round <= rounds; round++)   // round 0 warms up
            foreach (var precision in round % 2 == 0 ? precisions : precisions.Reverse())
            {
                var settings = new TrainingSettings { Lambda = 0.1, BatchSize = pairsPerStep, Precision = precision };
                var clock = Stopwatch.StartNew();
                network.zero_grad();
                using var scope = NewDisposeScope();
                var (terms, _) = PreferenceForward.Loss(network, pairs, settings, CPU, nllTokens, pairs.Count);
                terms.Loss.backward();
                GradientNorm.ClipAndMeasure(parameters, 0);
                optimizer.Step(0);
                if (round == 0) loss[precision] = terms.Loss.ToDouble();
                else seconds[precision].Add(clock.Elapsed.TotalSeconds);
            }
        static double Median(IEnumerable<double> values)
        {
            var sorted = values.Order().ToArray();
            return sorted.Length % 2 == 1 ? sorted[sorted.Length / 2] : (sorted[sorted.Length / 2 - 1] + sorted[sorted.Length / 2]) / 2;
        }
        var fp32 = seconds[OrpoPrecision.Float32];
        var bf16 = seconds[OrpoPrecision.BFloat16];
        double ratio = Median(fp32.Zip(bf16, (a, b) => a / b));
        return new JsonObject
        {
            ["metric"] = "bf16_speedup", ["value"] = Math.Round(ratio, 3),
            ["fp32_step_s"] = Math.Round(Median(fp32), 3), ["bf16_step_s"] = Math.Round(Median(bf16), 3),
            ["fp32_rounds"] = string.Join(",", fp32.Select(s => s.ToString("F3", System.Globalization.CultureInfo.InvariantCulture))),
            ["bf16_rounds"] = string.Join(",", bf16.Select(s => s.ToString("F3", System.Globalization.CultureInfo.InvariantCulture))),
            ["fp32_loss"] = Math.Round(loss[OrpoPrecision.Float32], 5), ["bf16_loss"] = Math.Round(loss[OrpoPrecision.BFloat16], 5),
            ["tokens_per_step"] = 2 * pairsPerStep * (prompt + response),
        };
    }
}

/// <summary>Micro-timings of attention variants.</summary>
internal static class AttentionProfile
{
    public static JsonObject Run(long b, long h, long t, long d)
    {
        using var scope = NewDisposeScope();
        var q = randn(b, h, t, d).requires_grad_(true);
        var k = randn(b, h, t, d).requires_grad_(true);
        var v = randn(b, h, t, d).requires_grad_(true);
        var causalMask = full(t, t, float.NegativeInfinity).triu(1);
        var qh = randn(b, h, t, d).to_type(ScalarType.BFloat16).requires_grad_(true);
        var kh = randn(b, h, t, d).to_type(ScalarType.BFloat16).requires_grad_(true);
        var vh = randn(b, h, t, d).to_type(ScalarType.BFloat16).requires_grad_(true);
        var causalMaskH = causalMask.to_type(ScalarType.BFloat16);
        double Time(Func<Tensor> f, bool backward)
        {
            for (int i = 0; i < 2; i++) { var y = f(); if (backward) y.sum().backward(); }
            var c = Stopwatch.StartNew();
            for (int i = 0; i < 5; i++) { using var s2 = NewDisposeScope(); var y = f(); if (backward) y.sum().backward(); }
            return c.Elapsed.TotalSeconds / 5;
        }
        Tensor Manual() => (q.matmul(k.transpose(-1, -2)) / Math.Sqrt(d) + causalMask).softmax(-1).matmul(v);
        Tensor Sdpa() => nn.functional.scaled_dot_product_attention(q, k, v, is_casual: true);
        Tensor SdpaMask() => nn.functional.scaled_dot_product_attention(q, k, v, attn_mask: causalMask);
        Tensor SdpaBf16() => nn.functional.scaled_dot_product_attention(qh, kh, vh, is_casual: true);
        Tensor SdpaMaskBf16() => nn.functional.scaled_dot_product_attention(qh, kh, vh, attn_mask: causalMaskH);
        // The library's small-head kernel (rotary embedding folded in; identity rotation here), where it applies.
        var cos = ones(b, 1, t, d);
        var sin = zeros(b, 1, t, d);
        Tensor Kernel() => CausalAttention.Apply(q, k, v, cos, sin);
        var json = new JsonObject
        {
            ["metric"] = "attention_seconds", ["value"] = 0,
            ["sdpa_causal_fwd"] = Time(Sdpa, false), ["sdpa_causal_fwdbwd"] = Time(Sdpa, true),
            ["sdpa_mask_fwd"] = Time(SdpaMask, false), ["sdpa_mask_fwdbwd"] = Time(SdpaMask, true),
            ["manual_fwd"] = Time(Manual, false), ["manual_fwdbwd"] = Time(Manual, true),
            ["sdpa_causal_bf16_fwdbwd"] = Time(SdpaBf16, true), ["sdpa_mask_bf16_fwdbwd"] = Time(SdpaMaskBf16, true),
        };
        if (CausalAttention.Supports(q, k, v, cos))
        {
            json["kernel_fwd"] = Time(Kernel, false);
            json["kernel_fwdbwd"] = Time(Kernel, true);
        }
        // Wider heads: per-head GEMM blocks (output already in the (B, T, H * d) layout the projection reads).
        Tensor Blocked() => BlockedCausalAttention.Apply(q, k, v);
        if (BlockedCausalAttention.Supports(q, k, v))
        {
            json["blocked_fwd"] = Time(Blocked, false);
            json["blocked_fwdbwd"] = Time(Blocked, true);
        }
        return json;
    }
}

/// <summary>Micro-timings of the decoder's pieces at stories260K size, no grad.</summary>
internal static class PieceProfile
{
    public static JsonObject Run(string modelName)
    {
        using var model = BenchModels.Load(modelName);
        var net = model.Network;
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        var ids = randint(3, 500, new long[] { 8, 256 });
        double Time(Action f)
        {
            for (int i = 0; i < 2; i++) { using var s = NewDisposeScope(); f(); }
            var c = Stopwatch.StartNew();
            for (int i = 0; i < 5; i++) { using var s = NewDisposeScope(); f(); }
            return Math.Round(c.Elapsed.TotalSeconds / 5 * 1000, 2);
        }
        var x = randn(8, 256, model.Config.HiddenSize);
        var w = randn(model.Config.IntermediateSize, model.Config.HiddenSize);
        var pos = arange(256).unsqueeze(0).expand(8, 256);
        return new JsonObject
        {
            ["metric"] = "piece_ms", ["value"] = 0,
            ["hidden_states"] = Time(() => net.HiddenStates(ids)),
            ["linear_up"] = Time(() => nn.functional.linear(x, w)),
            ["rmsnorm_like"] = Time(() => { var n = x * rsqrt(x.pow(2).mean(new long[] { -1 }, keepdim: true) + 1e-5); }),
            ["silu_mul"] = Time(() => { var y = nn.functional.silu(x) * x; }),
            ["logits"] = Time(() => net.Logits(x)),
            ["logits_logsumexp"] = Time(() => net.Logits(x).logsumexp(-1)),
        };
    }
}

/// <summary>
/// The LM head + loss of one 41.7M-shaped micro-batch (4 pairs x 192 response rows each side, vocabulary 32000),
/// forward + backward, alternating the fused path and the chunked log-prob path in one process.
/// </summary>
internal static class LossHeadProfile
{
    public static JsonObject Run(int rounds)
    {
        const int pairs = 4, response = 192, width = 512, vocabulary = 32000;
        manual_seed(3);
        var hidden = (randn(2 * pairs * response, width) * 0.5).requires_grad_(true);
        var weight = (randn(vocabulary, width) * 0.02).requires_grad_(true);
        var targets = randint(0, vocabulary, new long[] { 2 * pairs * response }, dtype: ScalarType.Int64);
        var sequence = arange(2 * pairs, dtype: ScalarType.Int64).repeat_interleave(response);
        var isResponse = ones(2 * pairs * response, ScalarType.Bool);
        using var rows = ScoredRows.Create(arange(2 * pairs * response, dtype: ScalarType.Int64), targets, sequence, isResponse, pairs);
        var scale = new OrpoLossScale(pairs * response, pairs, 0.1);

        double Fused()
        {
            using var scope = NewDisposeScope();
            var clock = Stopwatch.StartNew();
            FusedOrpoLoss.Compute(hidden, weight, rows, scale.Objective, TrainingSettings.DefaultLogitsChunkRows).Loss.backward();
            return clock.Elapsed.TotalSeconds;
        }
        double Chunked()
        {
            using var scope = NewDisposeScope();
            var clock = Stopwatch.StartNew();
            var logp = ChunkedLogProbs.Compute(hidden, weight, targets, TrainingSettings.DefaultLogitsChunkRows).view(2 * pairs, response);
            var means = logp.mean(new long[] { 1 });
            var nll = logp.narrow(0, 0, pairs).sum().neg();
            OrpoObjective.LossValue(means.narrow(0, 0, pairs), means.narrow(0, pairs, pairs), nll, scale.StepNllTokens, scale.StepPairs, scale.Lambda).backward();
            return clock.Elapsed.TotalSeconds;
        }
        Fused(); Chunked();
        double fused = 0, chunked = 0;
        for (int i = 0; i < rounds; i++) { fused += Fused(); chunked += Chunked(); }
        return new JsonObject
        {
            ["metric"] = "losshead_seconds", ["value"] = Math.Round(fused / rounds, 4),
            ["fused_s"] = Math.Round(fused / rounds, 4), ["chunked_s"] = Math.Round(chunked / rounds, 4),
            ["chunked_over_fused"] = Math.Round(chunked / fused, 3),
        };
    }
}
