using Microsoft.ML.Orpo.Modeling;
using Microsoft.ML.Orpo.Tests.Infrastructure;

namespace Microsoft.ML.Orpo.Tests.Modeling;

[TestClass]
public sealed class LlamaConfigTests
{
    [TestMethod]
    public void Stories260KConfigParsesEveryField()
    {
        var config = LlamaConfig.FromJsonFile(Path.Combine(TestAssets.Stories260KHf, "config.json"));
        Assert.AreEqual(ModelArchitecture.Llama, config.Architecture);
        Assert.AreEqual(64, config.HiddenSize);
        Assert.AreEqual(172, config.IntermediateSize);
        Assert.AreEqual(5, config.NumHiddenLayers);
        Assert.AreEqual(8, config.NumAttentionHeads);
        Assert.AreEqual(4, config.NumKeyValueHeads);
        Assert.AreEqual(8, config.HeadDim);
        Assert.AreEqual(512, config.VocabSize);
        Assert.AreEqual(1e-5, config.RmsNormEps);
        Assert.IsTrue(config.TieWordEmbeddings);
        Assert.AreEqual(1, config.BosTokenId);
        Assert.AreEqual(2, config.EosTokenId);
        Assert.AreEqual(260_032, config.ParameterCount());
    }

    [TestMethod]
    public void RoundTripsThroughJson()
    {
        var config = LlamaConfig.FromJsonFile(Path.Combine(TestAssets.Stories260KHf, "config.json"));
        var again = LlamaConfig.FromJson(config.ToJson());
        Assert.AreEqual(config.ToJson(), again.ToJson());
    }

    [TestMethod]
    public void UnsupportedRopeScalingIsAnErrorNotIgnored()
    {
        const string json = """{"architectures":["LlamaForCausalLM"],"hidden_size":8,"intermediate_size":16,"num_hidden_layers":1,"num_attention_heads":2,"vocab_size":10,"rope_scaling":{"rope_type":"yarn","factor":4.0}}""";
        var e = Assert.ThrowsExactly<NotSupportedException>(() => LlamaConfig.FromJson(json));
        StringAssert.Contains(e.Message, "yarn");
    }

    [TestMethod]
    public void Qwen2HasQkvBiasButNoOutputBias()
    {
        const string json = """{"architectures":["Qwen2ForCausalLM"],"hidden_size":8,"intermediate_size":16,"num_hidden_layers":1,"num_attention_heads":2,"num_key_value_heads":1,"vocab_size":10}""";
        var config = LlamaConfig.FromJson(json);
        Assert.IsTrue(config.AttentionBias);
        Assert.IsFalse(config.OutputProjectionBias);
    }

    [TestMethod]
    public void MissingRequiredKeyNamesIt()
    {
        var e = Assert.ThrowsExactly<InvalidDataException>(() => LlamaConfig.FromJson("""{"architectures":["LlamaForCausalLM"],"hidden_size":8,"num_attention_heads":2}"""));
        StringAssert.Contains(e.Message, "intermediate_size");
    }
}
