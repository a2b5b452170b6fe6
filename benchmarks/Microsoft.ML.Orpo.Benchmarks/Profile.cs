using System.Diagnostics;
using System.Text.Json.Nodes;
using Microsoft.ML.Orpo.Modeling;
using Microsoft.ML.Orpo.Training;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Benchmarks;

/// <summary>Where one ORPO step spends its time: batch build, forward, backward, gradient norm, AdamW.</summary>
internal static class Profile
{
    public static JsonObject Step(string modelName, int prompt, int response, int pairsPerStep, int steps, bool shared, int chunkRows)
    {
        using var model = BenchModels.Load(modelName);
        var network = model.Network;
        network.train();
        var pairs = Scenarios.Pairs(pairsPerStep, prompt, response, Math.Min(model.Config.VocabSize, 32000), 42);
        var settings = new TrainingSettings { Lambda = 0.1, BatchSize = pairsPerStep, SharedPromptForward = shared, LogitsChunkRows = chunkRows };
        var parameters = network.NamedWeights();
        using var optimizer = new AdamW(parameters, 0.9, 0.999, 1e-8, 0);
        var parts = new Dictionary<string, double> { ["forward"] = 0, ["backward"] = 0, ["gradnorm"] = 0, ["adamw"] = 0, ["hidden_only"] = 0 };
        double nllTokens = pairs.Sum(p => (double)p.ChosenIds.Count);
        for (int s = 0; s < steps + 1; s++)
        {
            var clock = Stopwatch.StartNew();
            network.zero_grad();
            using var scope = NewDisposeScope();
            var (terms, _) = PreferenceForward.Loss(network, pairs, settings, CPU, nllTokens, pairs.Count);
            double forward = clock.Elapsed.TotalSeconds;
            terms.Loss.backward();
            double backward = clock.Elapsed.TotalSeconds;
            GradientNorm.ClipAndMeasure(parameters, 0);
            double norm = clock.Elapsed.TotalSeconds;
            optimizer.Step(1e-4);
            double adam = clock.Elapsed.TotalSeconds;
            double hiddenOnly;
            using (no_grad())
            {
                using var batch = PreferenceBatch.Create(pairs, false, CPU);
                var c2 = Stopwatch.StartNew();
                network.HiddenStates(batch.InputIds).Dispose();
                hiddenOnly = c2.Elapsed.TotalSeconds;
            }
            if (s == 0) continue;
            parts["forward"] += forward / steps;
            parts["backward"] += (backward - forward) / steps;
            parts["gradnorm"] += (norm - backward) / steps;
            parts["adamw"] += (adam - norm) / steps;
            parts["hidden_only"] += hiddenOnly / steps;
        }
        var json = new JsonObject { ["metric"] = "profile_seconds", ["value"] = Math.Round(parts.Values.Take(4).Sum(), 4) };
        foreach (var (k, v) in parts) json[k] = Math.Round(v, 4);
        return json;
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
        };
        if (CausalAttention.Supports(q, k, v, cos))
        {
            json["kernel_fwd"] = Time(Kernel, false);
            json["kernel_fwdbwd"] = Time(Kernel, true);
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
