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

    /// <summary>DoRA's magnitude vector as PEFT saves it (no <c>.weight</c> suffix, a format PEFT keeps for compatibility).</summary>
    public static string KeyOfMagnitude(string path) => KeyPrefix + path + ".lora_magnitude_vector";

    /// <summary>
    /// New adapters as PEFT initialises them: A Kaiming-uniform with a = sqrt(5) (bounds +-1/sqrt(in)), B zero, so the
    /// network computes exactly the base model's function; with DoRA, the magnitude is each row's norm of the base
    /// weight (as the network will use it: after rounding a bfloat16 base). A is drawn from <paramref name="seed"/>, in module order.
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
            return (a, zeros(outFeatures, config.Rank), null);
        });
    }

    /// <summary>
    /// Adapters with the given weights, keyed as PEFT writes them (with DoRA, also each magnitude vector). Strict: a
    /// missing, unexpected or mis-shaped tensor is an error naming it and <paramref name="source"/>.
    /// </summary>
    public static LoraAdapters Load(LlamaForCausalLM network, LoraConfig config, IReadOnlyDictionary<string, Tensor> tensors, string source)
    {
        config.ValidateFor(network, source);
        var expected = Targeted(network, config).SelectMany(p => config.UseDora
            ? new[] { KeyOfA(p.Path), KeyOfB(p.Path), KeyOfMagnitude(p.Path) }
            : new[] { KeyOfA(p.Path), KeyOfB(p.Path) }).ToHashSet(StringComparer.Ordinal);
        string? unexpected = tensors.Keys.Where(k => !expected.Contains(k)).Order(StringComparer.Ordinal).FirstOrDefault();
        if (unexpected is not null)
            throw new InvalidDataException(unexpected.EndsWith(".lora_magnitude_vector", StringComparison.Ordinal)
                ? $"{source}: tensor '{unexpected}' is a DoRA magnitude, but the adapter config does not set use_dora = true."
                : $"{source}: unexpected tensor '{unexpected}': this model with target modules [{string.Join(", ", config.TargetModules)}] has no such adapter weight.");
        Tensor Take(string key, params long[] shape)
        {
            if (!tensors.TryGetValue(key, out var value))
                throw new InvalidDataException(key.EndsWith(".lora_magnitude_vector", StringComparison.Ordinal)
                    ? $"{source}: missing tensor '{key}': the adapter config sets use_dora = true, so every adapted projection needs its DoRA magnitude."
                    : $"{source}: missing tensor '{key}'.");
            if (!value.shape.SequenceEqual(shape))
                throw new InvalidDataException($"{source}: tensor '{key}' has shape [{string.Join(", ", value.shape)}], expected [{string.Join(", ", shape)}].");
            if (!value.is_floating_point())
                throw new InvalidDataException($"{source}: tensor '{key}' holds {value.dtype}, not floating-point weights.");
            return value.to(ScalarType.Float32, CPU, copy: true);
        }
        return Attach(network, config, (path, inFeatures, outFeatures) =>
            (Take(KeyOfA(path), config.Rank, inFeatures), Take(KeyOfB(path), outFeatures, config.Rank),
                config.UseDora ? Take(KeyOfMagnitude(path), outFeatures) : null));
    }

    private static IEnumerable<(string Path, string Name, Linear Module, IAdaptable Block)> Targeted(LlamaForCausalLM network, LoraConfig config) =>
        network.Projections().Where(p => config.TargetModules.Contains(p.Name, StringComparer.Ordinal));

    /// <summary>
    /// Makes each targeted projection's adapter (A, B and, for DoRA, the magnitude or null for a new one), freezes the
    /// base and attaches; the config is already validated.
    /// </summary>
    private static LoraAdapters Attach(LlamaForCausalLM network, LoraConfig config, Func<string, long, long, (Tensor A, Tensor B, Tensor? M)> make)
    {
        if (network.Adapters is not null) throw new InvalidOperationException("The network already has LoRA adapters.");
        // The network's own type (float32, or float64 in exactness tests); a bfloat16 base keeps float32 adapters.
        var device = network.LmHeadWeight.device;
        var dtype = network.LmHeadWeight.dtype;
        var made = new List<(string Path, Linear Module, Parameter A, Parameter B, Tensor? M)>();
        try
        {
            foreach (var (path, _, module, _) in Targeted(network, config))
            {
                var (a, b, m) = make(path, module.in_features, module.out_features);
                made.Add((path, module, TrainedCopy(a, dtype, device), TrainedCopy(b, dtype, device), m));
            }
        }
        catch
        {
            foreach (var (_, _, a, b, m) in made)
            {
                a.Dispose();
                b.Dispose();
                m?.Dispose();
            }
            throw;
        }
        foreach (var (_, parameter) in network.NamedWeights()) parameter.requires_grad_(false);
        if (config.BFloat16Base)
            foreach (var (_, _, module, _) in network.Projections())
            {
                module.to(ScalarType.BFloat16);
                foreach (var p in module.parameters()) p.requires_grad_(false);
            }
        var dropout = new LoraDropout(config.Dropout);
        var adapters = made.Select((m, index) => (m.Path, config.UseDora
            ? DoraAdapter(m.Module, m.A, m.B, m.M, config.Scale, dropout, index)
            : new LoraAdapter(m.A, m.B, config.Scale, dropout, index))).ToList();
        var byPath = adapters.ToDictionary(m => m.Path, m => m.Item2, StringComparer.Ordinal);
        foreach (var (path, name, _, block) in network.Projections())
            block.Adapt(name, byPath.GetValueOrDefault(path));
        var set = new LoraAdapters(config, dropout, adapters);
        network.Adapters = set;
        return set;
    }

    /// <summary>
    /// A DoRA adapter on <paramref name="module"/>: the base's squared row norms as the network now holds it (after
    /// rounding a bfloat16 base), and the given magnitude or, for a new adapter (B zero), the norms themselves, computed
    /// as every forward pass computes them, so that m / ||W + s B A|| starts at exactly 1.
    /// </summary>
    private static LoraAdapter DoraAdapter(Linear module, Parameter a, Parameter b, Tensor? magnitude, double scale, LoraDropout dropout, int index)
    {
        var squared = LoraAdapter.SquaredRowNorms(module.weight!, a.dtype);
        if (magnitude is null)
            using (var unused = zeros(b.shape, a.dtype, a.device)) // W A^T: multiplied by B = 0
                magnitude = LoraAdapter.RowNorms(squared, unused, a, b, scale);
        return new LoraAdapter(a, b, scale, dropout, index, TrainedCopy(magnitude, a.dtype, a.device), squared);
    }

    /// <summary>A trained parameter holding <paramref name="value"/> in the network's type and device; disposes <paramref name="value"/>.</summary>
    private static Parameter TrainedCopy(Tensor value, ScalarType dtype, Device device)
    {
        using (value)
        using (var moved = value.to(dtype, device))
            return new Parameter(moved.detach().clone(), true);
    }

    /// <summary>A, B and (DoRA) the magnitude of every adapter under their PEFT keys, in module order.</summary>
    public IReadOnlyList<(string Name, Parameter Parameter)> NamedParameters() =>
        adapters.SelectMany(a => a.Adapter.Magnitude is { } m
            ? new[] { (KeyOfA(a.Path), a.Adapter.A), (KeyOfB(a.Path), a.Adapter.B), (KeyOfMagnitude(a.Path), m) }
            : new[] { (KeyOfA(a.Path), a.Adapter.A), (KeyOfB(a.Path), a.Adapter.B) }).ToList();

    /// <summary>Detached float32 CPU copies of every adapter weight, keyed as PEFT saves them.</summary>
    public Dictionary<string, Tensor> Export()
    {
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        return NamedParameters().ToDictionary(p => p.Name,
            p => p.Parameter.detach().to(ScalarType.Float32, CPU).clone().MoveToOuterDisposeScope(), StringComparer.Ordinal);
    }

    /// <summary>
    /// Folds each adapter into the weight of its projection (float32, or float64), in place: <c>W + Scale B A</c>, and
    /// with DoRA that rescaled row by row (<see cref="LoraAdapter.Merged"/>).
    /// </summary>
    public void MergeInto(IReadOnlyDictionary<string, Tensor> weights)
    {
        using var noGrad = no_grad();
        foreach (var (path, adapter) in adapters)
        {
            var weight = weights[path + ".weight"];
            using var merged = adapter.Merged(weight);
            weight.copy_(merged);
        }
    }

    /// <summary>
    /// Keeps every DoRA adapter's factor until the handle is disposed (<see cref="LoraAdapter.HoldFactor"/>): for a
    /// generation call, in which A, B and m do not change. Does nothing for plain LoRA.
    /// </summary>
    public IDisposable HoldDoraFactors(LlamaForCausalLM network)
    {
        if (!Config.UseDora) return new Handles([]);
        var modules = network.Projections().ToDictionary(p => p.Path, p => p.Module, StringComparer.Ordinal);
        var held = new List<IDisposable>();
        try
        {
            using var noGrad = no_grad();
            foreach (var (path, adapter) in adapters) held.Add(adapter.HoldFactor(Op.DoraFactor(modules[path], adapter)));
        }
        catch
        {
            foreach (var h in held) h.Dispose();
            throw;
        }
        return new Handles(held);
    }

    private sealed class Handles(List<IDisposable> held) : IDisposable
    {
        public void Dispose()
        {
            foreach (var h in held) h.Dispose();
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
