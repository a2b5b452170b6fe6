using System.Text;
using System.Text.Json;
using Microsoft.ML.Orpo.ModelFiles;
using Microsoft.ML.Orpo.Modeling;
using Microsoft.ML.Orpo.Tests.Infrastructure;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Tests.ModelFiles;

[TestClass]
public sealed class HuggingFaceFolderTests
{
    [TestMethod]
    public void LoadsStories260KWithEveryExpectedKeyAndShape()
    {
        using var scope = NewDisposeScope();
        var (config, weights) = HuggingFaceFolder.Load(TestAssets.Stories260KHf);
        Assert.AreEqual(64, config.HiddenSize);
        Assert.IsTrue(config.TieWordEmbeddings);
        var expected = ModelWeights.ExpectedShapes(config);
        Assert.AreEqual(47, weights.Count);
        CollectionAssert.AreEquivalent(expected.Select(e => e.Name).ToList(), weights.Keys.ToList());
        foreach (WeightShape e in expected)
        {
            CollectionAssert.AreEqual(e.Shape, weights[e.Name].shape, e.Name);
            Assert.AreEqual(ScalarType.Float32, weights[e.Name].dtype);
        }
        Assert.IsFalse(weights.ContainsKey("lm_head.weight"));
    }

    [TestMethod]
    public void LoadsInRequestedDType()
    {
        using var scope = NewDisposeScope();
        var (_, f32) = HuggingFaceFolder.Load(TestAssets.Stories260KHf);
        var (_, bf16) = HuggingFaceFolder.Load(TestAssets.Stories260KHf, ScalarType.BFloat16);
        Assert.AreEqual(ScalarType.BFloat16, bf16["model.norm.weight"].dtype);
        Tensor diff = (bf16["model.embed_tokens.weight"].to_type(ScalarType.Float32) - f32["model.embed_tokens.weight"]).abs();
        Tensor bound = f32["model.embed_tokens.weight"].abs() * (1.0 / 256);
        Assert.IsTrue(diff.le(bound).all().item<bool>(), "bf16 rounding error is within half an ulp of 8 mantissa bits");
    }

    [TestMethod]
    public void ExportThenImportRoundTripsEveryTensorBitForBit()
    {
        using var scope = NewDisposeScope();
        var (config, weights) = HuggingFaceFolder.Load(TestAssets.Stories260KHf);
        byte[] tokenizer = File.ReadAllBytes(TestAssets.Stories260KTokenizer);
        string folder = TestAssets.NewTempDirectory();
        HuggingFaceFolder.Save(folder, config, weights, new Dictionary<string, byte[]> { ["tokenizer.model"] = tokenizer });

        CollectionAssert.AreEquivalent(
            new[] { "config.json", "generation_config.json", "model.safetensors", "tokenizer.model" },
            Directory.GetFiles(folder).Select(Path.GetFileName).ToList(), "exactly these files, no temporaries");
        CollectionAssert.AreEqual(tokenizer, File.ReadAllBytes(Path.Combine(folder, "tokenizer.model")));
        SafeTensorsHeader header = SafeTensorsReader.ReadHeader(Path.Combine(folder, "model.safetensors"));
        Assert.IsFalse(header.Entries.Any(e => e.Name == "lm_head.weight"), "tied model: no lm_head.weight in the file");
        Assert.AreEqual(47, header.Entries.Count);
        Assert.AreEqual("pt", header.Metadata["format"]);
        using (JsonDocument generation = JsonDocument.Parse(File.ReadAllText(Path.Combine(folder, "generation_config.json"))))
        {
            Assert.AreEqual(1, generation.RootElement.GetProperty("bos_token_id").GetInt32());
            Assert.AreEqual(2, generation.RootElement.GetProperty("eos_token_id").GetInt32());
        }
        using (JsonDocument json = JsonDocument.Parse(File.ReadAllText(Path.Combine(folder, "config.json"))))
        {
            Assert.AreEqual("LlamaForCausalLM", json.RootElement.GetProperty("architectures")[0].GetString());
            Assert.AreEqual("llama", json.RootElement.GetProperty("model_type").GetString());
            Assert.IsTrue(json.RootElement.GetProperty("tie_word_embeddings").GetBoolean());
        }

        var (config2, weights2) = HuggingFaceFolder.Load(folder);
        Assert.AreEqual(config.ToJson(), config2.ToJson());
        ModelFileTestData.AssertBitEqual(weights, weights2);

    }

    [TestMethod]
    public void UntiedExportWritesLmHeadAndTiedExportDropsAPassedLmHead()
    {
        using var scope = NewDisposeScope();
        LlamaConfig mistral = LlamaConfig.FromJson(ModelFileTestData.MistralConfigJson);
        var weights = ModelFileTestData.RandomWeights(mistral, 3);
        string folder = TestAssets.NewTempDirectory();
        HuggingFaceFolder.Save(folder, mistral, weights);
        Assert.IsTrue(SafeTensorsReader.ReadHeader(Path.Combine(folder, "model.safetensors")).Entries.Any(e => e.Name == "lm_head.weight"));
        var (again, loaded) = HuggingFaceFolder.Load(folder);
        Assert.AreEqual(mistral.ToJson(), again.ToJson());
        Assert.AreEqual(64, again.SlidingWindow);
        ModelFileTestData.AssertBitEqual(weights, loaded);

        LlamaConfig tied = mistral with { TieWordEmbeddings = true };
        string tiedFolder = TestAssets.NewTempDirectory();
        HuggingFaceFolder.Save(tiedFolder, tied, weights); // weights still carry lm_head.weight, as a tied state dict does
        Assert.IsFalse(SafeTensorsReader.ReadHeader(Path.Combine(tiedFolder, "model.safetensors")).Entries.Any(e => e.Name == "lm_head.weight"));
        Assert.AreEqual(weights.Count - 1, HuggingFaceFolder.Load(tiedFolder).Weights.Count);
    }

    [TestMethod]
    public void SaveRejectsWrongWeightsAndUnsafeTokenizerNames()
    {
        using var scope = NewDisposeScope();
        LlamaConfig mistral = LlamaConfig.FromJson(ModelFileTestData.MistralConfigJson);
        var weights = ModelFileTestData.RandomWeights(mistral, 3);
        string folder = TestAssets.NewTempDirectory();
        weights.Remove("model.layers.1.self_attn.v_proj.weight");
        var e = Assert.ThrowsExactly<InvalidDataException>(() => HuggingFaceFolder.Save(folder, mistral, weights));
        StringAssert.Contains(e.Message, "model.layers.1.self_attn.v_proj.weight");
        Assert.AreEqual(0, Directory.GetFiles(folder).Length, "nothing written");

        weights = ModelFileTestData.RandomWeights(mistral, 3);
        Assert.ThrowsExactly<ArgumentException>(() => HuggingFaceFolder.Save(folder, mistral, weights,
            new Dictionary<string, byte[]> { ["../evil.model"] = [1] }));
        Assert.ThrowsExactly<ArgumentException>(() => HuggingFaceFolder.Save(folder, mistral, weights,
            new Dictionary<string, byte[]> { ["config.json"] = [1] }));
    }

    [TestMethod]
    public void LoadsQwen2ShapedCheckpointWithAttentionBiases()
    {
        using var scope = NewDisposeScope();
        string folder = TestAssets.NewTempDirectory();
        File.WriteAllText(Path.Combine(folder, "config.json"), ModelFileTestData.Qwen2ConfigJson);
        LlamaConfig config = LlamaConfig.FromJson(ModelFileTestData.Qwen2ConfigJson);
        var weights = ModelFileTestData.RandomWeights(config, 11);
        Assert.IsTrue(weights.ContainsKey("model.layers.0.self_attn.q_proj.bias"));
        SafeTensorsWriter.Write(Path.Combine(folder, "model.safetensors"), weights, SafeTensorsDType.BF16);

        var (loadedConfig, loaded) = HuggingFaceFolder.Load(folder);
        Assert.AreEqual(ModelArchitecture.Qwen2, loadedConfig.Architecture);
        Assert.IsTrue(loadedConfig.AttentionBias);
        Assert.IsFalse(loadedConfig.OutputProjectionBias);
        Assert.IsNull(loadedConfig.SlidingWindow, "use_sliding_window false");
        Assert.AreEqual(ModelWeights.ExpectedShapes(config).Count, loaded.Count);
        foreach (var (name, t) in weights)
        {
            Tensor rounded = t.to_type(ScalarType.BFloat16).to_type(ScalarType.Float32);
            CollectionAssert.AreEqual(ModelFileTestData.Bytes(rounded), ModelFileTestData.Bytes(loaded[name]), name);
        }

        // Strict: a Qwen2 file without its q bias is rejected, naming the tensor.
        weights.Remove("model.layers.1.self_attn.q_proj.bias");
        SafeTensorsWriter.Write(Path.Combine(folder, "model.safetensors"), weights);
        var e = Assert.ThrowsExactly<InvalidDataException>(() => HuggingFaceFolder.Load(folder));
        StringAssert.Contains(e.Message, "missing tensor 'model.layers.1.self_attn.q_proj.bias'");
        StringAssert.Contains(e.Message, folder);
    }

    [TestMethod]
    public void LoadsTwoShardMistralCheckpoint()
    {
        using var scope = NewDisposeScope();
        LlamaConfig config = LlamaConfig.FromJson(ModelFileTestData.MistralConfigJson);
        var weights = ModelFileTestData.RandomWeights(config, 5);
        string folder = WriteSharded(config, weights, shard => shard);

        var (loadedConfig, loaded) = HuggingFaceFolder.Load(folder);
        Assert.AreEqual(ModelArchitecture.Mistral, loadedConfig.Architecture);
        Assert.AreEqual(64, loadedConfig.SlidingWindow);
        Assert.IsFalse(loadedConfig.TieWordEmbeddings);
        ModelFileTestData.AssertBitEqual(weights, loaded);
    }

    [TestMethod]
    public void ShardIndexPathTraversalIsRejected()
    {
        using var scope = NewDisposeScope();
        LlamaConfig config = LlamaConfig.FromJson(ModelFileTestData.MistralConfigJson);
        var weights = ModelFileTestData.RandomWeights(config, 5);
        foreach (string evil in new[] { "../x.safetensors", "sub/../../x.safetensors", "/tmp/x.safetensors", "..\\x.safetensors" })
        {
            string folder = WriteSharded(config, weights, shard => shard == "model-00002-of-00002.safetensors" ? evil : shard);
            // Make the traversal target exist, so only the path check can stop it.
            SafeTensorsWriter.Write(Path.Combine(folder, "..", "x.safetensors"), weights);
            var e = Assert.ThrowsExactly<InvalidDataException>(() => HuggingFaceFolder.Load(folder), evil);
            StringAssert.Contains(e.Message, evil);
            StringAssert.Contains(e.Message, "model.safetensors.index.json");
        }
    }

    [TestMethod]
    public void ShardIndexMismatchesAreRejected()
    {
        using var scope = NewDisposeScope();
        LlamaConfig config = LlamaConfig.FromJson(ModelFileTestData.MistralConfigJson);
        var weights = ModelFileTestData.RandomWeights(config, 5);

        // The index places lm_head.weight in shard 1, but it is written to shard 2.
        string folder = WriteSharded(config, weights, shard => shard, indexOverride: ("lm_head.weight", "model-00001-of-00002.safetensors"));
        var e = Assert.ThrowsExactly<InvalidDataException>(() => HuggingFaceFolder.Load(folder));
        StringAssert.Contains(e.Message, "'lm_head.weight'");

        // A shard listed in the index does not exist.
        folder = WriteSharded(config, weights, shard => shard);
        File.Delete(Path.Combine(folder, "model-00002-of-00002.safetensors"));
        e = Assert.ThrowsExactly<InvalidDataException>(() => HuggingFaceFolder.Load(folder));
        StringAssert.Contains(e.Message, "model-00002-of-00002.safetensors");

        // Malformed index JSON.
        File.WriteAllText(Path.Combine(folder, "model.safetensors.index.json"), "{\"weight_map\": [");
        e = Assert.ThrowsExactly<InvalidDataException>(() => HuggingFaceFolder.Load(folder));
        StringAssert.Contains(e.Message, "not valid JSON");
    }

    [TestMethod]
    public void MissingFilesAreReported()
    {
        string folder = TestAssets.NewTempDirectory();
        Assert.ThrowsExactly<FileNotFoundException>(() => HuggingFaceFolder.Load(folder));
        File.WriteAllText(Path.Combine(folder, "config.json"), ModelFileTestData.MistralConfigJson);
        var e = Assert.ThrowsExactly<FileNotFoundException>(() => HuggingFaceFolder.Load(folder));
        StringAssert.Contains(e.Message, "model.safetensors");
        Assert.ThrowsExactly<DirectoryNotFoundException>(() => HuggingFaceFolder.Load(Path.Combine(folder, "nope")));
    }

    /// <summary>
    /// Writes config.json, two shards (embedding + layer 0 in the first, the rest in the second) and an index whose
    /// shard names pass through <paramref name="rename"/>.
    /// </summary>
    private static string WriteSharded(LlamaConfig config, Dictionary<string, Tensor> weights, Func<string, string> rename,
        (string Tensor, string Shard)? indexOverride = null)
    {
        const string first = "model-00001-of-00002.safetensors", second = "model-00002-of-00002.safetensors";
        string folder = Path.Combine(TestAssets.NewTempDirectory(), "ckpt");
        Directory.CreateDirectory(folder);
        File.WriteAllText(Path.Combine(folder, "config.json"), config.ToJson());
        string ShardOf(string name) =>
            name.StartsWith("model.embed_tokens", StringComparison.Ordinal) || name.StartsWith("model.layers.0.", StringComparison.Ordinal)
                ? first : second;
        foreach (string shard in new[] { first, second })
            SafeTensorsWriter.Write(Path.Combine(folder, shard),
                weights.Where(p => ShardOf(p.Key) == shard).ToDictionary(p => p.Key, p => p.Value));
        var map = weights.Keys.ToDictionary(k => k, k => rename(ShardOf(k)));
        if (indexOverride is { } o) map[o.Tensor] = o.Shard;
        var index = new { metadata = new { total_size = 0 }, weight_map = map };
        // Encoding.UTF8 writes a byte-order mark, as some Windows tools do; the loader tolerates it.
        File.WriteAllText(Path.Combine(folder, "model.safetensors.index.json"), JsonSerializer.Serialize(index), Encoding.UTF8);
        return folder;
    }
}
