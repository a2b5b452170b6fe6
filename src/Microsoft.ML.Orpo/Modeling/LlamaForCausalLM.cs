using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Microsoft.ML.Orpo.Modeling;

// A LLaMA-family decoder (LLaMA, Mistral, Qwen2) in dependency order. Field names equal the Hugging Face
// state-dict keys (model.layers.0.self_attn.q_proj.weight ...), so checkpoints load strictly with no mapping table.
// Shapes: B batch, T new tokens, S attended tokens (cache + new), D hidden, H query heads, K key/value heads,
// d head dim, I MLP width, V vocabulary.
// Mixed precision: every method that runs the network takes an optional matmul type (e.g. bfloat16). Given one, each
// Linear multiplies its input and weight cast to it (see MixedPrecision), like PyTorch's autocast; RMSNorm, RoPE,
// attention and the residual stream stay in the weights' type (float32), and so do the weights themselves.
#pragma warning disable IDE1006 // field names are the HF state-dict keys

/// <summary>The matmul-type switch of mixed-precision training (PyTorch autocast's rule for <c>linear</c>).</summary>
internal static class MixedPrecision
{
    /// <summary>
    /// <paramref name="module"/> applied to <paramref name="x"/>; with a <paramref name="matmulType"/> other than the
    /// weight's, the input, weight and bias are cast to it first and the output stays in it. The casts are autograd
    /// ops: the gradient reaching the (float32) weight is cast back to its type.
    /// </summary>
    public static Tensor Linear(Tensor x, Linear module, ScalarType? matmulType)
    {
        var weight = module.weight!;
        if (matmulType is not ScalarType type || type == weight.dtype)
        {
            long weightElements = module.in_features * module.out_features;
            if (weightElements >= PackedLinear.MinWeightElements && PackedLinear.TryApply(x, weight, module.bias) is { } y) return y;
            return FewRowsLinear.Linear(x, weight, module.bias, weightElements); // F.linear; decoding: streamed
        }
        return F.linear(x.to_type(type), weight.to_type(type), module.bias?.to_type(type));
    }
}

/// <summary>Root-mean-square layer norm: <c>weight * x / sqrt(mean(x^2) + eps)</c>, computed in float32.</summary>
internal sealed class RMSNorm : nn.Module<Tensor, Tensor>
{
    private readonly Parameter weight;
    private readonly double eps;

    public RMSNorm(long dim, double eps) : base(nameof(RMSNorm))
    {
        using var initial = ones(dim); // the Parameter holds its own reference to the storage
        weight = nn.Parameter(initial);
        this.eps = eps;
        RegisterComponents();
    }

    public override Tensor forward(Tensor x) // (..., D) -> (..., D)
    {
        if (FusedRmsNorm.Supports(x, weight)) return FusedRmsNorm.Apply(x, weight, eps); // float32 on CPU: one pass
        using var scope = NewDisposeScope();
        // Half-precision inputs are normalised in float32; float32/float64 stay as they are.
        var wide = x.dtype is ScalarType.Float16 or ScalarType.BFloat16 ? x.to_type(ScalarType.Float32) : x;
        var normed = wide * rsqrt(wide.pow(2).mean(new long[] { -1 }, keepdim: true) + eps);
        return (weight * normed.to_type(x.dtype)).MoveToOuterDisposeScope();
    }
}

/// <summary>Rotary position embedding in the rotate-half convention, with linear or llama3 frequency scaling.</summary>
internal sealed class RotaryEmbedding : IDisposable
{
    private readonly double[] inverseFrequencies; // (d/2)

    public RotaryEmbedding(LlamaConfig config)
    {
        int half = config.HeadDim / 2;
        inverseFrequencies = new double[half];
        for (int i = 0; i < half; i++)
        {
            double inv = 1.0 / Math.Pow(config.RopeTheta, 2.0 * i / config.HeadDim);
            inverseFrequencies[i] = Scale(inv, config.RopeScaling);
        }
    }

    /// <summary>The per-pair rotation frequencies after scaling (d/2).</summary>
    public IReadOnlyList<double> InverseFrequencies => inverseFrequencies;

    private static double Scale(double inv, RopeScaling? scaling)
    {
        switch (scaling?.Type)
        {
            case null:
                return inv;
            case "linear":
                return inv / scaling.Factor;
            case "llama3":
                double wavelength = 2 * Math.PI / inv;
                double lowWavelength = scaling.OriginalMaxPositionEmbeddings / scaling.LowFrequencyFactor;
                double highWavelength = scaling.OriginalMaxPositionEmbeddings / scaling.HighFrequencyFactor;
                if (wavelength < highWavelength) return inv;
                if (wavelength > lowWavelength) return inv / scaling.Factor;
                double smooth = (scaling.OriginalMaxPositionEmbeddings / wavelength - scaling.LowFrequencyFactor)
                              / (scaling.HighFrequencyFactor - scaling.LowFrequencyFactor);
                return (1 - smooth) * inv / scaling.Factor + smooth * inv;
            default:
                throw new NotSupportedException($"rope_scaling type '{scaling.Type}' is not supported.");
        }
    }

    /// <summary>cos and sin for the given positions: (B, T) -> two (B, 1, T, d) tensors.</summary>
    public (Tensor Cos, Tensor Sin) CosSin(Tensor positionIds, ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        var angleType = dtype == ScalarType.Float64 ? ScalarType.Float64 : ScalarType.Float32;
        var inv = Frequencies(positionIds.device, angleType);                              // (d/2)
        var angles = positionIds.to_type(angleType).unsqueeze(-1) * inv;                   // (B, T, d/2)
        var full = cat(new[] { angles, angles }, -1).unsqueeze(1);                        // (B, 1, T, d)
        return (full.cos().to_type(dtype).MoveToOuterDisposeScope(), full.sin().to_type(dtype).MoveToOuterDisposeScope());
    }

    private readonly object frequenciesGate = new();
    private Tensor? frequencies; // the last device/dtype asked for; a model stays on one, so this is made once

    /// <summary>The frequencies on a device in a dtype, uploaded once rather than per forward pass (every decoded token).</summary>
    private Tensor Frequencies(Device device, ScalarType type)
    {
        lock (frequenciesGate)
        {
            if (frequencies is null || frequencies.dtype != type
                || frequencies.device_type != device.type || frequencies.device_index != device.index)
            {
                // A replaced tensor may still be read by a concurrent call: it is left to the finalizer, not disposed.
                // Made outside inference mode even when generation asks first: training reuses it.
                using var normal = inference_mode(false);
                frequencies = tensor(inverseFrequencies, device: device).to_type(type).DetachFromDisposeScope();
            }
            return frequencies;
        }
    }

    public void Dispose()
    {
        lock (frequenciesGate)
        {
            frequencies?.Dispose();
            frequencies = null;
        }
    }

    public static Tensor Apply(Tensor x, Tensor cos, Tensor sin) // (B, h, T, d)
    {
        long half = x.shape[^1] / 2;
        var rotated = cat(new[] { -x.narrow(-1, half, half), x.narrow(-1, 0, half) }, -1);
        return x * cos + rotated * sin;
    }
}

/// <summary>Per-layer key/value cache for incremental decoding, pre-allocated to a maximum length.</summary>
internal sealed class KeyValueCache : IDisposable
{
    private readonly Tensor[] keys;   // per layer (B, K, maxLength, d)
    private readonly Tensor[] values;

    public KeyValueCache(LlamaConfig config, long batch, long maxLength, ScalarType dtype, Device device)
    {
        MaxLength = maxLength;
        keys = new Tensor[config.NumHiddenLayers];
        values = new Tensor[config.NumHiddenLayers];
        for (int i = 0; i < keys.Length; i++)
        {
            keys[i] = zeros(new[] { batch, config.NumKeyValueHeads, maxLength, config.HeadDim }, dtype, device);
            values[i] = zeros(new[] { batch, config.NumKeyValueHeads, maxLength, config.HeadDim }, dtype, device);
        }
    }

    public long MaxLength { get; }

    /// <summary>Tokens already cached (the same for every layer once a forward pass completes).</summary>
    public long Length { get; set; }

    /// <summary>Writes the new (B, K, T, d) keys/values at <see cref="Length"/> and returns views of everything cached.</summary>
    public (Tensor Keys, Tensor Values) Append(int layer, Tensor newKeys, Tensor newValues)
    {
        long t = newKeys.shape[2];
        if (Length + t > MaxLength)
            throw new InvalidOperationException($"The key/value cache holds {MaxLength} tokens; cannot append {t} to {Length}.");
        keys[layer].narrow(2, Length, t).copy_(newKeys);
        values[layer].narrow(2, Length, t).copy_(newValues);
        return (keys[layer].narrow(2, 0, Length + t), values[layer].narrow(2, 0, Length + t));
    }

    public void Dispose()
    {
        foreach (var t in keys.Concat(values)) t.Dispose();
    }
}

/// <summary>Grouped-query self-attention with rotary embeddings and an optional key/value cache.</summary>
internal sealed class LlamaAttention : nn.Module
{
    private readonly Linear q_proj, k_proj, v_proj, o_proj;
    private readonly int heads, kvHeads, headDim, layerIndex;

    public LlamaAttention(LlamaConfig config, int layerIndex) : base(nameof(LlamaAttention))
    {
        heads = config.NumAttentionHeads;
        kvHeads = config.NumKeyValueHeads;
        headDim = config.HeadDim;
        this.layerIndex = layerIndex;
        q_proj = nn.Linear(config.HiddenSize, heads * headDim, hasBias: config.AttentionBias);
        k_proj = nn.Linear(config.HiddenSize, kvHeads * headDim, hasBias: config.AttentionBias);
        v_proj = nn.Linear(config.HiddenSize, kvHeads * headDim, hasBias: config.AttentionBias);
        o_proj = nn.Linear(heads * headDim, config.HiddenSize, hasBias: config.OutputProjectionBias);
        RegisterComponents();
    }

    /// <param name="x">(B, T, D)</param>
    /// <param name="cos">(B, 1, T, d)</param>
    /// <param name="sin">(B, 1, T, d)</param>
    /// <param name="mask">Additive (B, 1, T, S) mask, or null for plain causal attention over T = S.</param>
    /// <param name="cache">Key/value cache, or null.</param>
    /// <param name="sharedPrefix">Rows packed as [prefix | continuations]: each continuation attends [prefix | itself], or null.</param>
    /// <param name="matmulType">Type the projections multiply in; null: the weights' own.</param>
    public Tensor Forward(Tensor x, Tensor cos, Tensor sin, Tensor? mask, KeyValueCache? cache, SharedPrefixAttention? sharedPrefix,
        ScalarType? matmulType)
    {
        long b = x.shape[0], t = x.shape[1];
        var q = MixedPrecision.Linear(x, q_proj, matmulType).view(b, t, heads, headDim).transpose(1, 2);     // (B, H, T, d)
        var k = MixedPrecision.Linear(x, k_proj, matmulType).view(b, t, kvHeads, headDim).transpose(1, 2);   // (B, K, T, d)
        var v = MixedPrecision.Linear(x, v_proj, matmulType).view(b, t, kvHeads, headDim).transpose(1, 2);   // (B, K, T, d)
        // RoPE and attention run in the rotary tables' type: float32 under mixed precision too (bf16 SDPA measured
        // no faster on AVX-512 BF16 CPUs, benchmarks/README.md); the casts are no-ops without a matmul type.
        (q, k, v) = (q.to_type(cos.dtype), k.to_type(cos.dtype), v.to_type(cos.dtype));
        if (mask is null && cache is null && sharedPrefix is null && CausalAttention.Supports(q, k, v, cos))
            return MixedPrecision.Linear(CausalAttention.Apply(q, k, v, cos, sin), o_proj, matmulType); // small float32 heads, RoPE fused
        if (mask is null && cache is null && sharedPrefix is null && BlockedCausalAttention.Supports(q, k, v)
            && BlockedCausalAttention.SupportsRotation(q, cos))
            return MixedPrecision.Linear(BlockedCausalAttention.Apply(q, k, v, cos, sin), o_proj, matmulType); // wider float32 heads, RoPE fused
        q = RotaryEmbedding.Apply(q, cos, sin);
        k = RotaryEmbedding.Apply(k, cos, sin);
        if (mask is null && cache is null && sharedPrefix is null && BlockedCausalAttention.Supports(q, k, v))
            return MixedPrecision.Linear(BlockedCausalAttention.Apply(q, k, v), o_proj, matmulType); // wider float32 heads
        if (cache is not null) (k, v) = cache.Append(layerIndex, k, v);           // (B, K, S, d)
        if (kvHeads != heads && t == 1)
            return MixedPrecision.Linear(GroupedQueryAttention.OneQuery(q, k, v, mask), o_proj, matmulType); // decoding: no cache copy
        if (kvHeads != heads)
        {
            k = k.repeat_interleave(heads / kvHeads, dim: 1);                      // (B, H, S, d)
            v = v.repeat_interleave(heads / kvHeads, dim: 1);
        }
        if (sharedPrefix is not null) return MixedPrecision.Linear(sharedPrefix.Attend(q, k, v), o_proj, matmulType); // (B, T, D)
        var y = mask is null
            ? F.scaled_dot_product_attention(q, k, v, is_casual: true)
            : F.scaled_dot_product_attention(q, k, v, attn_mask: mask);          // (B, H, T, d)
        return MixedPrecision.Linear(y.transpose(1, 2).reshape(b, t, heads * headDim), o_proj, matmulType);  // (B, T, D)
    }
}

/// <summary>SwiGLU feed-forward: <c>down(silu(gate(x)) * up(x))</c>.</summary>
internal sealed class LlamaMLP : nn.Module
{
    private readonly Linear gate_proj, up_proj, down_proj;

    public LlamaMLP(LlamaConfig config) : base(nameof(LlamaMLP))
    {
        gate_proj = nn.Linear(config.HiddenSize, config.IntermediateSize, hasBias: config.MlpBias);
        up_proj = nn.Linear(config.HiddenSize, config.IntermediateSize, hasBias: config.MlpBias);
        down_proj = nn.Linear(config.IntermediateSize, config.HiddenSize, hasBias: config.MlpBias);
        RegisterComponents();
    }

    /// <summary>(B, T, D) -> (B, T, D); with a <paramref name="matmulType"/>, the product and output are in that type.</summary>
    public Tensor Forward(Tensor x, ScalarType? matmulType)
    {
        var gate = MixedPrecision.Linear(x, gate_proj, matmulType);
        var up = MixedPrecision.Linear(x, up_proj, matmulType);
        if (FusedSwiGlu.Supports(gate, up, down_proj)) return FusedSwiGlu.Apply(gate, up, down_proj); // float32 CPU: fewer saved activations
        return MixedPrecision.Linear(F.silu(gate) * up, down_proj, matmulType);
    }
}

/// <summary>One pre-norm decoder block: attention and MLP, each with a residual connection.</summary>
internal sealed class LlamaDecoderLayer : nn.Module
{
    private readonly LlamaAttention self_attn;
    private readonly LlamaMLP mlp;
    private readonly RMSNorm input_layernorm, post_attention_layernorm;

    public LlamaDecoderLayer(LlamaConfig config, int layerIndex) : base(nameof(LlamaDecoderLayer))
    {
        self_attn = new LlamaAttention(config, layerIndex);
        mlp = new LlamaMLP(config);
        input_layernorm = new RMSNorm(config.HiddenSize, config.RmsNormEps);
        post_attention_layernorm = new RMSNorm(config.HiddenSize, config.RmsNormEps);
        RegisterComponents();
    }

    /// <summary>(B, T, D) -> (B, T, D). The residual stream keeps x's type: adding a bfloat16 branch output promotes it.</summary>
    public Tensor Forward(Tensor x, Tensor cos, Tensor sin, Tensor? mask, KeyValueCache? cache, SharedPrefixAttention? sharedPrefix,
        ScalarType? matmulType)
    {
        // Autograd keeps what the backward pass needs; the layer's other temporaries are released here, not at the
        // end of the whole forward pass (lower peak training memory).
        using var scope = NewDisposeScope();
        var h = Residual(x, self_attn.Forward(input_layernorm.forward(x), cos, sin, mask, cache, sharedPrefix, matmulType));
        return Residual(h, mlp.Forward(post_attention_layernorm.forward(h), matmulType)).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// x + branch, into the branch's fresh output where the types agree: no new (B, T, D) tensor per residual (their
    /// gradients are the same, and floating-point addition commutes). A float32 stream plus a bfloat16 branch is
    /// promoted out of place.
    /// </summary>
    private static Tensor Residual(Tensor x, Tensor branch) => branch.dtype == x.dtype ? branch.add_(x) : x + branch;
}

/// <summary>The decoder stack: embeddings, layers, final norm (HF <c>model.*</c>).</summary>
internal sealed class LlamaModel : nn.Module
{
    private readonly Embedding embed_tokens;
    private readonly ModuleList<LlamaDecoderLayer> layers;
    private readonly RMSNorm norm;

    public LlamaModel(LlamaConfig config) : base(nameof(LlamaModel))
    {
        embed_tokens = nn.Embedding(config.VocabSize, config.HiddenSize);
        layers = nn.ModuleList(Enumerable.Range(0, config.NumHiddenLayers).Select(i => new LlamaDecoderLayer(config, i)).ToArray());
        norm = new RMSNorm(config.HiddenSize, config.RmsNormEps);
        RegisterComponents();
    }

    public Parameter EmbeddingWeight => embed_tokens.weight!;

    /// <summary>(B, T) ids -> (B, T, D) final hidden states.</summary>
    public Tensor Forward(Tensor inputIds, Tensor cos, Tensor sin, Tensor? mask, KeyValueCache? cache,
        SharedPrefixAttention? sharedPrefix, ScalarType? matmulType, bool recompute)
    {
        var h = embed_tokens.forward(inputIds);
        foreach (var layer in layers)
            h = recompute
                ? RecomputedLayer.Apply(layer, h, cos, sin, mask, sharedPrefix, matmulType)
                : layer.Forward(h, cos, sin, mask, cache, sharedPrefix, matmulType);
        return norm.forward(h);
    }
}

/// <summary>A causal language model: <see cref="LlamaModel"/> plus a tied or untied LM head.</summary>
internal sealed class LlamaForCausalLM : nn.Module
{
    private readonly LlamaModel model;
    private readonly Linear? lm_head;
    private readonly RotaryEmbedding rotary;

    public LlamaForCausalLM(LlamaConfig config) : base(nameof(LlamaForCausalLM))
    {
        Config = config.Validate();
        model = new LlamaModel(config);
        if (!config.TieWordEmbeddings) lm_head = nn.Linear(config.HiddenSize, config.VocabSize, hasBias: false);
        rotary = new RotaryEmbedding(config);
        RegisterComponents();
    }

    public LlamaConfig Config { get; }

    /// <summary>The LM head matrix (V, D): the token embedding when tied.</summary>
    public Tensor LmHeadWeight => lm_head?.weight ?? model.EmbeddingWeight;

    /// <summary>
    /// Final hidden states (B, T, D). <paramref name="positionIds"/> (B, T) defaults to 0..T-1 after the cache;
    /// <paramref name="mask"/> is an additive (B, 1, T, S) mask, null meaning causal over the T new tokens;
    /// <paramref name="sharedPrefix"/> (no mask, no cache) runs attention per [prefix | continuation] of packed rows.
    /// <paramref name="recomputeActivations"/> trades compute for training memory: while gradients are recorded (and
    /// no cache is used) each layer keeps only its input and recomputes the rest in the backward pass (<see cref="RecomputedLayer"/>).
    /// <paramref name="matmulType"/> (e.g. bfloat16) is the type every Linear multiplies in, null the weights' own; the
    /// hidden states returned are in the weights' type either way.
    /// </summary>
    public Tensor HiddenStates(Tensor inputIds, Tensor? positionIds = null, Tensor? mask = null, KeyValueCache? cache = null,
        SharedPrefixAttention? sharedPrefix = null, bool recomputeActivations = false, ScalarType? matmulType = null)
    {
        long b = inputIds.shape[0], t = inputIds.shape[1];
        long start = cache?.Length ?? 0;
        long attended = sharedPrefix?.VirtualLength ?? start + t; // the longest sequence any token attends over
        if (Config.SlidingWindow is int window && attended > window)
            throw new NotSupportedException($"Sequence length {attended} exceeds the model's sliding window {window}; sliding-window attention is not implemented.");
        if (cache is not null && cache.Length > 0 && mask is null)
            throw new ArgumentException("Decoding with a non-empty cache needs an explicit attention mask.", nameof(mask));
        if (sharedPrefix is not null && (mask is not null || cache is not null))
            throw new ArgumentException("Shared-prefix attention takes neither a mask nor a cache.", nameof(sharedPrefix));
        using var scope = NewDisposeScope();
        positionIds ??= arange(start, start + t, dtype: ScalarType.Int64, device: inputIds.device).unsqueeze(0).expand(b, t);
        var (cos, sin) = rotary.CosSin(positionIds, LmHeadWeight.dtype);
        bool recompute = recomputeActivations && cache is null && is_grad_enabled();
        var hidden = model.Forward(inputIds, cos, sin, mask, cache, sharedPrefix, matmulType, recompute);
        if (cache is not null) cache.Length = start + t;
        return hidden.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// (B, T, D) hidden states -> (B, T, V) logits in the hidden states' type, multiplied in
    /// <paramref name="matmulType"/> when given.
    /// </summary>
    public Tensor Logits(Tensor hidden, ScalarType? matmulType = null)
    {
        if (matmulType is not ScalarType type || type == LmHeadWeight.dtype)
            return FewRowsLinear.Linear(hidden, LmHeadWeight, null, (long)Config.VocabSize * Config.HiddenSize);
        using var scope = NewDisposeScope();
        return F.linear(hidden.to_type(type), LmHeadWeight.to_type(type)).to_type(hidden.dtype).MoveToOuterDisposeScope();
    }

    /// <summary>(B, T) ids -> (B, T, V) logits.</summary>
    public Tensor Forward(Tensor inputIds, Tensor? positionIds = null, Tensor? mask = null, KeyValueCache? cache = null)
    {
        using var scope = NewDisposeScope();
        return Logits(HiddenStates(inputIds, positionIds, mask, cache)).MoveToOuterDisposeScope();
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing) rotary.Dispose();
        base.Dispose(disposing);
    }

    /// <summary>The parameters keyed by Hugging Face name (a tied LM head appears once, as the embedding).</summary>
    public IReadOnlyList<(string Name, Parameter Parameter)> NamedWeights() =>
        named_parameters().Select(p => (p.name, p.parameter)).ToList();
}
