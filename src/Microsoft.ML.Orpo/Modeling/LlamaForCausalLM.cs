using Microsoft.ML.Orpo.Ops;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Modeling;

// A LLaMA-family decoder (LLaMA, Mistral, Qwen2) in dependency order. Field names equal the Hugging Face
// state-dict keys (model.layers.0.self_attn.q_proj.weight ...), so checkpoints load strictly with no mapping table.
// Shapes: B batch, T new tokens, S attended tokens (cache + new), D hidden, H query heads, K key/value heads,
// d head dim, I MLP width, V vocabulary.
// Every tensor operation beyond views and residual adds is an Op (Ops/): its reference implementation is the
// definition, and the CPU kernels behind it compute the same function.
// Mixed precision: every method that runs the network takes an optional matmul type (e.g. bfloat16). Given one, each
// Linear multiplies its input and weight cast to it, like PyTorch's autocast; RMSNorm, RoPE, attention and the
// residual stream stay in the weights' type (float32), and so do the weights themselves.
#pragma warning disable IDE1006 // field names are the HF state-dict keys

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

    public override Tensor forward(Tensor x) => Op.RmsNorm(x, weight, eps); // (..., D) -> (..., D)
}

/// <summary>Rotary position embedding in the rotate-half convention, with linear or llama3 frequency scaling.</summary>
internal sealed class RotaryEmbedding : IDisposable
{
    private readonly double[] inverseFrequencies; // (d/2)
    private readonly ConstantTable frequencies;

    public RotaryEmbedding(LlamaConfig config)
    {
        int half = config.HeadDim / 2;
        inverseFrequencies = new double[half];
        for (int i = 0; i < half; i++)
        {
            double inv = 1.0 / Math.Pow(config.RopeTheta, 2.0 * i / config.HeadDim);
            inverseFrequencies[i] = Scale(inv, config.RopeScaling);
        }
        frequencies = new ConstantTable(inverseFrequencies);
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
        var inv = frequencies.On(positionIds.device, angleType);                          // (d/2)
        var angles = positionIds.to_type(angleType).unsqueeze(-1) * inv;                   // (B, T, d/2)
        var full = cat(new[] { angles, angles }, -1).unsqueeze(1);                        // (B, 1, T, d)
        return (full.cos().to_type(dtype).MoveToOuterDisposeScope(), full.sin().to_type(dtype).MoveToOuterDisposeScope());
    }

    public void Dispose() => frequencies.Dispose();
}

/// <summary>A module whose Linear projections can carry LoRA adapters (by their HF names, e.g. <c>q_proj</c>).</summary>
internal interface IAdaptable
{
    IEnumerable<(string Name, Linear Module)> Projections();
    void Adapt(string name, LoraAdapter? adapter);
}

/// <summary>The LoRA adapters of one module's projections, by projection name (none by default).</summary>
internal sealed class AdapterSlots(IEnumerable<string> names)
{
    private readonly Dictionary<string, LoraAdapter?> slots = names.ToDictionary(n => n, _ => (LoraAdapter?)null, StringComparer.Ordinal);

    public LoraAdapter? this[string name] => slots[name];

    public void Set(string name, LoraAdapter? adapter)
    {
        if (!slots.ContainsKey(name)) throw new ArgumentException($"No projection '{name}' here.", nameof(name));
        slots[name] = adapter;
    }
}

/// <summary>Grouped-query self-attention with rotary embeddings.</summary>
internal sealed class LlamaAttention : nn.Module, IAdaptable
{
    private readonly Linear q_proj, k_proj, v_proj, o_proj;
    private readonly AttentionHeads heads;
    private readonly int layerIndex;
    private readonly AdapterSlots lora = new(new[] { nameof(q_proj), nameof(k_proj), nameof(v_proj), nameof(o_proj) });

    /// <summary>The four projections stored as <paramref name="projections"/> (null: float32).</summary>
    public LlamaAttention(LlamaConfig config, int layerIndex, ScalarType? projections) : base(nameof(LlamaAttention))
    {
        heads = new AttentionHeads(config.NumAttentionHeads, config.NumKeyValueHeads, config.HeadDim);
        this.layerIndex = layerIndex;
        q_proj = nn.Linear(config.HiddenSize, heads.Heads * heads.HeadDim, hasBias: config.AttentionBias, dtype: projections);
        k_proj = nn.Linear(config.HiddenSize, heads.KvHeads * heads.HeadDim, hasBias: config.AttentionBias, dtype: projections);
        v_proj = nn.Linear(config.HiddenSize, heads.KvHeads * heads.HeadDim, hasBias: config.AttentionBias, dtype: projections);
        o_proj = nn.Linear(heads.Heads * heads.HeadDim, config.HiddenSize, hasBias: config.OutputProjectionBias, dtype: projections);
        RegisterComponents();
    }

    /// <param name="x">(B, T, D)</param>
    /// <param name="cos">(B, 1, T, d)</param>
    /// <param name="sin">(B, 1, T, d)</param>
    /// <param name="layout">How the T new tokens attend: causally, through a mask, after a cache, or sharing a prefix.</param>
    /// <param name="matmulType">Type the projections multiply in; null: the weights' own.</param>
    public Tensor Forward(Tensor x, Tensor cos, Tensor sin, AttentionLayout layout, ScalarType? matmulType)
    {
        long b = layout.Batch, t = layout.Length;
        var q = Op.Linear(x, q_proj, matmulType, lora[nameof(q_proj)]).view(b, t, heads.Heads, heads.HeadDim).transpose(1, 2);    // (B, H, T, d)
        var k = Op.Linear(x, k_proj, matmulType, lora[nameof(k_proj)]).view(b, t, heads.KvHeads, heads.HeadDim).transpose(1, 2);  // (B, K, T, d)
        var v = Op.Linear(x, v_proj, matmulType, lora[nameof(v_proj)]).view(b, t, heads.KvHeads, heads.HeadDim).transpose(1, 2);  // (B, K, T, d)
        var y = Op.Attention(q, k, v, cos, sin, heads, layout, layerIndex);                                                        // (B, T, H * d)
        return Op.Linear(y, o_proj, matmulType, lora[nameof(o_proj)]);                                                             // (B, T, D)
    }

    public IEnumerable<(string Name, Linear Module)> Projections() =>
        new[] { (nameof(q_proj), q_proj), (nameof(k_proj), k_proj), (nameof(v_proj), v_proj), (nameof(o_proj), o_proj) };

    public void Adapt(string name, LoraAdapter? adapter) => lora.Set(name, adapter);
}

/// <summary>SwiGLU feed-forward: <c>down(silu(gate(x)) * up(x))</c>.</summary>
internal sealed class LlamaMLP : nn.Module, IAdaptable
{
    private readonly Linear gate_proj, up_proj, down_proj;
    private readonly AdapterSlots lora = new(new[] { nameof(gate_proj), nameof(up_proj), nameof(down_proj) });

    /// <summary>The three projections stored as <paramref name="projections"/> (null: float32).</summary>
    public LlamaMLP(LlamaConfig config, ScalarType? projections) : base(nameof(LlamaMLP))
    {
        gate_proj = nn.Linear(config.HiddenSize, config.IntermediateSize, hasBias: config.MlpBias, dtype: projections);
        up_proj = nn.Linear(config.HiddenSize, config.IntermediateSize, hasBias: config.MlpBias, dtype: projections);
        down_proj = nn.Linear(config.IntermediateSize, config.HiddenSize, hasBias: config.MlpBias, dtype: projections);
        RegisterComponents();
    }

    /// <summary>(B, T, D) -> (B, T, D); with a <paramref name="matmulType"/>, the product and output are in that type.</summary>
    public Tensor Forward(Tensor x, ScalarType? matmulType)
    {
        var gate = Op.Linear(x, gate_proj, matmulType, lora[nameof(gate_proj)]);  // (B, T, I)
        var up = Op.Linear(x, up_proj, matmulType, lora[nameof(up_proj)]);        // (B, T, I)
        return Op.SwiGlu(gate, up, down_proj, matmulType, lora[nameof(down_proj)]);
    }

    public IEnumerable<(string Name, Linear Module)> Projections() =>
        new[] { (nameof(gate_proj), gate_proj), (nameof(up_proj), up_proj), (nameof(down_proj), down_proj) };

    public void Adapt(string name, LoraAdapter? adapter) => lora.Set(name, adapter);
}

/// <summary>One pre-norm decoder block: attention and MLP, each with a residual connection.</summary>
internal sealed class LlamaDecoderLayer : nn.Module
{
    private readonly LlamaAttention self_attn;
    private readonly LlamaMLP mlp;
    private readonly RMSNorm input_layernorm, post_attention_layernorm;

    public LlamaDecoderLayer(LlamaConfig config, int layerIndex, ScalarType? projections) : base(nameof(LlamaDecoderLayer))
    {
        self_attn = new LlamaAttention(config, layerIndex, projections);
        mlp = new LlamaMLP(config, projections);
        input_layernorm = new RMSNorm(config.HiddenSize, config.RmsNormEps);
        post_attention_layernorm = new RMSNorm(config.HiddenSize, config.RmsNormEps);
        RegisterComponents();
    }

    /// <summary>The attention and MLP blocks with their HF names.</summary>
    public IEnumerable<(string Name, IAdaptable Block)> Blocks() => new (string, IAdaptable)[] { (nameof(self_attn), self_attn), (nameof(mlp), mlp) };

    /// <summary>(B, T, D) -> (B, T, D). The residual stream keeps x's type: adding a bfloat16 branch output promotes it.</summary>
    public Tensor Forward(Tensor x, Tensor cos, Tensor sin, AttentionLayout layout, ScalarType? matmulType)
    {
        // Autograd keeps what the backward pass needs; the layer's other temporaries are released here, not at the
        // end of the whole forward pass (lower peak training memory).
        using var scope = NewDisposeScope();
        var h = Residual(x, self_attn.Forward(input_layernorm.forward(x), cos, sin, layout, matmulType));
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

    public LlamaModel(LlamaConfig config, ScalarType? projections) : base(nameof(LlamaModel))
    {
        embed_tokens = nn.Embedding(config.VocabSize, config.HiddenSize);
        layers = nn.ModuleList(Enumerable.Range(0, config.NumHiddenLayers).Select(i => new LlamaDecoderLayer(config, i, projections)).ToArray());
        norm = new RMSNorm(config.HiddenSize, config.RmsNormEps);
        RegisterComponents();
    }

    public Parameter EmbeddingWeight => embed_tokens.weight!;

    public IList<LlamaDecoderLayer> Layers => layers;

    /// <summary>(B, T) ids -> (B, T, D) final hidden states.</summary>
    public Tensor Forward(Tensor inputIds, Tensor cos, Tensor sin, AttentionLayout layout, ScalarType? matmulType, bool recompute)
    {
        var h = embed_tokens.forward(inputIds);
        // A recomputed layer joins the graph only through its input: under LoRA the frozen embedding gives states
        // without one, so they must require a gradient for the adapters inside to get theirs (PEFT's enable_input_require_grads).
        if (recompute && is_grad_enabled() && !h.requires_grad) h.requires_grad_(true);
        foreach (var layer in layers)
            h = recompute ? RecomputedLayer.Apply(layer, h, cos, sin, layout, matmulType) : layer.Forward(h, cos, sin, layout, matmulType);
        return norm.forward(h);
    }
}

/// <summary>A causal language model: <see cref="LlamaModel"/> plus a tied or untied LM head.</summary>
internal sealed class LlamaForCausalLM : nn.Module
{
    private readonly LlamaModel model;
    private readonly Linear? lm_head;
    private readonly RotaryEmbedding rotary;

    /// <param name="config">The architecture.</param>
    /// <param name="projections">
    /// The storage type of the seven projections of every layer (null: float32, like every other weight). A LoRA run
    /// with a bfloat16 base (<see cref="LoraOptions.BFloat16Base"/>) builds them in bfloat16, so that loading a model
    /// never holds them in float32.
    /// </param>
    public LlamaForCausalLM(LlamaConfig config, ScalarType? projections = null) : base(nameof(LlamaForCausalLM))
    {
        Config = config.Validate();
        model = new LlamaModel(config, projections);
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
        var hidden = model.Forward(inputIds, cos, sin, new AttentionLayout(b, t, mask, cache, sharedPrefix), matmulType, recompute);
        if (cache is not null) cache.Length = start + t;
        return hidden.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// (B, T, D) hidden states -> (B, T, V) logits in the hidden states' type, multiplied in
    /// <paramref name="matmulType"/> when given.
    /// </summary>
    public Tensor Logits(Tensor hidden, ScalarType? matmulType = null) => Op.Logits(hidden, LmHeadWeight, LmHeadElements, matmulType);

    /// <summary>V x D, the LM head's size, known without a native call.</summary>
    public long LmHeadElements => (long)Config.VocabSize * Config.HiddenSize;

    /// <summary>An empty key/value cache for <paramref name="batch"/> rows of up to <paramref name="maxLength"/> tokens.</summary>
    public KeyValueCache CreateCache(long batch, long maxLength, ScalarType dtype, Device device) =>
        new(Config.NumHiddenLayers, Config.NumKeyValueHeads, Config.HeadDim, batch, maxLength, dtype, device);

    /// <summary>(B, T) ids -> (B, T, V) logits.</summary>
    public Tensor Forward(Tensor inputIds, Tensor? positionIds = null, Tensor? mask = null, KeyValueCache? cache = null)
    {
        using var scope = NewDisposeScope();
        return Logits(HiddenStates(inputIds, positionIds, mask, cache)).MoveToOuterDisposeScope();
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            rotary.Dispose();
            Adapters?.Dispose();
        }
        base.Dispose(disposing);
    }

    /// <summary>The parameters keyed by Hugging Face name (a tied LM head appears once, as the embedding).</summary>
    public IReadOnlyList<(string Name, Parameter Parameter)> NamedWeights() =>
        named_parameters().Select(p => (p.name, p.parameter)).ToList();

    /// <summary>
    /// Every decoder projection an adapter can target, by Hugging Face module path
    /// (<c>model.layers.0.self_attn.q_proj</c>), with its projection name and the block that holds it.
    /// </summary>
    public IEnumerable<(string Path, string Name, Linear Module, IAdaptable Block)> Projections()
    {
        for (int i = 0; i < model.Layers.Count; i++)
            foreach (var (blockName, block) in model.Layers[i].Blocks())
                foreach (var (name, module) in block.Projections())
                    yield return ($"model.layers.{i}.{blockName}.{name}", name, module, block);
    }

    /// <summary>The LoRA adapters in use (<see cref="LoraAdapters.Attach"/>), or null: the plain model.</summary>
    public LoraAdapters? Adapters { get; internal set; }

    /// <summary>What training updates: the adapters' A and B when adapters are attached, otherwise every weight.</summary>
    public IReadOnlyList<(string Name, Parameter Parameter)> TrainableWeights() => Adapters?.NamedParameters() ?? NamedWeights();
}
