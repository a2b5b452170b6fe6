using System.Text.Json.Nodes;
using Microsoft.ML.Orpo.ModelFiles.Gguf;
using Microsoft.ML.Orpo.Modeling;
using Microsoft.ML.Orpo.Tests.Infrastructure;
using Microsoft.ML.Orpo.Tests.Tokenization;
using Microsoft.ML.Orpo.Tokenization;
using Microsoft.ML.Orpo.ModelFiles;
using Microsoft.ML.Orpo.Training;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Tests.ModelFiles.Gguf;

/// <summary>What SaveGguf writes, read back by an independent reader: header, keys, tensors, quantisation, the Modelfile,
/// and the refusals that leave no file behind.</summary>
[TestClass]
public sealed class GgufExportTests
{
    private static string Export(OrpoTransformer model, GgufTensorType type, out GgufReader reader)
    {
        string path = Path.Combine(TestAssets.NewTempDirectory("orpo-gguf"), "stories.gguf");
        model.SaveGguf(path, type);
        reader = new GgufReader(path);
        return path;
    }

    [TestMethod]
    public void MetadataDescribesTheLlamaArchitectureAndTheSentencePieceTokenizer()
    {
        using var model = OrpoTransformer.FromPretrained(new MLContext(seed: 1), TestAssets.Stories260KHf);
        Export(model, GgufTensorType.F16, out var gguf);
        var kv = gguf.Metadata;
        Assert.AreEqual(3u, gguf.Version);
        Assert.AreEqual("llama", kv["general.architecture"]);
        Assert.AreEqual("stories", kv["general.name"]);
        Assert.AreEqual(1u, kv["general.file_type"]);
        Assert.AreEqual(512u, kv["llama.context_length"]);
        Assert.AreEqual(64u, kv["llama.embedding_length"]);
        Assert.AreEqual(5u, kv["llama.block_count"]);
        Assert.AreEqual(172u, kv["llama.feed_forward_length"]);
        Assert.AreEqual(8u, kv["llama.attention.head_count"]);
        Assert.AreEqual(4u, kv["llama.attention.head_count_kv"]);
        Assert.AreEqual(8u, kv["llama.rope.dimension_count"]);
        Assert.AreEqual(1e-5f, kv["llama.attention.layer_norm_rms_epsilon"]);
        Assert.AreEqual(10000f, kv["llama.rope.freq_base"]);
        Assert.IsFalse(kv.ContainsKey("llama.rope.scaling.type"));
        Assert.AreEqual("llama", kv["tokenizer.ggml.model"]);
        var tokens = (object[])kv["tokenizer.ggml.tokens"];
        var types = (object[])kv["tokenizer.ggml.token_type"];
        Assert.HasCount(512, tokens);
        Assert.HasCount(512, (object[])kv["tokenizer.ggml.scores"]);
        Assert.AreEqual(("<unk>", "<s>", "</s>", "<0x0A>"), ((string)tokens[0], (string)tokens[1], (string)tokens[2], (string)tokens[13]));
        Assert.AreEqual((2, 3, 3, 6, 1), ((int)types[0], (int)types[1], (int)types[2], (int)types[13], (int)types[300]));
        Assert.AreEqual((1u, 2u, 0u), ((uint)kv["tokenizer.ggml.bos_token_id"], (uint)kv["tokenizer.ggml.eos_token_id"], (uint)kv["tokenizer.ggml.unknown_token_id"]));
        Assert.IsTrue((bool)kv["tokenizer.ggml.add_bos_token"]);
        Assert.IsFalse(kv.ContainsKey("tokenizer.chat_template"));
    }

    [TestMethod]
    public void TensorsHaveLlamaCppNamesReversedShapesAndTypes()
    {
        using var model = OrpoTransformer.FromPretrained(new MLContext(seed: 1), TestAssets.Stories260KHf);
        Export(model, GgufTensorType.Q8_0, out var gguf);
        var names = new List<string> { "token_embd.weight", "output_norm.weight" };
        foreach (int l in Enumerable.Range(0, 5))
            names.AddRange(new[] { "attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down" }
                .Select(n => $"blk.{l}.{n}.weight"));
        CollectionAssert.AreEquivalent(names, gguf.Tensors.Keys.ToList(), "tied embeddings: no output.weight");
        var t = gguf.Tensors;
        CollectionAssert.AreEqual(new long[] { 64, 512 }, t["token_embd.weight"].Dims);
        CollectionAssert.AreEqual(new long[] { 64, 32 }, t["blk.0.attn_k.weight"].Dims);
        CollectionAssert.AreEqual(new long[] { 172, 64 }, t["blk.0.ffn_down.weight"].Dims);
        Assert.AreEqual(0u, t["blk.0.attn_norm.weight"].Type, "norms stay F32");
        Assert.AreEqual(8u, t["blk.0.attn_q.weight"].Type);
        Assert.AreEqual(1u, t["blk.0.ffn_down.weight"].Type, "rows of 172 are not whole Q8_0 blocks: F16");
        Assert.AreEqual(0L, t.Values.Min(x => x.Offset) % 32);
        Assert.IsTrue(t.Values.All(x => x.Offset % 32 == 0));
    }

    [TestMethod]
    public void WeightsReadBackExactlyInF32AndWithinTheQuantisationStepInF16AndQ8_0()
    {
        using var model = OrpoTransformer.FromPretrained(new MLContext(seed: 1), TestAssets.Stories260KHf);
        var weights = model.Model.ExportWeights();
        try
        {
            float[] embedding = weights["model.embed_tokens.weight"].data<float>().ToArray();
            float[] q = weights["model.layers.0.self_attn.q_proj.weight"].data<float>().ToArray();
            Export(model, GgufTensorType.F32, out var f32);
            CollectionAssert.AreEqual(embedding, f32.Read("token_embd.weight"));
            // llama.cpp's row order is llama2.c's: the inverse of the loader's permutation.
            float[] llama2c = Microsoft.ML.Orpo.ModelFiles.Llama2cFile.PermuteRope(tensor(f32.Read("blk.0.attn_q.weight")).view(64, 64), 8, 8, 64)
                .data<float>().ToArray();
            CollectionAssert.AreEqual(q, llama2c);

            Export(model, GgufTensorType.F16, out var f16);
            float[] half = f16.Read("token_embd.weight");
            for (int i = 0; i < embedding.Length; i++) Assert.AreEqual(embedding[i], half[i], Math.Abs(embedding[i]) / 1024 + 1e-7);

            Export(model, GgufTensorType.Q8_0, out var q8);
            float[] quantised = q8.Read("token_embd.weight");
            for (int block = 0; block < embedding.Length / 32; block++)
            {
                var values = embedding.AsSpan(block * 32, 32).ToArray();
                float step = values.Max(Math.Abs) / 127;
                for (int j = 0; j < 32; j++)
                    Assert.AreEqual(values[j], quantised[block * 32 + j], step * 0.5 * 1.01 + step * 0.002 * 127, $"block {block} value {j}");
            }
        }
        finally
        {
            foreach (var t in weights.Values) t.Dispose();
        }
    }

    [TestMethod]
    public void Q8_0RoundsHalfAwayFromZeroWithAnF16Scale()
    {
        var values = new float[32];
        values[0] = 127; values[1] = -63.5f; values[2] = 0.4f; values[3] = -127;
        using var stream = new MemoryStream();
        GgufQuantizer.Write(stream, values, GgmlType.Q8_0);
        byte[] bytes = stream.ToArray();
        Assert.HasCount(34, bytes);
        Assert.AreEqual((Half)1, BitConverter.ToHalf(bytes, 0));
        Assert.AreEqual((127, -64, 0, -127), ((sbyte)bytes[2], (sbyte)bytes[3], (sbyte)bytes[4], (sbyte)bytes[5]));
    }

    [TestMethod]
    public void ModelfileNamesTheGgufStopTokensTemplateAndDefaults()
    {
        using var model = GgufLlamaCppTests.StoriesVariant(c => c);
        string path = Export(model, GgufTensorType.F16, out _);
        string modelfile = File.ReadAllText(Path.ChangeExtension(path, ".Modelfile"));
        StringAssert.Contains(modelfile, "FROM ./stories.gguf\n");
        StringAssert.Contains(modelfile, "TEMPLATE \"\"\"{{ .Prompt }}\"\"\"\n");
        StringAssert.Contains(modelfile, "PARAMETER stop \"</s>\"\n");
        StringAssert.Contains(modelfile, "PARAMETER temperature 0\n");
        StringAssert.Contains(modelfile, "PARAMETER num_predict 64\n");

        var generation = new GenerationOptions { Temperature = 0.7, TopK = 40, TopP = 0.9, Seed = 3, MaxNewTokens = 99 };
        string text = OllamaModelfile.Create("m.gguf", "<|user|>\n{prompt}\n<|assistant|>\n", null, ["</s>", "a\"b"], generation);
        StringAssert.Contains(text, "TEMPLATE \"\"\"<|user|>\n{{ .Prompt }}\n<|assistant|>\n\"\"\"\n");
        StringAssert.Contains(text, "PARAMETER top_k 40\nPARAMETER top_p 0.9\nPARAMETER num_predict 99\nPARAMETER seed 3\n");
        Assert.DoesNotContain("a\"b", text, "a stop Ollama would read differently is left out");
        StringAssert.Contains(OllamaModelfile.Create("m.gguf", "{{ x }} {prompt}", null, [], generation), "TEMPLATE \"\"\"{{ .Prompt }}\"\"\"");
        StringAssert.Contains(OllamaModelfile.Create("m.gguf", null, "{{ messages }}", [], generation), "tokenizer.chat_template");
    }

    [TestMethod]
    public void ByteLevelBpeTokenizersAreWrittenAsGpt2WithMergesTypesAndTheChatTemplate()
    {
        string folder = TinyBpe.WriteFolder(TinyBpe.Json(), """{"eos_token": "<|end|>", "chat_template": "{{ bos_token }}{% for m in messages %}{{ m.content }}{% endfor %}"}""");
        var tokenizer = OrpoTokenizer.Load(folder);
        var writer = new GgufWriter();
        GgufTokenizerMetadata.Build(tokenizer, 270).AddTo(writer);
        string path = Path.Combine(folder, "t.gguf");
        using (var file = File.Create(path)) writer.WriteTo(file);
        var kv = new GgufReader(path).Metadata;
        Assert.AreEqual("gpt2", kv["tokenizer.ggml.model"]);
        Assert.AreEqual("gpt-2", kv["tokenizer.ggml.pre"]);
        var tokens = (object[])kv["tokenizer.ggml.tokens"];
        var types = (object[])kv["tokenizer.ggml.token_type"];
        Assert.HasCount(270, tokens);
        Assert.AreEqual(("hello", "<|end|>", "<tool>", "[PAD269]"), ((string)tokens[TinyBpe.Hello], (string)tokens[TinyBpe.End], (string)tokens[TinyBpe.Tool], (string)tokens[269]));
        Assert.AreEqual((1, 3, 4, 5), ((int)types[TinyBpe.Hello], (int)types[TinyBpe.End], (int)types[TinyBpe.Tool], (int)types[269]));
        CollectionAssert.AreEqual(new object[] { "h e", "l l", "he ll", "hell o", "Ġ w", "Ã ©" }, (object[])kv["tokenizer.ggml.merges"]);
        Assert.AreEqual((uint)TinyBpe.End, kv["tokenizer.ggml.eos_token_id"]);
        Assert.IsFalse((bool)kv["tokenizer.ggml.add_bos_token"]);
        StringAssert.StartsWith((string)kv["tokenizer.chat_template"], "{{ bos_token }}");
    }

    [TestMethod]
    public void Llama3AndQwen2PreTokenizersMapToLlamaCppNames()
    {
        const string llama3 = @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
        const string qwen2 = @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
        foreach (var (regex, normalizer, expected) in new[] { (llama3, (string?)null, "llama-bpe"), (qwen2, "NFC", "qwen2") })
        {
            var json = TinyBpe.Json(SplitThenByteLevel(regex));
            if (normalizer is not null) json["normalizer"] = new JsonObject { ["type"] = normalizer };
            var writer = new GgufWriter();
            GgufTokenizerMetadata.Build(OrpoTokenizer.Load(TinyBpe.WriteFolder(json)), 264).AddTo(writer);
            string path = Path.Combine(TestAssets.NewTempDirectory("orpo-gguf"), "t.gguf");
            using (var file = File.Create(path)) writer.WriteTo(file);
            Assert.AreEqual(expected, new GgufReader(path).Metadata["tokenizer.ggml.pre"]);
        }
    }

    private static JsonObject SplitThenByteLevel(string regex) => new()
    {
        ["type"] = "Sequence",
        ["pretokenizers"] = new JsonArray(
            new JsonObject { ["type"] = "Split", ["pattern"] = new JsonObject { ["Regex"] = regex }, ["behavior"] = "Isolated", ["invert"] = false },
            new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["trim_offsets"] = false, ["use_regex"] = false }),
    };

    [TestMethod]
    public void ATokenizerOrRopeScalingGgufCannotExpressFailsBeforeAnyFileIsWritten()
    {
        var split = SplitThenByteLevel(@"\p{L}+|\s+");
        var tokenizer = OrpoTokenizer.Load(TinyBpe.WriteFolder(TinyBpe.Json(split)));
        using var stories = OrpoTransformer.FromPretrained(new MLContext(seed: 1), TestAssets.Stories260KHf);
        var weights = stories.Model.ExportWeights();
        var network = CausalLanguageModel.Create(stories.Model.Config, weights, tokenizer, CPU, "bpe");
        foreach (var t in weights.Values) t.Dispose();
        using var model = new OrpoTransformer(new MLContext(seed: 1), network, TransformerSettings.ForBaseModel(network.Config), Array.Empty<OrpoStepMetrics>());
        string folder = TestAssets.NewTempDirectory("orpo-gguf");
        var e = Assert.Throws<NotSupportedException>(() => model.SaveGguf(Path.Combine(folder, "m.gguf")));
        StringAssert.Contains(e.Message, "pre-tokenizer");
        StringAssert.Contains(e.Message, "Nothing was written");
        Assert.IsEmpty(Directory.GetFileSystemEntries(folder));

        var yarn = stories.Model.Config with { RopeScaling = new RopeScaling("yarn", 4) };
        var rope = Assert.Throws<NotSupportedException>(() => GgufLlamaMetadata.Validate(yarn));
        StringAssert.Contains(rope.Message, "rope_scaling type 'yarn'");
        var biased = stories.Model.Config with { AttentionBias = true, HeadDim = 16 };
        StringAssert.Contains(Assert.Throws<NotSupportedException>(() => GgufLlamaMetadata.Validate(biased)).Message, "attention biases");
    }
}
