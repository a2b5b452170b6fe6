using Microsoft.ML.Orpo.Modeling;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.ModelFiles;

/// <summary>One weight a model of a given config must have.</summary>
/// <param name="Name">The Hugging Face state-dict key, e.g. <c>model.layers.0.self_attn.q_proj.weight</c>.</param>
/// <param name="Shape">The exact shape.</param>
public sealed record WeightShape(string Name, long[] Shape)
{
    /// <summary>The shape as text, e.g. <c>[64, 512]</c>.</summary>
    public string ShapeText => ModelWeights.FormatShape(Shape);

    /// <inheritdoc />
    public override string ToString() => $"{Name} {ShapeText}";
}

/// <summary>The exact state-dict layout (Hugging Face key names and shapes) of a LLaMA-family model.</summary>
public static class ModelWeights
{
    /// <summary>
    /// Every tensor a model with <paramref name="config"/> has, in a stable order: the embedding, then per layer the
    /// input norm, q/k/v/o projections (with biases where the config has them), the post-attention norm and the
    /// gate/up/down projections, then the final norm and, unless the embeddings are tied, <c>lm_head.weight</c>.
    /// </summary>
    public static IReadOnlyList<WeightShape> ExpectedShapes(LlamaConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        long d = config.HiddenSize, v = config.VocabSize, i = config.IntermediateSize;
        long q = (long)config.NumAttentionHeads * config.HeadDim, kv = (long)config.NumKeyValueHeads * config.HeadDim;
        var list = new List<WeightShape> { new("model.embed_tokens.weight", [v, d]) };
        for (int layer = 0; layer < config.NumHiddenLayers; layer++)
        {
            string p = $"model.layers.{layer}.";
            list.Add(new(p + "input_layernorm.weight", [d]));
            AddLinear(list, p + "self_attn.q_proj", q, d, config.AttentionBias);
            AddLinear(list, p + "self_attn.k_proj", kv, d, config.AttentionBias);
            AddLinear(list, p + "self_attn.v_proj", kv, d, config.AttentionBias);
            AddLinear(list, p + "self_attn.o_proj", d, q, config.OutputProjectionBias);
            list.Add(new(p + "post_attention_layernorm.weight", [d]));
            AddLinear(list, p + "mlp.gate_proj", i, d, config.MlpBias);
            AddLinear(list, p + "mlp.up_proj", i, d, config.MlpBias);
            AddLinear(list, p + "mlp.down_proj", d, i, config.MlpBias);
        }
        list.Add(new("model.norm.weight", [d]));
        if (!config.TieWordEmbeddings) list.Add(new("lm_head.weight", [v, d]));
        return list;
    }

    /// <summary>
    /// Checks that <paramref name="weights"/> holds exactly the tensors of <see cref="ExpectedShapes"/>; throws
    /// <see cref="InvalidDataException"/> naming <paramref name="source"/> and the first missing, mis-shaped or
    /// unexpected tensor.
    /// </summary>
    internal static void ValidateStrict(LlamaConfig config, IReadOnlyDictionary<string, Tensor> weights, string source)
    {
        ArgumentNullException.ThrowIfNull(weights);
        CheckShapes(config, weights.ToDictionary(w => w.Key, w => w.Value?.shape, StringComparer.Ordinal), source);
    }

    /// <summary>As the tensors' overload, from the shapes alone (a checkpoint's headers, before any data is read).</summary>
    internal static void ValidateStrict(LlamaConfig config, IReadOnlyDictionary<string, long[]> shapes, string source)
    {
        ArgumentNullException.ThrowIfNull(shapes);
        CheckShapes(config, shapes.ToDictionary(w => w.Key, w => (long[]?)w.Value, StringComparer.Ordinal), source);
    }

    private static void CheckShapes(LlamaConfig config, Dictionary<string, long[]?> weights, string source)
    {
        IReadOnlyList<WeightShape> expected = ExpectedShapes(config);
        foreach (WeightShape e in expected)
        {
            if (!weights.TryGetValue(e.Name, out long[]? actual) || actual is null)
                throw new InvalidDataException($"{source}: missing tensor '{e.Name}' (expected shape {e.ShapeText}).");
            if (!actual.AsSpan().SequenceEqual(e.Shape))
                throw new InvalidDataException(
                    $"{source}: tensor '{e.Name}' has shape {FormatShape(actual)}, expected {e.ShapeText}.");
        }
        if (weights.Count != expected.Count)
        {
            var known = new HashSet<string>(expected.Select(e => e.Name), StringComparer.Ordinal);
            string extra = weights.Keys.Where(k => !known.Contains(k)).OrderBy(k => k, StringComparer.Ordinal).First();
            throw new InvalidDataException(
                $"{source}: unexpected tensor '{extra}' (not part of a {config.ArchitectureName} with this config).");
        }
    }

    internal static string FormatShape(IEnumerable<long> shape) => "[" + string.Join(", ", shape) + "]";

    private static void AddLinear(List<WeightShape> list, string prefix, long outFeatures, long inFeatures, bool bias)
    {
        list.Add(new(prefix + ".weight", [outFeatures, inFeatures]));
        if (bias) list.Add(new(prefix + ".bias", [outFeatures]));
    }
}
