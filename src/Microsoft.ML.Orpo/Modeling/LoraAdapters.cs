using TorchSharp;
using Microsoft.ML.Orpo.Ops;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Modeling;

/// <summary>
/// The LoRA adapters of a network, one per targeted projection of every layer, attached to the network's
/// projections (so every forward, training or not, includes them) with the base weights frozen. Parameter names are
/// PEFT's state-dict keys (<c>base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight</c>), which the
/// optimiser state, checkpoints and adapter files all use.
/// </summary>
internal sealed class LoraAdapters : IDisposable
{
    private const string KeyPrefix = "base_model.model.";
    private readonly List<(string Path, LoraAdapter Adapter)> adapters;

    private LoraAdapters(LoraConfig config, LoraDropout dropout, List<(string Path, LoraAdapter Adapter)> adapters)
    {
        Config = config;
        Dropout = dropout;
        this.adapters = adapters;
    }

    public LoraConfig Config { get; }

    /// <summary>Off except during a training step (<see cref="LoraDropout.During"/>).</summary>
    public LoraDropout Dropout { get; }

    /// <summary>The adapters by module path (<c>model.layers.0.self_attn.q_proj</c>), in layer order.</summary>
    public IReadOnlyList<(string Path, LoraAdapter Adapter)> ByPath => adapters;

    public static string KeyOfA(string path) => KeyPrefix + path + ".lora_A.weight";
    public static string KeyOfB(string path) => KeyPrefix + path + ".lora_B.weight";

    /// <summary>
    /// New adapters as PEFT initialises them: A Kaiming-uniform with a = sqrt(5) (bounds +-1/sqrt(in)), B zero, so the
    /// network computes exactly the base model's function. A is drawn from <paramref name="seed"/>, in module order.
    /// </summary>
    /// <param name="network">The model to adapt.</param>
    /// <param name="config">The adapters' config.</param>
    /// <param name="seed">Draws A.</param>
    /// <param name="source">What to name in the error when a target module is not a projection of the model.</param>
    public static LoraAdapters Create(LlamaForCausalLM network, LoraConfig config, int seed, string source = "OrpoOptions.Lora.TargetModules")
    {
        config.ValidateFor(network, source);
        using var generator = new Generator(unchecked((ulong)seed), CPU);
        return Attach(network, config, (path, inFeatures, outFeatures) =>
        {
            double bound = 1 / Math.Sqrt(inFeatures);
            var a = rand(new long[] { config.Rank, inFeatures }, generator: generator).mul_(2 * bound).sub_(bound);
            return (a, zeros(outFeatures, config.Rank));
        });
    }

    /// <summary>
    /// Adapters with the given weights, keyed as PEFT writes them. Strict: a missing, unexpected or mis-shaped tensor is
    /// an error naming it and <paramref name="source"/>.
    /// </summary>
    public static LoraAdapters Load(LlamaForCausalLM network, LoraConfig config, IReadOnlyDictionary<string, Tensor> tensors, string source)
    {
        config.ValidateFor(network, source);
        var expected = Targeted(network, config).SelectMany(p => new[] { KeyOfA(p.Path), KeyOfB(p.Path) }).ToHashSet(StringComparer.Ordinal);
        string? unexpected = tensors.Keys.Where(k => !expected.Contains(k)).Order(StringComparer.Ordinal).FirstOrDefault();
        if (unexpected is not null)
            throw new InvalidDataException($"{source}: unexpected tensor '{unexpected}': this model with target modules [{string.Join(", ", config.TargetModules)}] has no such adapter weight.");
        Tensor Take(string key, long rows, long columns)
        {
            if (!tensors.TryGetValue(key, out var value)) throw new InvalidDataException($"{source}: missing tensor '{key}'.");
            if (value.dim() != 2 || value.shape[0] != rows || value.shape[1] != columns)
                throw new InvalidDataException($"{source}: tensor '{key}' has shape [{string.Join(", ", value.shape)}], expected [{rows}, {columns}].");
            if (!value.is_floating_point())
                throw new InvalidDataException($"{source}: tensor '{key}' holds {value.dtype}, not floating-point weights.");
            return value.to(ScalarType.Float32, CPU, copy: true);
        }
        return Attach(network, config, (path, inFeatures, outFeatures) =>
            (Take(KeyOfA(path), config.Rank, inFeatures), Take(KeyOfB(path), outFeatures, config.Rank)));
    }

    private static IEnumerable<(string Path, string Name, Linear Module, IAdaptable Block)> Targeted(LlamaForCausalLM network, LoraConfig config) =>
        network.Projections().Where(p => config.TargetModules.Contains(p.Name, StringComparer.Ordinal));

    /// <summary>Makes each targeted projection's adapter, freezes the base and attaches; the config is already validated.</summary>
    private static LoraAdapters Attach(LlamaForCausalLM network, LoraConfig config, Func<string, long, long, (Tensor A, Tensor B)> make)
    {
        if (network.Adapters is not null) throw new InvalidOperationException("The network already has LoRA adapters.");
        // The network's own type (float32, or float64 in exactness tests); a bfloat16 base keeps float32 adapters.
        var device = network.LmHeadWeight.device;
        var dtype = network.LmHeadWeight.dtype;
        var dropout = new LoraDropout(config.Dropout);
        var made = new List<(string Path, LoraAdapter Adapter)>();
        try
        {
            foreach (var (path, _, module, _) in Targeted(network, config))
            {
                var (a, b) = make(path, module.in_features, module.out_features);
                using (a)
                using (b)
                using (var aOnDevice = a.to(dtype, device))
                using (var bOnDevice = b.to(dtype, device))
                    made.Add((path, new LoraAdapter(new Parameter(aOnDevice.detach().clone(), true), new Parameter(bOnDevice.detach().clone(), true),
                        config.Scale, dropout, made.Count)));
            }
        }
        catch
        {
            foreach (var (_, adapter) in made) adapter.Dispose();
            throw;
        }
        foreach (var (_, parameter) in network.NamedWeights()) parameter.requires_grad_(false);
        if (config.BFloat16Base)
            foreach (var (_, _, module, _) in network.Projections())
            {
                module.to(ScalarType.BFloat16);
                foreach (var p in module.parameters()) p.requires_grad_(false);
            }
        var byPath = made.ToDictionary(m => m.Path, m => m.Adapter, StringComparer.Ordinal);
        foreach (var (path, name, _, block) in network.Projections())
            block.Adapt(name, byPath.GetValueOrDefault(path));
        var set = new LoraAdapters(config, dropout, made);
        network.Adapters = set;
        return set;
    }

    /// <summary>A and B of every adapter under their PEFT keys, in module order.</summary>
    public IReadOnlyList<(string Name, Parameter Parameter)> NamedParameters() =>
        adapters.SelectMany(a => new[] { (KeyOfA(a.Path), a.Adapter.A), (KeyOfB(a.Path), a.Adapter.B) }).ToList();

    /// <summary>Detached float32 CPU copies of every adapter weight, keyed as PEFT saves them.</summary>
    public Dictionary<string, Tensor> Export()
    {
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        return NamedParameters().ToDictionary(p => p.Name,
            p => p.Parameter.detach().to(ScalarType.Float32, CPU).clone().MoveToOuterDisposeScope(), StringComparer.Ordinal);
    }

    /// <summary>Adds each adapter's dense update <c>Scale * B A</c> to the weight of its projection (float32, or float64), in place.</summary>
    public void MergeInto(IReadOnlyDictionary<string, Tensor> weights)
    {
        using var noGrad = no_grad();
        foreach (var (path, adapter) in adapters)
        {
            using var update = adapter.Dense();
            using var onCpu = update.to(CPU);
            weights[path + ".weight"].add_(onCpu);
        }
    }

    /// <summary>Zeroes the gradients A and B accumulated (the network's zero_grad does not reach them).</summary>
    public void ZeroGradients()
    {
        foreach (var (_, parameter) in NamedParameters())
        {
            using var gradient = parameter.grad;
            gradient?.zero_();
        }
    }

    public void Dispose()
    {
        foreach (var (_, adapter) in adapters) adapter.Dispose();
    }
}
