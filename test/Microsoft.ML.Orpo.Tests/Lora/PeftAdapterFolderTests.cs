using System.Text.Json.Nodes;
using Microsoft.ML.Orpo.ModelFiles;
using Microsoft.ML.Orpo.Tests.Infrastructure;
using static Microsoft.ML.Orpo.Tests.Lora.LoraPipelineFixtures;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Tests.Lora;

/// <summary>
/// The PEFT adapter folder: exactly the files and keys PEFT writes, a bit-for-bit round trip through
/// <c>FromPretrained(..., adapterPath)</c>, and strict reading (every unsupported or inconsistent field is an error naming it).
/// </summary>
[TestClass]
public sealed class PeftAdapterFolderTests
{
    private static string? freshAdapter;

    /// <summary>A valid all-linear rank-4 adapter (fresh: B zero) that the strictness tests copy and damage.</summary>
    private static string FreshAdapter()
    {
        if (freshAdapter is not null) return freshAdapter;
        var options = Options();
        using var model = OrpoTransformer.FromPretrained(new MLContext(seed: 1), options);
        string dir = TestAssets.NewTempDirectory("orpo-adapter");
        model.SaveAdapter(dir);
        return freshAdapter = dir;
    }

    [TestMethod]
    public void SaveAdapterWritesPeftsConfigAndEveryKeyWithItsShape()
    {
        string dir = SavedFittedAdapter();
        CollectionAssert.AreEqual(new[] { "adapter_config.json", "adapter_model.safetensors" },
            Directory.GetFiles(dir).Select(Path.GetFileName).Order(StringComparer.Ordinal).ToArray());

        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "adapter_config.json")))!.AsObject();
        Assert.AreEqual("LORA", config["peft_type"]!.GetValue<string>());
        Assert.AreEqual(Rank, config["r"]!.GetValue<int>());
        Assert.AreEqual("8", config["lora_alpha"]!.ToJsonString(), "an integer alpha is written as an integer, as PEFT does");
        Assert.AreEqual(0.05, config["lora_dropout"]!.GetValue<double>());
        CollectionAssert.AreEqual(new[] { "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj" },
            config["target_modules"]!.AsArray().Select(t => t!.GetValue<string>()).ToArray());
        Assert.AreEqual("none", config["bias"]!.GetValue<string>());
        Assert.AreEqual(TestAssets.Stories260KHf, config["base_model_name_or_path"]!.GetValue<string>());
        Assert.AreEqual("CAUSAL_LM", config["task_type"]!.GetValue<string>());
        Assert.IsFalse(config["use_dora"]!.GetValue<bool>());
        Assert.IsFalse(config["use_rslora"]!.GetValue<bool>());
        Assert.IsNull(config["modules_to_save"]);
        Assert.IsNull(config["layers_to_transform"]);

        // 5 layers x 7 projections x (A, B): A is (r, in), B is (out, r), all float32.
        var header = Header(Path.Combine(dir, "adapter_model.safetensors"));
        var expected = ExpectedAdapterKeys();
        Assert.HasCount(70, expected);
        CollectionAssert.AreEqual(expected.Keys.ToArray(), header.Keys.ToArray());
        foreach (var (key, shape) in expected)
        {
            CollectionAssert.AreEqual(shape, header[key].Shape, key);
            Assert.AreEqual("F32", header[key].DType, key);
        }
    }

    [TestMethod]
    public void SaveAdapterThenFromPretrainedIsBitForBit()
    {
        string dir = SavedFittedAdapter();
        var ml = new MLContext(seed: 2);
        using var loaded = OrpoTransformer.FromPretrained(ml, TestAssets.Stories260KHf, adapterPath: dir);
        using var plain = OrpoTransformer.FromPretrained(ml, TestAssets.Stories260KHf);
        Assert.IsTrue(loaded.HasAdapter);
        Assert.IsFalse(plain.HasAdapter);

        Assert.IsTrue(BitIdentical(AdapterWeights(Fitted), AdapterWeights(loaded)), "adapter tensors");
        Assert.IsTrue(BitIdentical(AdapterWeights(Fitted), Tensors(Path.Combine(dir, "adapter_model.safetensors"))), "the file holds the weights");
        CollectionAssert.AreEqual(Logits(Fitted), Logits(loaded), "logits");
        string[] generations = FittedGenerations;
        CollectionAssert.AreEqual(generations, Generations(loaded));
        CollectionAssert.AreNotEqual(Logits(plain), Logits(loaded), "the adapter changes the model");

        string again = TestAssets.NewTempDirectory("orpo-adapter");
        loaded.SaveAdapter(again);
        AssertSameFiles(dir, again);
    }

    // ---- strict reading: each error names the field or the tensor ----

    private static string Copy(Action<JsonObject>? config = null, Action<Dictionary<string, Tensor>>? tensors = null)
    {
        string source = FreshAdapter();
        string dir = TestAssets.NewTempDirectory("orpo-adapter-bad");
        var json = JsonNode.Parse(File.ReadAllText(Path.Combine(source, "adapter_config.json")))!.AsObject();
        config?.Invoke(json);
        File.WriteAllText(Path.Combine(dir, "adapter_config.json"), json.ToJsonString());
        var weights = SafeTensorsReader.Read(Path.Combine(source, "adapter_model.safetensors"));
        try
        {
            tensors?.Invoke(weights);
            SafeTensorsWriter.Write(Path.Combine(dir, "adapter_model.safetensors"), weights);
        }
        finally
        {
            foreach (var t in weights.Values) t.Dispose();
        }
        return dir;
    }

    private static Exception AssertLoadFails(string dir, params string[] fragments)
    {
        var error = Assert.Throws<Exception>(() => OrpoTransformer.FromPretrained(new MLContext(seed: 1), TestAssets.Stories260KHf, adapterPath: dir).Dispose());
        Assert.IsTrue(error is InvalidDataException or FileNotFoundException, error.ToString());
        foreach (string fragment in fragments) StringAssert.Contains(error.Message, fragment);
        return error;
    }

    [TestMethod]
    [DataRow("r", "0", "r must be a positive integer")]
    [DataRow("r", "-4", "r must be a positive integer")]
    [DataRow("use_dora", "1", "use_dora must be true or false")]
    [DataRow("use_rslora", "\"yes\"", "use_rslora must be true or false")]
    [DataRow("init_lora_weights", "\"pissa\"", "changes the base weights")]
    [DataRow("init_lora_weights", "\"pissa_niter_4\"", "path_initial_model_for_weight_conversion")]
    [DataRow("init_lora_weights", "\"olora\"", "changes the base weights")]
    [DataRow("init_lora_weights", "\"loftq\"", "changes the base weights")]
    [DataRow("bias", "\"all\"", "bias")]
    [DataRow("bias", "\"lora_only\"", "bias")]
    [DataRow("modules_to_save", "[\"lm_head\"]", "modules_to_save")]
    [DataRow("layers_to_transform", "[0, 1]", "layers_to_transform")]
    [DataRow("rank_pattern", "{\"q_proj\": 8}", "rank_pattern")]
    [DataRow("alpha_pattern", "{\"q_proj\": 16}", "alpha_pattern")]
    [DataRow("peft_type", "\"IA3\"", "peft_type")]
    [DataRow("target_modules", "[\"foo_proj\"]", "foo_proj")]
    public void AnUnsupportedOrInvalidConfigFieldIsRejectedByName(string field, string json, string expected)
    {
        string dir = Copy(config: c => c[field] = JsonNode.Parse(json));
        var error = AssertLoadFails(dir, expected, "adapter_config.json");
        StringAssert.Contains(error.Message, field);
    }

    [TestMethod]
    public void ARegexTargetMatchingOnlySomeLayersIsRejectedAndOneMatchingAllLoads()
    {
        string some = Copy(config: c => c["target_modules"] = @"model\.layers\.[0-2]\.self_attn\.q_proj");
        AssertLoadFails(some, "target_modules", "some layers", "model.layers.3.self_attn.q_proj");

        // PEFT's regex form over the module path, matching every projection of every layer: the same adapter as the list.
        string all = Copy(config: c => c["target_modules"] = @".*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)");
        string allLinear = Copy(config: c => c["target_modules"] = "all-linear");
        var ml = new MLContext(seed: 1);
        using var byList = OrpoTransformer.FromPretrained(ml, TestAssets.Stories260KHf, adapterPath: FreshAdapter());
        using var byRegex = OrpoTransformer.FromPretrained(ml, TestAssets.Stories260KHf, adapterPath: all);
        using var byAllLinear = OrpoTransformer.FromPretrained(ml, TestAssets.Stories260KHf, adapterPath: allLinear);
        Assert.IsTrue(BitIdentical(AdapterWeights(byList), AdapterWeights(byRegex)));
        Assert.IsTrue(BitIdentical(AdapterWeights(byList), AdapterWeights(byAllLinear)));
        CollectionAssert.AreEqual(LoraOptions.AllLinear.ToArray(), byRegex.Model.Network.Adapters!.Config.TargetModules.ToArray());
    }

    [TestMethod]
    [DataRow("false")]
    [DataRow("\"gaussian\"")]
    [DataRow("\"eva\"")]
    public void AnInitialisationThatLeavesTheBaseAloneLoadsAsPlainLora(string init)
    {
        // Only the starting point differs (B need not start at zero); the trained weights are read as stored.
        string dir = Copy(config: c => c["init_lora_weights"] = JsonNode.Parse(init));
        using var model = OrpoTransformer.FromPretrained(new MLContext(seed: 1), TestAssets.Stories260KHf, adapterPath: dir);
        using var plain = OrpoTransformer.FromPretrained(new MLContext(seed: 1), TestAssets.Stories260KHf, adapterPath: FreshAdapter());
        Assert.IsTrue(BitIdentical(AdapterWeights(plain), AdapterWeights(model)));
    }

    [TestMethod]
    public void AMissingUnexpectedOrMisshapedTensorIsRejectedByKey()
    {
        const string down = "base_model.model.model.layers.4.mlp.down_proj.lora_B.weight";
        AssertLoadFails(Copy(tensors: t => { t[down].Dispose(); t.Remove(down); }), "missing tensor", down);

        const string extra = "base_model.model.lm_head.lora_A.weight";
        AssertLoadFails(Copy(tensors: t => t[extra] = zeros(Rank, 64)), "unexpected tensor", extra);

        const string q = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight";
        AssertLoadFails(Copy(tensors: t => { t[q].Dispose(); t[q] = zeros(Rank, 63); }), q, "[4, 63]", "expected [4, 64]");

        // A config naming fewer targets than the file holds: the extra tensors are unexpected, not ignored.
        AssertLoadFails(Copy(config: c => c["target_modules"] = new JsonArray("q_proj", "v_proj")),
            "unexpected tensor", "base_model.model.model.layers.0.mlp.down_proj.lora_A.weight");
    }

    [TestMethod]
    public void APickleOnlyFolderIsRefusedNamingAdapterModelBin()
    {
        string dir = Copy();
        File.Move(Path.Combine(dir, "adapter_model.safetensors"), Path.Combine(dir, "adapter_model.bin"));
        var error = AssertLoadFails(dir, "adapter_model.bin", "adapter_model.safetensors");
        Assert.IsInstanceOfType<FileNotFoundException>(error);
    }
}
