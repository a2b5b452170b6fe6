using System.Text.Json.Nodes;

namespace Microsoft.ML.Orpo.Modeling;

/// <summary>Maps Hugging Face <c>config.json</c> keys to <see cref="LlamaConfig"/> and back.</summary>
internal static class ConfigJson
{
    private static readonly HashSet<string> KnownKeys = new(StringComparer.Ordinal)
    {
        "architectures", "model_type", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
        "num_key_value_heads", "head_dim", "vocab_size", "max_position_embeddings", "rms_norm_eps", "rope_theta",
        "rope_scaling", "tie_word_embeddings", "attention_bias", "mlp_bias", "sliding_window", "use_sliding_window",
        "bos_token_id", "eos_token_id", "pad_token_id", "hidden_act", "torch_dtype", "max_window_layers",
    };

    /// <summary>
    /// Keys of other LLaMA-family configs that change the forward pass or training, with the value that leaves the
    /// math as this library computes it (null: only absent or null does). Any other value is refused by name.
    /// </summary>
    private static readonly Dictionary<string, JsonNode?> UnimplementedMath = new(StringComparer.Ordinal)
    {
        ["attention_dropout"] = 0.0, ["hidden_dropout"] = 0.0, ["resid_pdrop"] = 0.0, ["embd_pdrop"] = 0.0,
        ["partial_rotary_factor"] = 1.0, ["rope_interleaved"] = false, ["use_mrope"] = false, ["use_qk_norm"] = false,
        ["qk_layernorm"] = false, ["embedding_multiplier"] = 1.0, ["residual_multiplier"] = 1.0, ["logits_scaling"] = 1.0,
        ["attention_multiplier"] = null, ["final_logit_softcapping"] = null, ["attn_logit_softcapping"] = null,
        ["layer_types"] = null, ["no_rope_layers"] = null, ["sliding_window_pattern"] = null,
    };

    public static LlamaConfig Parse(JsonObject root, string source)
    {
        foreach (var (key, neutral) in UnimplementedMath)
            if (root[key] is JsonNode value && !(neutral is not null && NumericallyEqual(value, neutral)))
                throw new NotSupportedException(
                    $"{source}: '{key}' = {value.ToJsonString()} changes the model's computation and is not implemented " +
                    $"(supported: {neutral?.ToJsonString() ?? "absent or null"}). Refusing to load rather than ignore it.");
        string Where(string key) => $"{source}: '{key}'";

        int Int(string key, int? fallback = null)
        {
            JsonNode? node = root[key];
            if (node is null)
                return fallback ?? throw new InvalidDataException($"{Where(key)} is required but missing.");
            try { return node.GetValue<int>(); }
            catch (Exception e) when (e is FormatException or InvalidOperationException)
            {
                throw new InvalidDataException($"{Where(key)} must be an integer, found {node.ToJsonString()}.", e);
            }
        }
        double Double(string key, double fallback)
        {
            JsonNode? node = root[key];
            if (node is null) return fallback;
            try { return node.GetValue<double>(); }
            catch (Exception e) when (e is FormatException or InvalidOperationException)
            {
                throw new InvalidDataException($"{Where(key)} must be a number, found {node.ToJsonString()}.", e);
            }
        }
        bool Bool(string key, bool fallback)
        {
            JsonNode? node = root[key];
            if (node is null) return fallback;
            try { return node.GetValue<bool>(); }
            catch (Exception e) when (e is FormatException or InvalidOperationException)
            {
                throw new InvalidDataException($"{Where(key)} must be true or false, found {node.ToJsonString()}.", e);
            }
        }
        int? OptionalInt(string key) => root[key] is null ? null : Int(key);

        ModelArchitecture architecture = ParseArchitecture(root, source);
        string activation = Text(root["hidden_act"], "hidden_act", source) ?? "silu";
        if (activation != "silu")
            throw new NotSupportedException($"{Where("hidden_act")} is '{activation}'; only 'silu' (SwiGLU) is supported.");

        int hidden = Int("hidden_size");
        int heads = Int("num_attention_heads");
        bool qwen = architecture == ModelArchitecture.Qwen2;
        bool attentionBias = Bool("attention_bias", false);
        IReadOnlyList<int> eosIds = ParseEosIds(root["eos_token_id"], source);
        int? slidingWindow = null;
        if (architecture != ModelArchitecture.Llama && root["sliding_window"] is not null
            && Bool("use_sliding_window", architecture == ModelArchitecture.Mistral))
            slidingWindow = Int("sliding_window");

        var extra = new JsonObject();
        foreach (var (key, value) in root)
            if (!KnownKeys.Contains(key)) extra[key] = value?.DeepClone();

        return new LlamaConfig
        {
            Architecture = architecture,
            HiddenSize = hidden,
            IntermediateSize = Int("intermediate_size"),
            NumHiddenLayers = Int("num_hidden_layers"),
            NumAttentionHeads = heads,
            NumKeyValueHeads = Int("num_key_value_heads", heads),
            HeadDim = root["head_dim"] is null ? (heads > 0 ? hidden / heads : 0) : Int("head_dim"),
            VocabSize = Int("vocab_size"),
            MaxPositionEmbeddings = Int("max_position_embeddings", 2048),
            RmsNormEps = Double("rms_norm_eps", 1e-6),
            RopeTheta = Double("rope_theta", 10000),
            RopeScaling = ParseRopeScaling(root["rope_scaling"], source),
            TieWordEmbeddings = Bool("tie_word_embeddings", false),
            AttentionBias = qwen || attentionBias,
            OutputProjectionBias = !qwen && attentionBias,
            MlpBias = Bool("mlp_bias", false),
            SlidingWindow = slidingWindow,
            BosTokenId = OptionalInt("bos_token_id"),
            EosTokenId = eosIds.Count > 0 ? eosIds[0] : null,
            EosTokenIds = eosIds,
            PadTokenId = OptionalInt("pad_token_id"),
            Extra = extra,
        }.Validate();
    }

    public static JsonObject Write(LlamaConfig config)
    {
        var root = new JsonObject
        {
            ["architectures"] = new JsonArray(config.ArchitectureName),
            ["model_type"] = config.Architecture.ToString().ToLowerInvariant(),
            ["hidden_size"] = config.HiddenSize,
            ["intermediate_size"] = config.IntermediateSize,
            ["num_hidden_layers"] = config.NumHiddenLayers,
            ["num_attention_heads"] = config.NumAttentionHeads,
            ["num_key_value_heads"] = config.NumKeyValueHeads,
            ["head_dim"] = config.HeadDim,
            ["vocab_size"] = config.VocabSize,
            ["max_position_embeddings"] = config.MaxPositionEmbeddings,
            ["rms_norm_eps"] = config.RmsNormEps,
            ["rope_theta"] = config.RopeTheta,
            ["tie_word_embeddings"] = config.TieWordEmbeddings,
            ["hidden_act"] = "silu",
            ["mlp_bias"] = config.MlpBias,
            ["torch_dtype"] = "float32",
        };
        if (config.Architecture != ModelArchitecture.Qwen2) root["attention_bias"] = config.AttentionBias;
        if (config.RopeScaling is { } s)
        {
            var scaling = new JsonObject { ["rope_type"] = s.Type, ["type"] = s.Type, ["factor"] = s.Factor };
            if (s.Type == "llama3")
            {
                scaling["low_freq_factor"] = s.LowFrequencyFactor;
                scaling["high_freq_factor"] = s.HighFrequencyFactor;
                scaling["original_max_position_embeddings"] = s.OriginalMaxPositionEmbeddings;
            }
            root["rope_scaling"] = scaling;
        }
        else root["rope_scaling"] = null;
        if (config.SlidingWindow is int window)
        {
            root["sliding_window"] = window;
            root["use_sliding_window"] = true;
        }
        else if (config.Architecture != ModelArchitecture.Llama)
        {
            root["sliding_window"] = null;
            root["use_sliding_window"] = false;
        }
        root["bos_token_id"] = config.BosTokenId;
        root["eos_token_id"] = config.EosTokenIds.Count > 1
            ? new JsonArray(config.EosTokenIds.Select(i => (JsonNode?)JsonValue.Create(i)).ToArray())
            : config.EosTokenId is int eos ? JsonValue.Create(eos) : null;
        root["pad_token_id"] = config.PadTokenId;
        foreach (var (key, value) in config.Extra)
            root[key] = value?.DeepClone();
        return root;
    }

    private static bool NumericallyEqual(JsonNode value, JsonNode neutral) =>
        value is JsonValue v && neutral is JsonValue n
        && (v.TryGetValue(out double x) && n.TryGetValue(out double y) ? x == y : JsonNode.DeepEquals(v, n));

    private static ModelArchitecture ParseArchitecture(JsonObject root, string source)
    {
        string? name = Text((root["architectures"] as JsonArray)?.FirstOrDefault(), "architectures[0]", source);
        string? modelType = Text(root["model_type"], "model_type", source);
        return (name, modelType) switch
        {
            ("LlamaForCausalLM", _) or (null, "llama") => ModelArchitecture.Llama,
            ("MistralForCausalLM", _) or (null, "mistral") => ModelArchitecture.Mistral,
            ("Qwen2ForCausalLM", _) or (null, "qwen2") => ModelArchitecture.Qwen2,
            _ => throw new NotSupportedException(
                $"{source}: architecture '{name ?? modelType ?? "(none)"}' is not supported; expected LlamaForCausalLM, MistralForCausalLM or Qwen2ForCausalLM."),
        };
    }

    private static RopeScaling? ParseRopeScaling(JsonNode? node, string source)
    {
        if (node is null) return null;
        if (node is not JsonObject o) throw new InvalidDataException($"{source}: 'rope_scaling' must be an object or null.");
        string type = Text(o["rope_type"] ?? o["type"], "rope_scaling.rope_type", source)
            ?? throw new InvalidDataException($"{source}: 'rope_scaling' has no 'rope_type'.");
        double factor = Number<double>(o["factor"], "rope_scaling.factor", source) ?? 1.0;
        if (!(factor >= 1.0) || !double.IsFinite(factor))
            throw new InvalidDataException($"{source}: 'rope_scaling.factor' must be >= 1, found {factor}.");
        return type switch
        {
            "default" => null,
            "linear" => new RopeScaling("linear", factor),
            "llama3" => new RopeScaling("llama3", factor,
                Number<double>(o["low_freq_factor"], "rope_scaling.low_freq_factor", source) ?? 1.0,
                Number<double>(o["high_freq_factor"], "rope_scaling.high_freq_factor", source) ?? 4.0,
                Number<int>(o["original_max_position_embeddings"], "rope_scaling.original_max_position_embeddings", source) ?? 8192),
            _ => throw new NotSupportedException(
                $"{source}: rope_scaling type '{type}' is not supported (supported: linear, llama3). Refusing to load rather than ignore it."),
        };
    }

    /// <summary>An optional JSON string; a value of another JSON type is an error naming the key.</summary>
    private static string? Text(JsonNode? node, string key, string source)
    {
        if (node is null) return null;
        if (node is JsonValue v && v.TryGetValue(out string? value)) return value;
        throw new InvalidDataException($"{source}: '{key}' has the wrong type: {node.ToJsonString()}.");
    }

    /// <summary>An optional JSON number that fits <typeparamref name="T"/>; anything else is an error naming the key.</summary>
    private static T? Number<T>(JsonNode? node, string key, string source) where T : struct
    {
        if (node is null) return null;
        if (node is JsonValue v && v.TryGetValue(out T value)) return value;
        throw new InvalidDataException($"{source}: '{key}' has the wrong type or is out of range: {node.ToJsonString()}.");
    }

    private static IReadOnlyList<int> ParseEosIds(JsonNode? node, string source)
    {
        try
        {
            return node switch
            {
                null => Array.Empty<int>(),
                JsonArray a => a.Select(n => n!.GetValue<int>()).ToArray(),
                _ => new[] { node.GetValue<int>() },
            };
        }
        catch (Exception e) when (e is FormatException or InvalidOperationException or NullReferenceException)
        {
            throw new InvalidDataException($"{source}: 'eos_token_id' must be an integer or a list of integers.", e);
        }
    }
}
