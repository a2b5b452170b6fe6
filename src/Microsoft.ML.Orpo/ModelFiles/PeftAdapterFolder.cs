using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Microsoft.ML.Orpo.Modeling;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.ModelFiles;

/// <summary>
/// A PEFT LoRA adapter folder: <c>adapter_config.json</c> and <c>adapter_model.safetensors</c> with PEFT's keys
/// (<c>base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight</c>), as <c>PeftModel.from_pretrained</c> reads
/// and <c>save_pretrained</c> writes them, with DoRA's magnitude vectors (<c>...q_proj.lora_magnitude_vector</c>) when
/// <c>use_dora</c> is set. Reading is strict: a PEFT option this library does not implement (biases, per-layer ranks,
/// extra trained modules, initialisations that change the base) is an error naming it, never silently ignored.
/// </summary>
internal static class PeftAdapterFolder
{
    public const string ConfigFileName = "adapter_config.json";
    public const string WeightsFileName = "adapter_model.safetensors";
    private const int MaxConfigBytes = 1 << 20;

    /// <summary>An adapter as read: its config, its tensors by PEFT key, and the SHA-256 of its weights file.</summary>
    public sealed record Contents(LoraConfig Config, Dictionary<string, Tensor> Tensors, string WeightsSha256) : IDisposable
    {
        public void Dispose()
        {
            foreach (var t in Tensors.Values) t.Dispose();
        }
    }

    /// <summary>Writes the folder (created if needed; each file atomically).</summary>
    /// <param name="folder">The adapter folder.</param>
    /// <param name="adapters">The adapters to write.</param>
    /// <param name="baseModel">The <c>base_model_name_or_path</c> to record (the base model's path or hub id), or null.</param>
    public static void Save(string folder, LoraAdapters adapters, string? baseModel)
    {
        Directory.CreateDirectory(folder);
        var config = adapters.Config;
        var json = new JsonObject
        {
            ["alpha_pattern"] = new JsonObject(),
            ["base_model_name_or_path"] = baseModel,
            ["bias"] = "none",
            ["fan_in_fan_out"] = false,
            ["inference_mode"] = true,
            ["init_lora_weights"] = true,
            ["layers_to_transform"] = null,
            // PEFT writes an integer alpha as an integer; a fractional one stays a float.
            ["lora_alpha"] = config.Alpha == Math.Floor(config.Alpha) && Math.Abs(config.Alpha) < 1e15 ? JsonValue.Create((long)config.Alpha) : JsonValue.Create(config.Alpha),
            ["lora_dropout"] = config.Dropout,
            ["modules_to_save"] = null,
            ["peft_type"] = "LORA",
            ["r"] = config.Rank,
            ["rank_pattern"] = new JsonObject(),
            ["revision"] = null,
            ["target_modules"] = new JsonArray(config.TargetModules.Select(t => (JsonNode)JsonValue.Create(t)!).ToArray()),
            ["task_type"] = "CAUSAL_LM",
            ["use_dora"] = config.UseDora,
            ["use_rslora"] = config.UseRsLora,
        };
        var tensors = adapters.Export();
        try
        {
            SafeTensorsWriter.Write(Path.Combine(folder, WeightsFileName), tensors);
        }
        finally
        {
            foreach (var t in tensors.Values) t.Dispose();
        }
        AtomicFile.WriteAllBytes(Path.Combine(folder, ConfigFileName),
            Encoding.UTF8.GetBytes(json.ToJsonString(new JsonSerializerOptions { WriteIndented = true })));
    }

    /// <summary>Reads the folder; <paramref name="projections"/> are the model's projection paths (for target resolution).</summary>
    public static Contents Read(string folder, IReadOnlyList<(string Path, string Name)> projections)
    {
        if (string.IsNullOrWhiteSpace(folder)) throw new ArgumentException("An adapter folder path is required.", nameof(folder));
        if (!Directory.Exists(folder))
            throw new DirectoryNotFoundException($"Adapter folder '{folder}' does not exist (expected {ConfigFileName} and {WeightsFileName}).");
        string configPath = Path.Combine(folder, ConfigFileName);
        string weightsPath = Path.Combine(folder, WeightsFileName);
        if (!File.Exists(configPath)) throw new FileNotFoundException($"Adapter folder '{folder}' has no {ConfigFileName}.", configPath);
        if (!File.Exists(weightsPath))
            throw new FileNotFoundException(File.Exists(Path.Combine(folder, "adapter_model.bin"))
                ? $"Adapter folder '{folder}' holds adapter_model.bin (a pickle): only {WeightsFileName} is read, since a pickle can execute code. Convert it with PEFT's save_pretrained(safe_serialization=True)."
                : $"Adapter folder '{folder}' has no {WeightsFileName}.", weightsPath);
        if (new FileInfo(configPath).Length > MaxConfigBytes) throw new InvalidDataException($"{configPath}: larger than {MaxConfigBytes} bytes.");
        var config = ParseConfig(File.ReadAllBytes(configPath), configPath, projections);
        // Read once: hashed (for the checkpoint fingerprint) and parsed from the same bytes.
        var bytes = File.ReadAllBytes(weightsPath);
        return new Contents(config, SafeTensorsReader.Read(bytes, weightsPath), Convert.ToHexString(SHA256.HashData(bytes)));
    }

    /// <summary>Reads the folder for <paramref name="network"/> (its projections resolve the target modules).</summary>
    public static Contents Read(string folder, LlamaForCausalLM network) =>
        Read(folder, network.Projections().Select(p => (p.Path, p.Name)).ToList());

    /// <summary>adapter_config.json -> the LoRA config, with every unsupported option named in the error.</summary>
    public static LoraConfig ParseConfig(byte[] bytes, string source, IReadOnlyList<(string Path, string Name)> projections)
    {
        JsonObject root;
        try
        {
            root = JsonNode.Parse(bytes, documentOptions: new JsonDocumentOptions { MaxDepth = 16 }) as JsonObject
                ?? throw new InvalidDataException($"{source}: not a JSON object.");
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{source}: not valid JSON ({e.Message}).", e);
        }
        string? peftType = String(root, "peft_type", source);
        if (peftType != "LORA") throw new InvalidDataException($"{source}: peft_type is '{peftType ?? "missing"}'; only LORA adapters are supported.");
        string? task = String(root, "task_type", source);
        if (task is not null && task != "CAUSAL_LM") throw new InvalidDataException($"{source}: task_type is '{task}'; only CAUSAL_LM adapters apply to a causal language model.");
        int rank = (int)Number(root, "r", source, required: true)!.Value;
        if (rank <= 0 || Number(root, "r", source, true) != rank) throw new InvalidDataException($"{source}: r must be a positive integer.");
        double alpha = Number(root, "lora_alpha", source, required: false) ?? 8; // PEFT's default
        double dropout = Number(root, "lora_dropout", source, required: false) ?? 0;
        if (!(alpha > 0) || !double.IsFinite(alpha)) throw new InvalidDataException($"{source}: lora_alpha must be positive.");
        if (!(dropout >= 0 && dropout < 1)) throw new InvalidDataException($"{source}: lora_dropout must be in [0, 1).");
        bool dora = Boolean(root, "use_dora", source) ?? false; // PEFT's default
        bool rsLora = Boolean(root, "use_rslora", source) ?? false; // PEFT's default
        Reject(root, "fan_in_fan_out", n => n is JsonValue v && v.TryGetValue(out bool b) && b, "fan_in_fan_out = true (GPT-2 Conv1D weights) does not apply to LLaMA-family projections", source);
        Reject(root, "bias", n => n is not JsonValue v || !v.TryGetValue(out string? s) || s != "none", "only bias = \"none\" is supported (the adapter trains no biases)", source);
        Reject(root, "modules_to_save", n => n is JsonArray { Count: > 0 } || (n is not null && n is not JsonArray), "modules_to_save (fully trained extra modules) is not supported", source);
        Reject(root, "layers_to_transform", n => n is not null, "layers_to_transform (adapters on some layers only) is not supported", source);
        Reject(root, "rank_pattern", n => n is JsonObject { Count: > 0 } || (n is not null && n is not JsonObject), "rank_pattern (per-module ranks) is not supported", source);
        Reject(root, "alpha_pattern", n => n is JsonObject { Count: > 0 } || (n is not null && n is not JsonObject), "alpha_pattern (per-module alphas) is not supported", source);
        // PiSSA, OLoRA, CorDA and LoftQ start from a non-zero B A and move it out of the base weights; an adapter saved
        // without PEFT's conversion to plain LoRA only applies to that changed base (PEFT redoes it when loading), not to
        // the original model loaded here. Initialisations that leave the base alone load as plain LoRA.
        Reject(root, "init_lora_weights", n => n is not null && !(n is JsonValue v && (v.TryGetValue(out bool _)
                || v.TryGetValue(out string? s) && s is "gaussian" or "eva")),
            "this initialisation changes the base weights (PiSSA, OLoRA, CorDA, LoftQ), so the adapter does not apply to the original model; " +
            "save it converted to plain LoRA (PEFT's path_initial_model_for_weight_conversion)", source);
        var targets = Targets(root["target_modules"], source, projections);
        return new LoraConfig(rank, alpha, dropout, targets, BFloat16Base: false, UseRsLora: rsLora, UseDora: dora);
    }

    /// <summary>
    /// PEFT's target_modules resolved to projection names: a list matches a module whose path equals an entry or ends
    /// with "." + entry, <c>"all-linear"</c> every projection, any other string is a regular expression over the whole
    /// path. The matched set must be the same names in every layer.
    /// </summary>
    private static List<string> Targets(JsonNode? node, string source, IReadOnlyList<(string Path, string Name)> projections)
    {
        Func<string, bool> matches;
        switch (node)
        {
            case JsonArray list:
                var entries = list.Select(e => e is JsonValue v && v.TryGetValue(out string? s) && !string.IsNullOrEmpty(s) ? s
                    : throw new InvalidDataException($"{source}: target_modules must hold module names.")).ToList();
                matches = path => entries.Any(e => path == e || path.EndsWith("." + e, StringComparison.Ordinal));
                break;
            case JsonValue value when value.TryGetValue(out string? text) && text == "all-linear":
                matches = _ => true;
                break;
            case JsonValue value when value.TryGetValue(out string? pattern) && !string.IsNullOrEmpty(pattern):
                Regex regex;
                try
                {
                    regex = new Regex("^(?:" + pattern + ")$", RegexOptions.CultureInvariant, TimeSpan.FromSeconds(1));
                }
                catch (ArgumentException e)
                {
                    throw new InvalidDataException($"{source}: target_modules '{pattern}' is not a valid regular expression ({e.Message}).", e);
                }
                matches = path =>
                {
                    try
                    {
                        return regex.IsMatch(path);
                    }
                    catch (RegexMatchTimeoutException e)
                    {
                        throw new InvalidDataException($"{source}: target_modules '{pattern}' took too long to match '{path}'.", e);
                    }
                };
                break;
            default:
                throw new InvalidDataException($"{source}: target_modules is missing or not a list of names or a pattern.");
        }
        var matched = projections.Where(p => matches(p.Path)).ToList();
        if (matched.Count == 0) throw new InvalidDataException($"{source}: target_modules {node!.ToJsonString()} matches no projection of this model.");
        var names = projections.Select(p => p.Name).Distinct(StringComparer.Ordinal).Where(n => matched.Any(m => m.Name == n)).ToList();
        foreach (var name in names)
        {
            var missing = projections.FirstOrDefault(p => p.Name == name && !matched.Contains(p));
            if (missing.Path is not null)
                throw new InvalidDataException($"{source}: target_modules {node!.ToJsonString()} adapts {name} in some layers but not '{missing.Path}'; adapters on some layers only are not supported.");
        }
        return names;
    }

    private static string? String(JsonObject root, string name, string source) => root[name] switch
    {
        null => null,
        JsonValue v when v.TryGetValue(out string? s) => s,
        _ => throw new InvalidDataException($"{source}: {name} must be a string."),
    };

    private static bool? Boolean(JsonObject root, string name, string source) => root[name] switch
    {
        null => null,
        JsonValue v when v.TryGetValue(out bool b) => b,
        _ => throw new InvalidDataException($"{source}: {name} must be true or false."),
    };

    private static double? Number(JsonObject root, string name, string source, bool required) => root[name] switch
    {
        null when required => throw new InvalidDataException($"{source}: {name} is missing."),
        null => null,
        JsonValue v when v.TryGetValue(out double d) => d,
        _ => throw new InvalidDataException($"{source}: {name} must be a number."),
    };

    private static void Reject(JsonObject root, string name, Func<JsonNode?, bool> unsupported, string why, string source)
    {
        if (root.ContainsKey(name) && unsupported(root[name])) throw new InvalidDataException($"{source}: {name}: {why}.");
    }
}
