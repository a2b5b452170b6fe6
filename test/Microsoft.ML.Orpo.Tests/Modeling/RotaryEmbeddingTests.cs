using Microsoft.ML.Orpo.Modeling;

namespace Microsoft.ML.Orpo.Tests.Modeling;

[TestClass]
public sealed class RotaryEmbeddingTests
{
    private static LlamaConfig Config(string ropeScaling) => LlamaConfig.FromJson($$"""
        {"architectures": ["LlamaForCausalLM"], "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
         "num_attention_heads": 2, "vocab_size": 10, "rope_theta": 500000.0, "rope_scaling": {{ropeScaling}}}
        """);

    [TestMethod]
    public void UnscaledFrequenciesAreThetaPowers()
    {
        var inv = new RotaryEmbedding(Config("null")).InverseFrequencies;
        double[] expected = { 1, 0.037606030930863936, 0.0014142135623730952, 5.318295896944989e-05 }; // 500000^(-i/4)
        for (int i = 0; i < 4; i++) Assert.AreEqual(expected[i], inv[i], 1e-15 * Math.Max(1, expected[i]));
    }

    [TestMethod]
    public void LinearScalingDividesEveryFrequency()
    {
        var plain = new RotaryEmbedding(Config("null")).InverseFrequencies;
        var scaled = new RotaryEmbedding(Config("""{"type": "linear", "factor": 4.0}""")).InverseFrequencies;
        for (int i = 0; i < 4; i++) Assert.AreEqual(plain[i] / 4, scaled[i], 1e-18);
    }

    [TestMethod]
    public void Llama3ScalingKeepsHighFrequenciesAndSmoothsTheMiddleBand()
    {
        var plain = new RotaryEmbedding(Config("null")).InverseFrequencies;
        var scaled = new RotaryEmbedding(Config("""
            {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
            """)).InverseFrequencies;
        // Wavelengths 2*pi/inv: 6.3 and 167 (< 8192/4: kept), 4443 (between 2048 and 8192: blended), 118140 (> 8192: / 8).
        Assert.AreEqual(plain[0], scaled[0]);
        Assert.AreEqual(plain[1], scaled[1]);
        double smooth = (8192 / (2 * Math.PI / plain[2]) - 1) / (4 - 1);
        Assert.AreEqual(0.2813, smooth, 1e-3, "hand-computed blend weight");
        Assert.AreEqual((1 - smooth) * plain[2] / 8 + smooth * plain[2], scaled[2], 1e-15);
        Assert.AreEqual(plain[3] / 8, scaled[3], 1e-18);
    }
}
