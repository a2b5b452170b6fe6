using Microsoft.ML.Orpo.ModelFiles;
using Microsoft.ML.Orpo.Modeling;
using Microsoft.ML.Orpo.Tests.Infrastructure;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Tests.Modeling;

/// <summary>Tiny random Qwen2- and Mistral-shaped checkpoints load, match the reference forward pass, generate and train.</summary>
[TestClass]
public sealed class ModelFamilyTests
{
    private static string WriteCheckpoint(string architecture, bool tied, int vocab)
    {
        var config = LlamaConfig.FromJson($$"""
            {"architectures": ["{{architecture}}"], "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": {{vocab}}, "max_position_embeddings": 256,
             "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "tie_word_embeddings": {{(tied ? "true" : "false")}},
             "bos_token_id": 1, "eos_token_id": 2}
            """);
        using var scope = NewDisposeScope();
        using var generator = new Generator(42);
        var weights = ModelWeights.ExpectedShapes(config).ToDictionary(e => e.Name,
            e => e.Name.EndsWith("norm.weight", StringComparison.Ordinal) ? ones(e.Shape) : randn(e.Shape, generator: generator) * 0.2);
        string folder = TestAssets.NewTempDirectory(architecture);
        var tokenizer = File.ReadAllBytes(TestAssets.Stories260KTokenizer);
        HuggingFaceFolder.Save(folder, config, weights, new Dictionary<string, byte[]> { ["tokenizer.model"] = tokenizer });
        return folder;
    }

    [TestMethod]
    [DataRow("Qwen2ForCausalLM", true, 600)]
    [DataRow("MistralForCausalLM", false, 512)]
    [DataRow("LlamaForCausalLM", false, 520)]
    public void RandomCheckpointMatchesReferenceGeneratesAndTrains(string architecture, bool tied, int vocab)
    {
        string folder = WriteCheckpoint(architecture, tied, vocab);
        using var model = CausalLanguageModel.Load(folder, null, "cpu");
        Assert.AreEqual(architecture, model.Config.ArchitectureName);
        Assert.AreEqual(architecture == "Qwen2ForCausalLM", model.Network.NamedWeights().Any(w => w.Name.EndsWith("q_proj.bias", StringComparison.Ordinal)));

        var (config, weights) = HuggingFaceFolder.Load(folder);
        using var reference = new ReferenceLlama(config, weights);
        using (var scope = NewDisposeScope())
        using (no_grad())
        {
            var ids = new[] { 1, 300, 17, 42, 511, 7, 99 };
            var expected = reference.Logits(ids);
            var actual = model.Network.Forward(tensor(ids.Select(i => (long)i).ToArray()).unsqueeze(0))[0].to_type(ScalarType.Float64);
            double difference = (expected - actual).abs().max().ToDouble();
            Assert.IsLessThan(1e-4, difference, $"{architecture}: logits differ from the float64 reference by {difference}");
        }

        var ml = new MLContext(seed: 1);
        using var transformer = OrpoTransformer.FromPretrained(ml, folder);
        string text = transformer.Generate("Once upon a time", new GenerationOptions { MaxNewTokens = 12, Temperature = 1, Seed = 3 });
        Assert.IsFalse(string.IsNullOrEmpty(text), "random weights still generate tokens inside the tokenizer's vocabulary");

        var pairs = ml.Data.LoadFromEnumerable(ProtagonistPairs.Create().Train.Take(8).Select(p => new { p.Prompt, p.Chosen, p.Rejected }));
        using var fitted = ml.Transforms.OrpoFineTune(new OrpoOptions
        {
            BaseModelPath = folder, LearningRate = 1e-3, BatchSize = 4, WeightDecay = 0.1, MaxGradNorm = 1.0,
        }).Fit(pairs);
        Assert.HasCount(2, fitted.TrainingHistory);
        Assert.IsTrue(fitted.TrainingHistory.All(m => double.IsFinite(m.Loss) && m.GradNorm > 0));
    }
}
