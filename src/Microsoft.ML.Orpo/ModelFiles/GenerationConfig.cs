using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.ML.Orpo.Tokenization;
using Microsoft.ML.Orpo.Modeling;

namespace Microsoft.ML.Orpo.ModelFiles;

/// <summary>
/// A Hugging Face <c>generation_config.json</c>: the model's own stop ids and sampling defaults. Keys this library does
/// not interpret are kept in <see cref="Extra"/> so an export writes the file back as it was read.
/// </summary>
public sealed record GenerationConfig
{
    // transformers' GenerationConfig defaults, used where do_sample is true and a knob is absent.
    private const double HfDefaultTemperature = 1.0;
    private const int HfDefaultTopK = 50;
    private const double HfDefaultTopP = 1.0;

    private static readonly string[] InterpretedKeys =
        ["bos_token_id", "eos_token_id", "pad_token_id", "do_sample", "temperature", "top_k", "top_p", "max_new_tokens", "stop_strings"];

    /// <summary>Keys that change generated text with the value that leaves it unchanged; null: any value but null changes it.</summary>
    private static readonly Dictionary<string, double?> UnimplementedKnobs = new(StringComparer.Ordinal)
    {
        ["repetition_penalty"] = 1, ["num_beams"] = 1, ["no_repeat_ngram_size"] = 0, ["min_new_tokens"] = 0,
        ["min_length"] = 0, ["typical_p"] = 1, ["epsilon_cutoff"] = 0, ["eta_cutoff"] = 0, ["diversity_penalty"] = 0,
        ["encoder_repetition_penalty"] = 1, ["min_p"] = null, ["max_length"] = null, ["bad_words_ids"] = null,
        ["suppress_tokens"] = null, ["begin_suppress_tokens"] = null, ["forced_bos_token_id"] = null,
        ["forced_eos_token_id"] = null, ["sequence_bias"] = null, ["max_time"] = null,
    };

    /// <summary><c>bos_token_id</c>.</summary>
    public int? BosTokenId { get; init; }
    /// <summary><c>eos_token_id</c>, a number or a list: generation stops at any of them.</summary>
    public IReadOnlyList<int> EosTokenIds { get; init; } = Array.Empty<int>();
    /// <summary><c>pad_token_id</c>.</summary>
    public int? PadTokenId { get; init; }
    /// <summary><c>do_sample</c>; absent or false means greedy decoding, as in transformers.</summary>
    public bool? DoSample { get; init; }
    /// <summary><c>temperature</c> (applies only with <c>do_sample</c>).</summary>
    public double? Temperature { get; init; }
    /// <summary><c>top_k</c> (applies only with <c>do_sample</c>).</summary>
    public int? TopK { get; init; }
    /// <summary><c>top_p</c> (applies only with <c>do_sample</c>).</summary>
    public double? TopP { get; init; }
    /// <summary><c>max_new_tokens</c>.</summary>
    public int? MaxNewTokens { get; init; }
    /// <summary><c>stop_strings</c>, a string or a list.</summary>
    public IReadOnlyList<string> StopStrings { get; init; } = Array.Empty<string>();
    /// <summary>Every other key, written back unchanged on export.</summary>
    public JsonObject Extra { get; init; } = new();

    /// <summary>
    /// Keys of <see cref="Extra"/> that would change the generated text in transformers (e.g. <c>repetition_penalty</c>
    /// other than 1, <c>num_beams</c> above 1, <c>max_length</c>) but that this library does not apply.
    /// </summary>
    public IReadOnlyList<string> NotApplied => Extra
        .Where(p => UnimplementedKnobs.TryGetValue(p.Key, out double? neutral) && p.Value is not null
                    && !(neutral is double n && p.Value is JsonValue v && v.TryGetValue(out double d) && d == n))
        .Select(p => p.Key).Order(StringComparer.Ordinal).ToArray();

    /// <summary>What transformers derives when a checkpoint has no <c>generation_config.json</c>: the config's special ids.</summary>
    public static GenerationConfig FromModelConfig(LlamaConfig config) => new()
    {
        BosTokenId = config.BosTokenId,
        EosTokenIds = config.EosTokenIds.Count > 0 ? config.EosTokenIds : config.EosTokenId is int eos ? [eos] : [],
        PadTokenId = config.PadTokenId,
        Extra = new JsonObject { ["_from_model_config"] = true },
    };

    /// <summary>Reads <c>generation_config.json</c> text.</summary>
    /// <param name="json">The JSON text.</param>
    /// <param name="source">Where it came from, for error messages.</param>
    public static GenerationConfig FromJson(string json, string source = "generation_config.json")
    {
        JsonObject root = JsonFile.ParseObject(Encoding.UTF8.GetBytes(json), source);

        T? Value<T>(string key) where T : struct
        {
            JsonNode? node = root[key];
            if (node is null) return null;
            if (node is JsonValue v && v.TryGetValue(out T value)) return value;
            throw new InvalidDataException($"{source}: '{key}' has the wrong type or is out of range: {node.ToJsonString()}.");
        }
        IReadOnlyList<T> OneOrMany<T>(string key)
        {
            try
            {
                return root[key] switch
                {
                    null => Array.Empty<T>(),
                    JsonArray a => a.Select(n => n!.GetValue<T>()).ToArray(),
                    JsonNode n => [n.GetValue<T>()],
                };
            }
            catch (Exception e) when (e is FormatException or InvalidOperationException or NullReferenceException)
            {
                throw new InvalidDataException($"{source}: '{key}' must be a {typeof(T).Name} or a list of them.", e);
            }
        }

        var config = new GenerationConfig
        {
            BosTokenId = Value<int>("bos_token_id"),
            EosTokenIds = OneOrMany<int>("eos_token_id"),
            PadTokenId = Value<int>("pad_token_id"),
            DoSample = Value<bool>("do_sample"),
            Temperature = Value<double>("temperature"),
            TopK = Value<int>("top_k"),
            TopP = Value<double>("top_p"),
            MaxNewTokens = Value<int>("max_new_tokens"),
            StopStrings = OneOrMany<string>("stop_strings"),
            Extra = new JsonObject(root.Where(p => !InterpretedKeys.Contains(p.Key))
                .Select(p => KeyValuePair.Create(p.Key, p.Value?.DeepClone()))),
        };
        try
        {
            config.ToGenerationOptions().Validate();
        }
        catch (ArgumentException e)
        {
            throw new InvalidDataException($"{source}: {e.Message}", e);
        }
        return config;
    }

    /// <summary>Writes <c>generation_config.json</c> text.</summary>
    public string ToJson()
    {
        var root = new JsonObject();
        if (BosTokenId is int bos) root["bos_token_id"] = bos;
        if (EosTokenIds.Count == 1) root["eos_token_id"] = EosTokenIds[0];
        else if (EosTokenIds.Count > 1) root["eos_token_id"] = new JsonArray(EosTokenIds.Select(i => (JsonNode?)JsonValue.Create(i)).ToArray());
        if (PadTokenId is int pad) root["pad_token_id"] = pad;
        if (DoSample is bool sample) root["do_sample"] = sample;
        if (Temperature is double temperature) root["temperature"] = temperature;
        if (TopK is int topK) root["top_k"] = topK;
        if (TopP is double topP) root["top_p"] = topP;
        if (MaxNewTokens is int maxNew) root["max_new_tokens"] = maxNew;
        if (StopStrings.Count > 0) root["stop_strings"] = new JsonArray(StopStrings.Select(s => (JsonNode?)JsonValue.Create(s)).ToArray());
        foreach (var (key, value) in Extra) root[key] = value?.DeepClone();
        return root.ToJsonString(new JsonSerializerOptions { WriteIndented = true });
    }

    /// <summary>
    /// The sampling defaults as <see cref="GenerationOptions"/>: greedy unless <c>do_sample</c> is true, then
    /// temperature, top-k and top-p with transformers' defaults (1.0, 50, 1.0) for absent ones; <c>max_new_tokens</c>
    /// and <c>stop_strings</c> when given.
    /// </summary>
    public GenerationOptions ToGenerationOptions()
    {
        var options = new GenerationOptions { StopSequences = StopStrings.ToArray() };
        if (MaxNewTokens is int maxNew) options.MaxNewTokens = maxNew;
        if (DoSample == true)
        {
            options.Temperature = Temperature ?? HfDefaultTemperature;
            options.TopK = TopK ?? HfDefaultTopK;
            options.TopP = TopP ?? HfDefaultTopP;
        }
        return options;
    }

    /// <summary>Throws <see cref="InvalidDataException"/> when a special id is outside the model's vocabulary.</summary>
    internal GenerationConfig ValidateFor(LlamaConfig config, string source)
    {
        foreach (int id in EosTokenIds.Append(BosTokenId ?? 0).Append(PadTokenId ?? 0))
            if (id < 0 || id >= config.VocabSize)
                throw new InvalidDataException($"{source}: special token id {id} is outside the vocabulary (size {config.VocabSize}).");
        return this;
    }
}
