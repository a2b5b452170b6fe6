using System.Text;
using Microsoft.ML.Orpo.Modeling;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.ModelFiles;

/// <summary>
/// Reads and writes Hugging Face model folders: <c>config.json</c> plus <c>model.safetensors</c> or a sharded
/// <c>model.safetensors.index.json</c>, <c>generation_config.json</c>, and (on save) tokenizer files.
/// </summary>
public static class HuggingFaceFolder
{
    /// <summary>The model config file name.</summary>
    public const string ConfigFileName = "config.json";
    /// <summary>The single-file weights name.</summary>
    public const string WeightsFileName = "model.safetensors";
    /// <summary>The shard index name.</summary>
    public const string IndexFileName = "model.safetensors.index.json";
    /// <summary>The generation defaults file name.</summary>
    public const string GenerationConfigFileName = "generation_config.json";

    /// <summary>
    /// Loads the config and every weight of the model in <paramref name="folder"/>, converted to <paramref name="dtype"/>
    /// on the CPU, and checks them strictly against the config (every expected tensor present with its exact shape,
    /// nothing else). A redundant <c>lm_head.weight</c> of a tied model and rotary <c>inv_freq</c> buffers are dropped.
    /// </summary>
    /// <param name="folder">The checkpoint folder.</param>
    /// <param name="dtype">Type of the returned tensors.</param>
    /// <returns>The config and the weights keyed by Hugging Face name; the caller owns (and disposes) the tensors.</returns>
    /// <exception cref="InvalidDataException">A file is malformed or the weights do not match the config.</exception>
    public static (LlamaConfig Config, Dictionary<string, Tensor> Weights) Load(string folder, ScalarType dtype = ScalarType.Float32)
    {
        var (config, tensors) = Open(folder);
        using (tensors)
        {
            var weights = new Dictionary<string, Tensor>(StringComparer.Ordinal);
            try
            {
                foreach (string name in tensors.Names) weights.Add(name, tensors.Read(name, dtype));
                return (config, weights);
            }
            catch
            {
                foreach (Tensor t in weights.Values) t.Dispose();
                throw;
            }
        }
    }

    /// <summary>
    /// The config and the located, not yet read, weights of the model in <paramref name="folder"/>, checked as
    /// <see cref="Load"/> checks them (from the headers: every expected tensor present with its exact shape, nothing
    /// else; a redundant tied <c>lm_head.weight</c> and rotary <c>inv_freq</c> buffers left out). The caller disposes it.
    /// </summary>
    internal static (LlamaConfig Config, CheckpointTensors Tensors) Open(string folder)
    {
        ArgumentNullException.ThrowIfNull(folder);
        if (!Directory.Exists(folder)) throw new DirectoryNotFoundException($"Checkpoint folder '{folder}' does not exist.");
        LlamaConfig config = LlamaConfig.FromJsonFile(Path.Combine(folder, ConfigFileName));

        string single = Path.Combine(folder, WeightsFileName), index = Path.Combine(folder, IndexFileName);
        var tensors = new CheckpointTensors();
        try
        {
            if (File.Exists(single)) tensors.Add(single, SafeTensorsReader.ReadHeader(single));
            else if (File.Exists(index)) OpenSharded(folder, index, tensors);
            else
                throw new FileNotFoundException(
                    $"Checkpoint folder '{folder}' has neither '{WeightsFileName}' nor '{IndexFileName}'.", single);
            foreach (string name in tensors.Names.Where(k => IsDroppable(k, config)).ToList()) tensors.Remove(name);
            ModelWeights.ValidateStrict(config, tensors.Shapes, folder);
            return (config, tensors);
        }
        catch
        {
            tensors.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Reads the folder's <c>generation_config.json</c>, or derives it from <paramref name="config"/> as transformers
    /// does when the file is absent.
    /// </summary>
    /// <exception cref="InvalidDataException">The file is malformed or names an id outside the vocabulary.</exception>
    public static GenerationConfig LoadGenerationConfig(string folder, LlamaConfig config)
    {
        ArgumentNullException.ThrowIfNull(folder);
        ArgumentNullException.ThrowIfNull(config);
        string path = Path.Combine(folder, GenerationConfigFileName);
        return File.Exists(path)
            ? GenerationConfig.FromJson(File.ReadAllText(path), path).ValidateFor(config, path)
            : GenerationConfig.FromModelConfig(config);
    }

    /// <summary>
    /// Writes <paramref name="config"/> and <paramref name="weights"/> (F32) to <paramref name="folder"/> in the layout
    /// Hugging Face <c>from_pretrained</c> reads, plus the given tokenizer files and a <c>generation_config.json</c>.
    /// The weights are checked strictly first; a tied model's <c>lm_head.weight</c>, if passed, is not written.
    /// Each file is written to a temporary name and renamed into place.
    /// </summary>
    /// <param name="folder">Target folder (created if needed).</param>
    /// <param name="config">The model config.</param>
    /// <param name="weights">The weights keyed by Hugging Face name.</param>
    /// <param name="tokenizerFiles">File name to contents (e.g. <c>tokenizer.model</c>); plain names only.</param>
    /// <param name="generationConfig">The <c>generation_config.json</c> to write; null derives it from <paramref name="config"/>.</param>
    public static void Save(string folder, LlamaConfig config, IReadOnlyDictionary<string, Tensor> weights,
        IReadOnlyDictionary<string, byte[]>? tokenizerFiles = null, GenerationConfig? generationConfig = null)
    {
        ArgumentNullException.ThrowIfNull(folder);
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(weights);
        config.Validate();
        IReadOnlyDictionary<string, Tensor> toWrite = config.TieWordEmbeddings && weights.ContainsKey("lm_head.weight")
            ? weights.Where(p => p.Key != "lm_head.weight").ToDictionary(p => p.Key, p => p.Value, StringComparer.Ordinal)
            : weights;
        ModelWeights.ValidateStrict(config, toWrite, "weights to save");
        if (tokenizerFiles is not null)
            foreach (string name in tokenizerFiles.Keys)
                if (!IsPlainFileName(name) || name is ConfigFileName or WeightsFileName or IndexFileName or GenerationConfigFileName)
                    throw new ArgumentException($"Tokenizer file name '{name}' must be a plain file name not used by the checkpoint itself.",
                        nameof(tokenizerFiles));

        Directory.CreateDirectory(folder);
        SafeTensorsWriter.Write(Path.Combine(folder, WeightsFileName), toWrite);
        AtomicFile.WriteAllBytes(Path.Combine(folder, ConfigFileName), Encoding.UTF8.GetBytes(config.ToJson()));
        AtomicFile.WriteAllBytes(Path.Combine(folder, GenerationConfigFileName), 
            Encoding.UTF8.GetBytes((generationConfig ?? GenerationConfig.FromModelConfig(config)).ValidateFor(config, "generation config to save").ToJson()));
        if (tokenizerFiles is not null)
            foreach (var (name, bytes) in tokenizerFiles)
                AtomicFile.WriteAllBytes(Path.Combine(folder, name), bytes ?? throw new ArgumentException($"Tokenizer file '{name}' is null.", nameof(tokenizerFiles)));
        // A stale shard index would shadow nothing (model.safetensors wins on load) but would confuse other readers.
        string staleIndex = Path.Combine(folder, IndexFileName);
        if (File.Exists(staleIndex)) File.Delete(staleIndex);
    }

    private static void OpenSharded(string folder, string indexPath, CheckpointTensors tensors)
    {
        ShardIndex index = ShardIndex.Read(indexPath);
        string root = Path.GetFullPath(folder);
        foreach (var (shard, names) in index.TensorsByShard)
        {
            string path = Path.GetFullPath(Path.Combine(root, shard));
            if (!string.Equals(Path.GetDirectoryName(path), Path.TrimEndingDirectorySeparator(root), StringComparison.Ordinal))
                throw new InvalidDataException($"{indexPath}: shard '{shard}' resolves outside the checkpoint folder.");
            if (!File.Exists(path))
                throw new InvalidDataException($"{indexPath}: shard '{shard}' (holding e.g. tensor '{names.Order(StringComparer.Ordinal).First()}') does not exist.");

            SafeTensorsHeader header = SafeTensorsReader.ReadHeader(path);
            var present = new HashSet<string>(header.Entries.Select(e => e.Name), StringComparer.Ordinal);
            string? missing = names.Where(n => !present.Contains(n)).Order(StringComparer.Ordinal).FirstOrDefault();
            if (missing is not null)
                throw new InvalidDataException($"{indexPath}: tensor '{missing}' is listed in shard '{shard}' but that file does not contain it.");
            string? unlisted = present.Where(n => !names.Contains(n)).Order(StringComparer.Ordinal).FirstOrDefault();
            if (unlisted is not null)
                throw new InvalidDataException($"{path}: tensor '{unlisted}' is in the shard but the index does not place it there.");
            tensors.Add(path, header, names);
        }
    }

    private static bool IsDroppable(string key, LlamaConfig config) =>
        (config.TieWordEmbeddings && key == "lm_head.weight") || key.EndsWith(".rotary_emb.inv_freq", StringComparison.Ordinal);

    private static bool IsPlainFileName(string name) =>
        name.Length is > 0 and <= 255 && name is not ("." or "..") && name.IndexOfAny(['/', '\\', ':', '\0']) < 0
        && name.IndexOfAny(Path.GetInvalidFileNameChars()) < 0;
}
