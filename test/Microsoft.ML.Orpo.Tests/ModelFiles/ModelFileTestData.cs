using System.Buffers.Binary;
using System.Text;
using Microsoft.ML.Orpo.ModelFiles;
using Microsoft.ML.Orpo.Modeling;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Tests.ModelFiles;

/// <summary>Builders and comparisons shared by the checkpoint tests.</summary>
internal static class ModelFileTestData
{
    /// <summary>Random weights with exactly the expected keys and shapes of <paramref name="config"/>.</summary>
    public static Dictionary<string, Tensor> RandomWeights(LlamaConfig config, int seed)
    {
        using var generator = new Generator((ulong)seed);
        return ModelWeights.ExpectedShapes(config)
            .ToDictionary(e => e.Name, e => randn(e.Shape, generator: generator), StringComparer.Ordinal);
    }

    /// <summary>A safetensors file assembled from a literal header and data buffer (no validation, for corruption tests).</summary>
    public static byte[] RawFile(string headerJson, byte[] data, ulong? declaredHeaderLength = null)
    {
        byte[] header = Encoding.UTF8.GetBytes(headerJson);
        var file = new byte[8 + header.Length + data.Length];
        BinaryPrimitives.WriteUInt64LittleEndian(file, declaredHeaderLength ?? (ulong)header.Length);
        header.CopyTo(file, 8);
        data.CopyTo(file, 8 + header.Length);
        return file;
    }

    /// <summary>Writes tensors with <see cref="SafeTensorsWriter"/> into a byte array.</summary>
    public static byte[] WriteToBytes(IReadOnlyDictionary<string, Tensor> tensors, SafeTensorsDType storage = SafeTensorsDType.F32)
    {
        using var stream = new MemoryStream();
        SafeTensorsWriter.Write(stream, tensors, storage);
        return stream.ToArray();
    }

    /// <summary>The raw bytes of a tensor (CPU, contiguous).</summary>
    public static byte[] Bytes(Tensor t) => t.contiguous().bytes.ToArray();

    /// <summary>Asserts both dictionaries hold the same keys and bit-identical tensors of the same dtype and shape.</summary>
    public static void AssertBitEqual(IReadOnlyDictionary<string, Tensor> expected, IReadOnlyDictionary<string, Tensor> actual)
    {
        CollectionAssert.AreEquivalent(expected.Keys.ToList(), actual.Keys.ToList());
        foreach (var (name, e) in expected)
        {
            Tensor a = actual[name];
            Assert.AreEqual(e.dtype, a.dtype, name);
            CollectionAssert.AreEqual(e.shape, a.shape, name);
            CollectionAssert.AreEqual(Bytes(e), Bytes(a), $"bytes of {name}");
        }
    }

    /// <summary>A tiny Qwen2-shaped config.json (q/k/v biases, tied, sliding window declared but unused).</summary>
    public const string Qwen2ConfigJson = """
        {
          "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 32, "intermediate_size": 48,
          "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 100,
          "max_position_embeddings": 128, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "tie_word_embeddings": true,
          "hidden_act": "silu", "use_sliding_window": false, "sliding_window": 4096, "max_window_layers": 2,
          "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "bfloat16"
        }
        """;

    /// <summary>A tiny Mistral-shaped config.json (untied, sliding window, GQA).</summary>
    public const string MistralConfigJson = """
        {
          "architectures": ["MistralForCausalLM"], "model_type": "mistral", "hidden_size": 48, "intermediate_size": 64,
          "num_hidden_layers": 3, "num_attention_heads": 6, "num_key_value_heads": 2, "vocab_size": 90,
          "max_position_embeddings": 256, "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "tie_word_embeddings": false,
          "hidden_act": "silu", "sliding_window": 64, "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float32"
        }
        """;
}
