using Microsoft.ML.Orpo.Modeling;

namespace Microsoft.ML.Orpo.ModelFiles.Gguf;

/// <summary>
/// The <c>general.*</c> and <c>llama.*</c> keys of a GGUF file. Every supported family is written as llama.cpp's
/// <c>llama</c> architecture: Mistral and Qwen2 are the same decoder (Qwen2's q/k/v biases are optional tensors of it).
/// </summary>
internal static class GgufLlamaMetadata
{
    public const string Architecture = "llama";

    /// <summary>Refuses what llama.cpp's <c>llama</c> architecture cannot express, naming it.</summary>
    public static void Validate(LlamaConfig config)
    {
        if (config.RopeScaling is { Type: not ("linear" or "llama3") } scaling)
            throw Unsupported($"rope_scaling type '{scaling.Type}' has no equivalent in llama.cpp's llama architecture (supported: linear, llama3)");
        // llama.cpp sizes the optional q and output biases by the hidden size.
        long q = (long)config.NumAttentionHeads * config.HeadDim;
        if ((config.AttentionBias || config.OutputProjectionBias) && q != config.HiddenSize)
            throw Unsupported($"attention biases with num_attention_heads * head_dim ({q}) != hidden_size ({config.HiddenSize})");
    }

    public static void Add(GgufWriter w, LlamaConfig config, string name, GgufTensorType type)
    {
        w.AddString("general.architecture", Architecture);
        w.AddString("general.name", name);
        w.AddUInt32("general.file_type", type switch { GgufTensorType.F32 => 0u, GgufTensorType.F16 => 1u, _ => 7u });
        w.AddUInt32("general.alignment", GgufWriter.Alignment);
        const string p = Architecture + ".";
        w.AddUInt32(p + "vocab_size", (uint)config.VocabSize);
        // llama.cpp has no sliding window for this architecture: within the window, full attention is the same thing.
        int context = config.SlidingWindow is int window ? Math.Min(window, config.MaxPositionEmbeddings) : config.MaxPositionEmbeddings;
        w.AddUInt32(p + "context_length", (uint)context);
        w.AddUInt32(p + "embedding_length", (uint)config.HiddenSize);
        w.AddUInt32(p + "block_count", (uint)config.NumHiddenLayers);
        w.AddUInt32(p + "feed_forward_length", (uint)config.IntermediateSize);
        w.AddUInt32(p + "attention.head_count", (uint)config.NumAttentionHeads);
        w.AddUInt32(p + "attention.head_count_kv", (uint)config.NumKeyValueHeads);
        w.AddFloat32(p + "attention.layer_norm_rms_epsilon", (float)config.RmsNormEps);
        w.AddFloat32(p + "rope.freq_base", (float)config.RopeTheta);
        w.AddUInt32(p + "rope.dimension_count", (uint)config.HeadDim);
        if (config.HeadDim * config.NumAttentionHeads != config.HiddenSize)
        {
            w.AddUInt32(p + "attention.key_length", (uint)config.HeadDim);
            w.AddUInt32(p + "attention.value_length", (uint)config.HeadDim);
        }
        if (config.RopeScaling is { Type: "linear" } linear)
        {
            w.AddString(p + "rope.scaling.type", "linear");
            w.AddFloat32(p + "rope.scaling.factor", (float)linear.Factor);
        }
    }

    /// <summary>
    /// llama3 scaling as llama.cpp takes it: a <c>rope_freqs.weight</c> tensor by which each base frequency's period is
    /// multiplied, i.e. the unscaled over the scaled inverse frequency (null without llama3 scaling).
    /// </summary>
    public static float[]? RopeFrequencyFactors(LlamaConfig config)
    {
        if (config.RopeScaling is not { Type: "llama3" }) return null;
        using var rope = new RotaryEmbedding(config);
        var scaled = rope.InverseFrequencies;
        var factors = new float[scaled.Count];
        for (int i = 0; i < factors.Length; i++)
            factors[i] = (float)(1.0 / Math.Pow(config.RopeTheta, 2.0 * i / config.HeadDim) / scaled[i]);
        return factors;
    }

    internal static NotSupportedException Unsupported(string what) =>
        new($"SaveGguf cannot express this model: {what}. Nothing was written.");
}
