using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Microsoft.ML.Orpo.Modeling;

/// <summary>The model families this library builds; all share the LLaMA decoder shape.</summary>
public enum ModelArchitecture
{
    /// <summary><c>LlamaForCausalLM</c>.</summary>
    Llama,
    /// <summary><c>MistralForCausalLM</c>: LLaMA shape, optional sliding-window attention.</summary>
    Mistral,
    /// <summary><c>Qwen2ForCausalLM</c>: LLaMA shape with q/k/v projection biases.</summary>
    Qwen2,
}

/// <summary>RoPE frequency scaling read from <c>rope_scaling</c>.</summary>
/// <param name="Type">"linear" or "llama3"; anything else is rejected when the config is read.</param>
/// <param name="Factor">Scaling factor.</param>
/// <param name="LowFrequencyFactor">llama3 only.</param>
/// <param name="HighFrequencyFactor">llama3 only.</param>
/// <param name="OriginalMaxPositionEmbeddings">llama3 only.</param>
public sealed record RopeScaling(string Type, double Factor, double LowFrequencyFactor = 1, double HighFrequencyFactor = 4,
    int OriginalMaxPositionEmbeddings = 8192);

/// <summary>
/// The decoder hyper-parameters, read from and written to a Hugging Face <c>config.json</c>.
/// Unknown keys are kept in <see cref="Extra"/> so an exported config round-trips.
/// </summary>
public sealed record LlamaConfig
{
    /// <summary>Model family.</summary>
    public ModelArchitecture Architecture { get; init; } = ModelArchitecture.Llama;
    /// <summary><c>hidden_size</c>.</summary>
    public int HiddenSize { get; init; }
    /// <summary><c>intermediate_size</c>.</summary>
    public int IntermediateSize { get; init; }
    /// <summary><c>num_hidden_layers</c>.</summary>
    public int NumHiddenLayers { get; init; }
    /// <summary><c>num_attention_heads</c>.</summary>
    public int NumAttentionHeads { get; init; }
    /// <summary><c>num_key_value_heads</c> (defaults to the number of attention heads).</summary>
    public int NumKeyValueHeads { get; init; }
    /// <summary><c>head_dim</c> (defaults to hidden_size / num_attention_heads).</summary>
    public int HeadDim { get; init; }
    /// <summary><c>vocab_size</c>.</summary>
    public int VocabSize { get; init; }
    /// <summary><c>max_position_embeddings</c>.</summary>
    public int MaxPositionEmbeddings { get; init; } = 2048;
    /// <summary><c>rms_norm_eps</c>.</summary>
    public double RmsNormEps { get; init; } = 1e-6;
    /// <summary><c>rope_theta</c>.</summary>
    public double RopeTheta { get; init; } = 10000;
    /// <summary><c>rope_scaling</c>, or null.</summary>
    public RopeScaling? RopeScaling { get; init; }
    /// <summary><c>tie_word_embeddings</c>: the LM head shares the token embedding.</summary>
    public bool TieWordEmbeddings { get; init; }
    /// <summary>q/k/v projections carry biases (always true for Qwen2, <c>attention_bias</c> for LLaMA).</summary>
    public bool AttentionBias { get; init; }
    /// <summary>The output projection carries a bias (LLaMA <c>attention_bias</c>; never for Qwen2).</summary>
    public bool OutputProjectionBias { get; init; }
    /// <summary><c>mlp_bias</c>.</summary>
    public bool MlpBias { get; init; }
    /// <summary>Mistral/Qwen2 <c>sliding_window</c> when in use; sequences longer than it are rejected.</summary>
    public int? SlidingWindow { get; init; }
    /// <summary><c>bos_token_id</c>.</summary>
    public int? BosTokenId { get; init; }
    /// <summary><c>eos_token_id</c> (the first, when a list).</summary>
    public int? EosTokenId { get; init; }
    /// <summary>All end-of-sequence ids (<c>eos_token_id</c> may be a list).</summary>
    public IReadOnlyList<int> EosTokenIds { get; init; } = Array.Empty<int>();
    /// <summary><c>pad_token_id</c>.</summary>
    public int? PadTokenId { get; init; }
    /// <summary>Keys this library does not interpret, preserved for export.</summary>
    public JsonObject Extra { get; init; } = new();

    /// <summary>Number of query heads per key/value head.</summary>
    public int QueriesPerKeyValue => NumAttentionHeads / NumKeyValueHeads;

    /// <summary>The HF architecture name.</summary>
    public string ArchitectureName => Architecture switch
    {
        ModelArchitecture.Mistral => "MistralForCausalLM",
        ModelArchitecture.Qwen2 => "Qwen2ForCausalLM",
        _ => "LlamaForCausalLM",
    };

    /// <summary>Checks internal consistency; throws <see cref="InvalidDataException"/> naming the field.</summary>
    public LlamaConfig Validate()
    {
        static void Require(bool ok, string message)
        {
            if (!ok) throw new InvalidDataException("Invalid model config: " + message);
        }
        Require(HiddenSize > 0 && HiddenSize <= 1 << 16, $"hidden_size {HiddenSize} must be in 1..65536.");
        Require(IntermediateSize > 0 && IntermediateSize <= 1 << 18, $"intermediate_size {IntermediateSize} must be in 1..262144.");
        Require(NumHiddenLayers > 0 && NumHiddenLayers <= 1024, $"num_hidden_layers {NumHiddenLayers} must be in 1..1024.");
        Require(NumAttentionHeads > 0 && NumAttentionHeads <= 1024, $"num_attention_heads {NumAttentionHeads} must be in 1..1024.");
        Require(NumKeyValueHeads > 0 && NumAttentionHeads % NumKeyValueHeads == 0,
            $"num_key_value_heads {NumKeyValueHeads} must divide num_attention_heads {NumAttentionHeads}.");
        Require(HeadDim > 0 && HeadDim % 2 == 0 && HeadDim <= 4096, $"head_dim {HeadDim} must be even and in 2..4096.");
        Require(VocabSize > 0 && VocabSize <= 1 << 22, $"vocab_size {VocabSize} must be in 1..4194304.");
        Require(MaxPositionEmbeddings > 0 && MaxPositionEmbeddings <= 1 << 24, $"max_position_embeddings {MaxPositionEmbeddings} out of range.");
        Require(RmsNormEps > 0 && double.IsFinite(RmsNormEps), $"rms_norm_eps {RmsNormEps} must be positive.");
        Require(RopeTheta > 0 && double.IsFinite(RopeTheta), $"rope_theta {RopeTheta} must be positive.");
        foreach (int id in new[] { BosTokenId, EosTokenId, PadTokenId }.Where(i => i.HasValue).Select(i => i!.Value).Concat(EosTokenIds))
            Require(id >= 0 && id < VocabSize, $"special token id {id} is outside the vocabulary (size {VocabSize}).");
        return this;
    }

    /// <summary>Reads a Hugging Face <c>config.json</c>.</summary>
    public static LlamaConfig FromJsonFile(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"Model config '{path}' does not exist.", path);
        return FromJson(File.ReadAllText(path), path);
    }

    /// <summary>Parses a Hugging Face <c>config.json</c> text.</summary>
    /// <param name="json">The JSON text.</param>
    /// <param name="source">Where it came from, for error messages.</param>
    public static LlamaConfig FromJson(string json, string source = "config.json")
    {
        JsonObject root;
        try
        {
            // Duplicate keys are refused at parse time (JsonObject would otherwise throw an ArgumentException on first use).
            root = JsonNode.Parse(json, documentOptions: new JsonDocumentOptions { MaxDepth = 64, AllowDuplicateProperties = false }) as JsonObject
                ?? throw new InvalidDataException($"{source}: the top level is not a JSON object.");
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{source}: not valid JSON ({e.Message}).", e);
        }
        return ConfigJson.Parse(root, source);
    }

    /// <summary>Writes the config as Hugging Face <c>config.json</c> text.</summary>
    public string ToJson() => ConfigJson.Write(this).ToJsonString(new JsonSerializerOptions { WriteIndented = true });

    /// <summary>Number of parameters in the model this config describes.</summary>
    public long ParameterCount()
    {
        long d = HiddenSize, kv = (long)NumKeyValueHeads * HeadDim, q = (long)NumAttentionHeads * HeadDim;
        long attention = d * q + 2 * d * kv + q * d + (AttentionBias ? q + 2 * kv : 0) + (OutputProjectionBias ? d : 0);
        long mlp = 3 * d * IntermediateSize + (MlpBias ? 2 * IntermediateSize + d : 0);
        long layer = attention + mlp + 2 * d;
        return VocabSize * d * (TieWordEmbeddings ? 1 : 2) + NumHiddenLayers * layer + d;
    }

    internal static string Format(double value) => value.ToString("R", CultureInfo.InvariantCulture);
}
