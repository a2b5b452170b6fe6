using Microsoft.ML.Orpo.Modeling;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.ModelFiles.Gguf;

/// <summary>Hugging Face weights as llama.cpp's LLaMA tensors (names, q/k row order, storage type).</summary>
internal static class GgufLlamaTensors
{
    private static readonly Dictionary<string, string> LayerNames = new(StringComparer.Ordinal)
    {
        ["input_layernorm"] = "attn_norm",
        ["self_attn.q_proj"] = "attn_q",
        ["self_attn.k_proj"] = "attn_k",
        ["self_attn.v_proj"] = "attn_v",
        ["self_attn.o_proj"] = "attn_output",
        ["post_attention_layernorm"] = "ffn_norm",
        ["mlp.gate_proj"] = "ffn_gate",
        ["mlp.up_proj"] = "ffn_up",
        ["mlp.down_proj"] = "ffn_down",
    };

    /// <summary>Every tensor of the GGUF file, in the Hugging Face state-dict order (embedding, layers, norm, head).</summary>
    public static List<GgufTensor> Map(LlamaConfig config, IReadOnlyDictionary<string, Tensor> weights, GgufTensorType type)
    {
        var result = new List<GgufTensor>();
        foreach (var expected in ModelWeights.ExpectedShapes(config))
        {
            var tensor = weights[expected.Name];
            float[] values = tensor.contiguous().data<float>().ToArray();
            string name = GgufName(expected.Name);
            result.Add(new GgufTensor(name, expected.Shape, StorageType(expected.Shape, type), InRotaryOrder(name, values, config)));
        }
        if (GgufLlamaMetadata.RopeFrequencyFactors(config) is float[] factors)
            result.Add(new GgufTensor("rope_freqs.weight", [factors.Length], GgmlType.F32, factors));
        return result;
    }

    /// <summary>F32 for 1-D tensors; Q8_0 rows that are not whole blocks fall back to F16 (both as llama.cpp's converter).</summary>
    internal static GgmlType StorageType(long[] shape, GgufTensorType type) => (shape.Length, type) switch
    {
        (1, _) or (_, GgufTensorType.F32) => GgmlType.F32,
        (_, GgufTensorType.Q8_0) when shape[^1] % GgufQuantizer.Q8BlockSize == 0 => GgmlType.Q8_0,
        _ => GgmlType.F16,
    };

    internal static string GgufName(string hfName)
    {
        switch (hfName)
        {
            case "model.embed_tokens.weight": return "token_embd.weight";
            case "model.norm.weight": return "output_norm.weight";
            case "lm_head.weight": return "output.weight";
        }
        const string prefix = "model.layers.";
        if (hfName.StartsWith(prefix, StringComparison.Ordinal))
        {
            int dot = hfName.IndexOf('.', prefix.Length);
            string layer = hfName[prefix.Length..dot];
            string rest = hfName[(dot + 1)..];
            int last = rest.LastIndexOf('.');
            if (LayerNames.TryGetValue(rest[..last], out string? module)) return $"blk.{layer}.{module}{rest[last..]}";
        }
        throw new InvalidOperationException($"No GGUF name for tensor '{hfName}'.");
    }

    /// <summary>
    /// The output rows of <paramref name="ggufName"/>'s tensor (a q or k projection's weight or bias, or a LoRA B of one)
    /// in llama.cpp's order: its llama architecture rotates interleaved pairs, Hugging Face rotates halves (as llama.cpp's
    /// converter permutes). Other tensors are returned as they are.
    /// </summary>
    internal static float[] InRotaryOrder(string ggufName, float[] rows, LlamaConfig config)
    {
        if (ggufName.Contains(".attn_q.", StringComparison.Ordinal)) return Interleave(rows, config.NumAttentionHeads, config.HeadDim);
        if (ggufName.Contains(".attn_k.", StringComparison.Ordinal)) return Interleave(rows, config.NumKeyValueHeads, config.HeadDim);
        return rows;
    }

    /// <summary>Rows of each head from (2, d/2) to (d/2, 2) order; a bias is one column.</summary>
    internal static float[] Interleave(float[] values, int heads, int headDim)
    {
        int half = headDim / 2;
        int columns = values.Length / (heads * headDim);
        var result = new float[values.Length];
        for (int h = 0; h < heads; h++)
            for (int i = 0; i < half; i++)
                for (int j = 0; j < 2; j++)
                    Array.Copy(values, ((long)h * headDim + j * half + i) * columns, result, ((long)h * headDim + 2 * i + j) * columns, columns);
        return result;
    }
}
