using Microsoft.ML.Orpo.Modeling;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Tests.Infrastructure;

/// <summary>
/// An independent float64 LLaMA forward pass for one sequence, written from the equations with explicit per-head
/// loops and element-wise rotary embedding (no shared code with the production model). Weights are float64 leaf
/// tensors, so autograd gives reference gradients too.
/// </summary>
internal sealed class ReferenceLlama : IDisposable
{
    private readonly LlamaConfig config;

    public ReferenceLlama(LlamaConfig config, IReadOnlyDictionary<string, Tensor> weights, bool requiresGrad = false)
    {
        this.config = config;
        Weights = weights.ToDictionary(kv => kv.Key,
            kv => kv.Value.to_type(ScalarType.Float64).detach().clone().requires_grad_(requiresGrad).DetachFromDisposeScope());
    }

    public Dictionary<string, Tensor> Weights { get; }

    /// <summary>
    /// LoRA adapters by module path (<c>model.layers.0.self_attn.q_proj</c>), owned by the caller: the module's weight
    /// becomes the effective <c>W + Scale * B A</c>, built in autograd, so the gradients reach A and B.
    /// </summary>
    public Dictionary<string, (Tensor A, Tensor B, double Scale)> Lora { get; } = new();

    private Tensor W(string name) =>
        name.EndsWith(".weight", StringComparison.Ordinal) && Lora.TryGetValue(name[..^".weight".Length], out var lora)
            ? Weights[name] + lora.B.matmul(lora.A) * lora.Scale
            : Weights[name];

    private Tensor Linear(Tensor x, string name) =>
        Weights.TryGetValue(name + ".bias", out var bias) ? x.matmul(W(name + ".weight").t()) + bias : x.matmul(W(name + ".weight").t());

    private Tensor RmsNorm(Tensor x, Tensor weight) // (T, D)
    {
        var meanSquare = (x * x).sum(-1, keepdim: true) / x.shape[1];
        return x / (meanSquare + config.RmsNormEps).sqrt() * weight;
    }

    private static Tensor Rotate(Tensor x, Tensor cos, Tensor sin) // (T, d) one head, rotate-half convention
    {
        long half = x.shape[1] / 2;
        var first = x.narrow(1, 0, half);
        var second = x.narrow(1, half, half);
        return cat(new[] { first * cos - second * sin, second * cos + first * sin }, 1);
    }

    private (Tensor Cos, Tensor Sin) Angles(int t) // (T, d/2) each
    {
        int half = config.HeadDim / 2;
        var angle = new double[t * half];
        for (int p = 0; p < t; p++)
            for (int i = 0; i < half; i++)
                angle[p * half + i] = p * Math.Pow(config.RopeTheta, -2.0 * i / config.HeadDim);
        var a = tensor(angle).view(t, half);
        return (a.cos(), a.sin());
    }

    /// <summary>(T) ids -> (T, V) float64 logits.</summary>
    public Tensor Logits(IReadOnlyList<int> ids)
    {
        int t = ids.Count, d = config.HeadDim, group = config.NumAttentionHeads / config.NumKeyValueHeads;
        var x = W("model.embed_tokens.weight").index_select(0, tensor(ids.Select(i => (long)i).ToArray()));
        var causal = ones(t, t, dtype: ScalarType.Float64).triu(1) * -1e30;
        var (cos, sin) = Angles(t);
        for (int l = 0; l < config.NumHiddenLayers; l++)
        {
            string p = $"model.layers.{l}.";
            var h = RmsNorm(x, W(p + "input_layernorm.weight"));
            var q = Linear(h, p + "self_attn.q_proj");
            var k = Linear(h, p + "self_attn.k_proj");
            var v = Linear(h, p + "self_attn.v_proj");
            var heads = new List<Tensor>();
            for (int head = 0; head < config.NumAttentionHeads; head++)
            {
                int kv = head / group;
                var qh = Rotate(q.narrow(1, head * d, d), cos, sin);
                var kh = Rotate(k.narrow(1, kv * d, d), cos, sin);
                var vh = v.narrow(1, kv * d, d);
                var scores = qh.matmul(kh.t()) / Math.Sqrt(d) + causal;
                heads.Add(scores.softmax(-1).matmul(vh));
            }
            x = x + Linear(cat(heads.ToArray(), 1), p + "self_attn.o_proj");
            var h2 = RmsNorm(x, W(p + "post_attention_layernorm.weight"));
            var gate = h2.matmul(W(p + "mlp.gate_proj.weight").t());
            var up = h2.matmul(W(p + "mlp.up_proj.weight").t());
            x = x + (gate * gate.sigmoid() * up).matmul(W(p + "mlp.down_proj.weight").t());
        }
        x = RmsNorm(x, W("model.norm.weight"));
        var head0 = Weights.TryGetValue("lm_head.weight", out var lmHead) ? lmHead : W("model.embed_tokens.weight");
        return x.matmul(head0.t());
    }

    public void Dispose()
    {
        foreach (var w in Weights.Values) w.Dispose();
    }
}
