using Microsoft.ML.Orpo.ModelFiles;
using Microsoft.ML.Orpo.Modeling;
using Microsoft.ML.Orpo.Tests.Infrastructure;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Tests.ModelFiles;

[TestClass]
public sealed class ModelWeightsTests
{
    /// <summary>stories260K: dim 64, hidden 172, 5 layers, 8 heads, 4 kv heads (head_dim 8), vocab 512, tied.</summary>
    private static readonly string[] Stories260KTable =
    [
        "model.embed_tokens.weight [512, 64]",
        "model.layers.0.input_layernorm.weight [64]",
        "model.layers.0.self_attn.q_proj.weight [64, 64]",
        "model.layers.0.self_attn.k_proj.weight [32, 64]",
        "model.layers.0.self_attn.v_proj.weight [32, 64]",
        "model.layers.0.self_attn.o_proj.weight [64, 64]",
        "model.layers.0.post_attention_layernorm.weight [64]",
        "model.layers.0.mlp.gate_proj.weight [172, 64]",
        "model.layers.0.mlp.up_proj.weight [172, 64]",
        "model.layers.0.mlp.down_proj.weight [64, 172]",
        "model.layers.1.input_layernorm.weight [64]",
        "model.layers.1.self_attn.q_proj.weight [64, 64]",
        "model.layers.1.self_attn.k_proj.weight [32, 64]",
        "model.layers.1.self_attn.v_proj.weight [32, 64]",
        "model.layers.1.self_attn.o_proj.weight [64, 64]",
        "model.layers.1.post_attention_layernorm.weight [64]",
        "model.layers.1.mlp.gate_proj.weight [172, 64]",
        "model.layers.1.mlp.up_proj.weight [172, 64]",
        "model.layers.1.mlp.down_proj.weight [64, 172]",
        "model.layers.2.input_layernorm.weight [64]",
        "model.layers.2.self_attn.q_proj.weight [64, 64]",
        "model.layers.2.self_attn.k_proj.weight [32, 64]",
        "model.layers.2.self_attn.v_proj.weight [32, 64]",
        "model.layers.2.self_attn.o_proj.weight [64, 64]",
        "model.layers.2.post_attention_layernorm.weight [64]",
        "model.layers.2.mlp.gate_proj.weight [172, 64]",
        "model.layers.2.mlp.up_proj.weight [172, 64]",
        "model.layers.2.mlp.down_proj.weight [64, 172]",
        "model.layers.3.input_layernorm.weight [64]",
        "model.layers.3.self_attn.q_proj.weight [64, 64]",
        "model.layers.3.self_attn.k_proj.weight [32, 64]",
        "model.layers.3.self_attn.v_proj.weight [32, 64]",
        "model.layers.3.self_attn.o_proj.weight [64, 64]",
        "model.layers.3.post_attention_layernorm.weight [64]",
        "model.layers.3.mlp.gate_proj.weight [172, 64]",
        "model.layers.3.mlp.up_proj.weight [172, 64]",
        "model.layers.3.mlp.down_proj.weight [64, 172]",
        "model.layers.4.input_layernorm.weight [64]",
        "model.layers.4.self_attn.q_proj.weight [64, 64]",
        "model.layers.4.self_attn.k_proj.weight [32, 64]",
        "model.layers.4.self_attn.v_proj.weight [32, 64]",
        "model.layers.4.self_attn.o_proj.weight [64, 64]",
        "model.layers.4.post_attention_layernorm.weight [64]",
        "model.layers.4.mlp.gate_proj.weight [172, 64]",
        "model.layers.4.mlp.up_proj.weight [172, 64]",
        "model.layers.4.mlp.down_proj.weight [64, 172]",
        "model.norm.weight [64]",
    ];

    private static LlamaConfig Stories260KConfig => LlamaConfig.FromJsonFile(Path.Combine(TestAssets.Stories260KHf, "config.json"));

    [TestMethod]
    public void ExpectedShapesListsEveryStories260KTensor()
    {
        IReadOnlyList<WeightShape> shapes = ModelWeights.ExpectedShapes(Stories260KConfig);
        Assert.AreEqual(47, shapes.Count);
        CollectionAssert.AreEqual(Stories260KTable, shapes.Select(s => s.ToString()).ToArray());
        Assert.AreEqual(260_032L, shapes.Sum(s => s.Shape.Aggregate(1L, (a, b) => a * b)), "matches ParameterCount");
    }

    [TestMethod]
    public void ExpectedShapesFollowBiasAndTyingFlags()
    {
        LlamaConfig qwen = LlamaConfig.FromJson(ModelFileTestData.Qwen2ConfigJson);
        var names = ModelWeights.ExpectedShapes(qwen).ToDictionary(s => s.Name, s => s.ShapeText);
        Assert.AreEqual("[32]", names["model.layers.1.self_attn.q_proj.bias"]);
        Assert.AreEqual("[16]", names["model.layers.1.self_attn.k_proj.bias"]);
        Assert.AreEqual("[16]", names["model.layers.1.self_attn.v_proj.bias"]);
        Assert.IsFalse(names.ContainsKey("model.layers.0.self_attn.o_proj.bias"), "Qwen2 has no o_proj bias");
        Assert.IsFalse(names.ContainsKey("lm_head.weight"), "tied");
        Assert.AreEqual(qwen.ParameterCount(), ModelWeights.ExpectedShapes(qwen).Sum(s => s.Shape.Aggregate(1L, (a, b) => a * b)));

        LlamaConfig full = Stories260KConfig with
        {
            TieWordEmbeddings = false, AttentionBias = true, OutputProjectionBias = true, MlpBias = true, HeadDim = 16,
        };
        var all = ModelWeights.ExpectedShapes(full).ToDictionary(s => s.Name, s => s.ShapeText);
        Assert.AreEqual("[512, 64]", all["lm_head.weight"]);
        Assert.AreEqual("lm_head.weight", ModelWeights.ExpectedShapes(full)[^1].Name);
        Assert.AreEqual("[128, 64]", all["model.layers.0.self_attn.q_proj.weight"], "explicit head_dim decouples q width from hidden size");
        Assert.AreEqual("[64, 128]", all["model.layers.0.self_attn.o_proj.weight"]);
        Assert.AreEqual("[64]", all["model.layers.4.self_attn.k_proj.bias"]);
        Assert.AreEqual("[64]", all["model.layers.4.self_attn.o_proj.bias"]);
        Assert.AreEqual("[172]", all["model.layers.2.mlp.up_proj.bias"]);
        Assert.AreEqual("[64]", all["model.layers.2.mlp.down_proj.bias"]);
        Assert.AreEqual(full.ParameterCount(), ModelWeights.ExpectedShapes(full).Sum(s => s.Shape.Aggregate(1L, (a, b) => a * b)));
    }

    [TestMethod]
    public void StrictValidationNamesMissingTensor()
    {
        using var scope = NewDisposeScope();
        var weights = ModelFileTestData.RandomWeights(Stories260KConfig, 1);
        ModelWeights.ValidateStrict(Stories260KConfig, weights, "src");
        weights.Remove("model.layers.3.mlp.up_proj.weight");
        var e = Assert.ThrowsExactly<InvalidDataException>(() => ModelWeights.ValidateStrict(Stories260KConfig, weights, "src"));
        StringAssert.Contains(e.Message, "src");
        StringAssert.Contains(e.Message, "missing tensor 'model.layers.3.mlp.up_proj.weight'");
        StringAssert.Contains(e.Message, "[172, 64]");
    }

    [TestMethod]
    public void StrictValidationNamesUnexpectedTensor()
    {
        using var scope = NewDisposeScope();
        var weights = ModelFileTestData.RandomWeights(Stories260KConfig, 1);
        weights["lm_head.weight"] = zeros(512, 64);
        var e = Assert.ThrowsExactly<InvalidDataException>(() => ModelWeights.ValidateStrict(Stories260KConfig, weights, "src"));
        StringAssert.Contains(e.Message, "unexpected tensor 'lm_head.weight'");
        weights.Remove("lm_head.weight");
        weights["model.layers.0.self_attn.rotary.extra"] = zeros(1);
        e = Assert.ThrowsExactly<InvalidDataException>(() => ModelWeights.ValidateStrict(Stories260KConfig, weights, "src"));
        StringAssert.Contains(e.Message, "unexpected tensor 'model.layers.0.self_attn.rotary.extra'");
    }

    [TestMethod]
    public void StrictValidationNamesMisShapedTensor()
    {
        using var scope = NewDisposeScope();
        var weights = ModelFileTestData.RandomWeights(Stories260KConfig, 1);
        weights["model.layers.2.self_attn.k_proj.weight"] = zeros(64, 64);
        var e = Assert.ThrowsExactly<InvalidDataException>(() => ModelWeights.ValidateStrict(Stories260KConfig, weights, "src"));
        StringAssert.Contains(e.Message, "tensor 'model.layers.2.self_attn.k_proj.weight' has shape [64, 64], expected [32, 64]");
        weights["model.layers.2.self_attn.k_proj.weight"] = zeros(64 * 32);
        e = Assert.ThrowsExactly<InvalidDataException>(() => ModelWeights.ValidateStrict(Stories260KConfig, weights, "src"));
        StringAssert.Contains(e.Message, "has shape [2048], expected [32, 64]", "same element count, wrong rank is still rejected");
    }
}
