using TorchSharp;
using TorchSharp.Modules;
using Microsoft.ML.Orpo.ModelFiles;
using Microsoft.ML.Orpo.Tokenization;
using Microsoft.ML.Orpo.Modeling;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.ModelFiles;

/// <summary>A decoder network with its config, tokenizer and device: what training and generation share.</summary>
internal sealed class CausalLanguageModel : IDisposable
{
    private CausalLanguageModel(LlamaForCausalLM network, OrpoTokenizer tokenizer, Device device, GenerationConfig generation)
    {
        Network = network;
        Generation = generation;
        Tokenizer = tokenizer;
        Device = device;
    }

    public LlamaForCausalLM Network { get; }
    public LlamaConfig Config => Network.Config;
    public OrpoTokenizer Tokenizer { get; }
    /// <summary>The checkpoint's <c>generation_config.json</c> (or what transformers derives without one).</summary>
    public GenerationConfig Generation { get; }
    public Device Device { get; }
    public bool IsDisposed { get; private set; }

    /// <summary>
    /// Loads a Hugging Face folder (config.json + safetensors) or a llama2.c <c>.bin</c> file. The tokenizer comes from
    /// <paramref name="tokenizerPath"/>, else from the model folder (or the .bin's folder). <paramref name="projections"/>
    /// bfloat16 stores the layers' projections in bfloat16 from the start (a LoRA run's frozen
    /// <see cref="LoraOptions.BFloat16Base"/>): each tensor is converted as it is read, as converting the loaded model
    /// would, without the float32 model at the load's peak.
    /// </summary>
    public static CausalLanguageModel Load(string modelPath, string? tokenizerPath, string device, ScalarType? projections = null)
    {
        if (string.IsNullOrWhiteSpace(modelPath)) throw new ArgumentException("A model path is required.", nameof(modelPath));
        var torchDevice = DeviceNames.Parse(device);
        if (Directory.Exists(modelPath))
        {
            // Read one tensor at a time into the network: a whole state dict beside it would double the load's peak.
            var (config, tensors) = HuggingFaceFolder.Open(modelPath);
            using (tensors)
            {
                var generation = HuggingFaceFolder.LoadGenerationConfig(modelPath, config);
                var tokenizer = OrpoTokenizer.Load(tokenizerPath ?? modelPath, config);
                return Create(config, tensors, tokenizer, torchDevice, modelPath, generation, projections);
            }
        }
        if (!File.Exists(modelPath))
            throw new FileNotFoundException($"Model path '{modelPath}' is neither a Hugging Face folder nor a llama2.c .bin file.", modelPath);
        var (binConfig, weights) = Llama2cFile.Load(modelPath);
        try
        {
            var tokenizer = OrpoTokenizer.Load(tokenizerPath ?? Path.GetDirectoryName(Path.GetFullPath(modelPath))!, binConfig);
            return Create(binConfig, weights, tokenizer, torchDevice, modelPath, projections: projections);
        }
        finally
        {
            foreach (var t in weights.Values) t.Dispose();
        }
    }

    /// <summary>
    /// Builds the network from a config and a state dict, checking every key and shape strictly;
    /// <paramref name="generation"/> null derives the generation config from <paramref name="config"/>;
    /// <paramref name="projections"/> is the layers' projections' storage type (null: float32).
    /// </summary>
    public static CausalLanguageModel Create(LlamaConfig config, IReadOnlyDictionary<string, Tensor> weights,
        OrpoTokenizer tokenizer, Device device, string source, GenerationConfig? generation = null, ScalarType? projections = null) =>
        Create(config, network => LoadWeights(network, weights, source), tokenizer, device, source, generation, projections);

    /// <summary>
    /// As the state dict's overload, reading the checkpoint's tensors one at a time into the network, whose projections
    /// are stored as <paramref name="projections"/> (null: float32).
    /// </summary>
    internal static CausalLanguageModel Create(LlamaConfig config, CheckpointTensors tensors,
        OrpoTokenizer tokenizer, Device device, string source, GenerationConfig? generation, ScalarType? projections) =>
        Create(config, network => LoadWeights(network.NamedWeights(), tensors.Names, tensors.ReadAsStored, owned: true, source),
            tokenizer, device, source, generation, projections);

    private static CausalLanguageModel Create(LlamaConfig config, Action<LlamaForCausalLM> fill,
        OrpoTokenizer tokenizer, Device device, string source, GenerationConfig? generation, ScalarType? projections)
    {
        generation = (generation ?? GenerationConfig.FromModelConfig(config)).ValidateFor(config, source);
        if (tokenizer.VocabularySize > config.VocabSize)
            throw new InvalidDataException(
                $"{source}: the tokenizer can produce ids up to {tokenizer.VocabularySize - 1}, but the model's vocabulary has only {config.VocabSize} entries.");
        var network = new LlamaForCausalLM(config, projections);
        try
        {
            fill(network);
            network.to(device);
            network.eval();
            return new CausalLanguageModel(network, tokenizer, device, generation);
        }
        catch
        {
            network.Dispose();
            throw;
        }
    }

    /// <summary>Copies a state dict into the network: a missing, unexpected or mis-shaped tensor is an error naming it.</summary>
    public static void LoadWeights(LlamaForCausalLM network, IReadOnlyDictionary<string, Tensor> weights, string source) =>
        LoadWeights(network.NamedWeights(), weights, source);

    /// <summary>Copies tensors into <paramref name="parameters"/> by name, strictly (see the overload above).</summary>
    public static void LoadWeights(IReadOnlyList<(string Name, Parameter Parameter)> parameters, IReadOnlyDictionary<string, Tensor> weights, string source) =>
        LoadWeights(parameters, weights.Keys.ToList(), name => weights[name], owned: false, source);

    /// <summary>
    /// The copy behind both overloads: <paramref name="read"/> gives the tensor of a name in <paramref name="names"/>
    /// in any type (the copy converts it to the parameter's), which is disposed after its copy when <paramref name="owned"/>.
    /// </summary>
    private static void LoadWeights(IReadOnlyList<(string Name, Parameter Parameter)> parameters, IReadOnlyCollection<string> names,
        Func<string, Tensor> read, bool owned, string source)
    {
        var expected = parameters.Select(p => p.Name).ToHashSet(StringComparer.Ordinal);
        string? unexpected = names.Where(k => !expected.Contains(k)).Order(StringComparer.Ordinal).FirstOrDefault();
        if (unexpected is not null) throw new InvalidDataException($"{source}: unexpected tensor '{unexpected}' for this model config.");
        var present = names.ToHashSet(StringComparer.Ordinal);
        using var noGrad = no_grad();
        // copy_ returns a new handle on the parameter's storage; the scope releases those so Dispose can free it.
        using var scope = NewDisposeScope();
        foreach (var (name, parameter) in parameters)
        {
            if (!present.Contains(name))
                throw new InvalidDataException($"{source}: missing tensor '{name}'.");
            var value = read(name);
            try
            {
                if (!value.shape.SequenceEqual(parameter.shape))
                    throw new InvalidDataException(
                        $"{source}: tensor '{name}' has shape [{string.Join(", ", value.shape)}], expected [{string.Join(", ", parameter.shape)}].");
                parameter.copy_(value);
            }
            finally
            {
                if (owned) value.Dispose();
            }
        }
    }

    /// <summary>
    /// A detached float32 CPU copy of every weight, keyed by Hugging Face name: the model as a plain network, with its
    /// LoRA adapters (if any) merged into their projections.
    /// </summary>
    public Dictionary<string, Tensor> ExportWeights()
    {
        var weights = ExportBaseWeights();
        Network.Adapters?.MergeInto(weights);
        return weights;
    }

    /// <summary>A detached float32 CPU copy of every weight of the network itself, without its adapters.</summary>
    public Dictionary<string, Tensor> ExportBaseWeights()
    {
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        return Network.NamedWeights().ToDictionary(p => p.Name,
            p => p.Parameter.detach().to(ScalarType.Float32, CPU).clone().MoveToOuterDisposeScope(), StringComparer.Ordinal);
    }

    public void Dispose()
    {
        if (IsDisposed) return;
        IsDisposed = true;
        // Module.Dispose releases the native module but leaves the parameter tensors to the finalizer; free their
        // memory now, so disposing a transformer gives its native memory back at once.
        foreach (var (_, parameter) in Network.NamedWeights()) parameter.Dispose();
        Network.Dispose();
    }
}
