using System.Diagnostics;
using System.Text.Json.Nodes;
using Microsoft.ML.Orpo.ModelFiles;
using Microsoft.ML.Orpo.Modeling;
using Microsoft.ML.Orpo.Tests.ModelFiles;
using Microsoft.ML.Orpo.Tests.Infrastructure;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Tests.Modeling;

/// <summary>
/// Published architectures at 2 layers, random-init (std 0.02, fixed seed) with their real tokenizer files: each
/// loads, trains ORPO steps, generates, and survives a Hugging Face export and reload bit for bit.
/// </summary>
[TestClass]
public sealed class RealArchitectureTests
{
    public TestContext TestContext { get; set; } = null!;

    private sealed record Architecture(string ConfigJson, string GenerationJson, string Tokenizer);

    // The published config.json / generation_config.json values with num_hidden_layers 2.
    private static readonly Dictionary<string, Architecture> Architectures = new()
    {
        // Real heads (32), KV heads (8), head_dim (64), vocab, rope theta and llama3 scaling, tying; hidden 2048 -> 512
        // and intermediate 8192 -> 2048 (head_dim given explicitly): at the real widths a run took 3.5 minutes here.
        ["Llama-3.2-1B"] = new("""
            {"architectures": ["LlamaForCausalLM"], "attention_bias": false, "attention_dropout": 0.0, "bos_token_id": 128000,
             "eos_token_id": [128001, 128008, 128009], "head_dim": 64, "hidden_act": "silu", "hidden_size": 512,
             "initializer_range": 0.02, "intermediate_size": 2048, "max_position_embeddings": 131072, "mlp_bias": false,
             "model_type": "llama", "num_attention_heads": 32, "num_hidden_layers": 2, "num_key_value_heads": 8,
             "pretraining_tp": 1, "rms_norm_eps": 1e-05,
             "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0, "original_max_position_embeddings": 8192, "rope_type": "llama3"},
             "rope_theta": 500000.0, "tie_word_embeddings": true, "torch_dtype": "bfloat16", "transformers_version": "4.45.0.dev0",
             "use_cache": true, "vocab_size": 128256}
            """, """
            {"bos_token_id": 128000, "do_sample": true, "eos_token_id": [128001, 128008, 128009], "temperature": 0.6, "top_p": 0.9,
             "transformers_version": "4.45.0.dev0"}
            """, "llama3"),
        ["Qwen2.5-0.5B"] = new("""
            {"architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643, "eos_token_id": 151643,
             "hidden_act": "silu", "hidden_size": 896, "initializer_range": 0.02, "intermediate_size": 4864,
             "max_position_embeddings": 32768, "max_window_layers": 24, "model_type": "qwen2", "num_attention_heads": 14,
             "num_hidden_layers": 2, "num_key_value_heads": 2, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
             "sliding_window": 32768, "tie_word_embeddings": true, "torch_dtype": "bfloat16", "transformers_version": "4.40.1",
             "use_cache": true, "use_sliding_window": false, "vocab_size": 151936}
            """, """
            {"bos_token_id": 151643, "do_sample": false, "eos_token_id": 151643, "max_new_tokens": 2048, "transformers_version": "4.37.0"}
            """, "qwen3"),
        // No SmolLM2 tokenizer is here: Mistral's 32000-piece file stands in (every id fits the 49152 vocabulary), so
        // bos/eos are that file's 1/2 instead of SmolLM2's 0/0.
        ["SmolLM2-135M"] = new("""
            {"architectures": ["LlamaForCausalLM"], "attention_bias": false, "attention_dropout": 0.0, "bos_token_id": 1,
             "eos_token_id": 2, "hidden_act": "silu", "hidden_size": 576, "initializer_range": 0.041666666666666664,
             "intermediate_size": 1536, "is_llama_config": true, "max_position_embeddings": 8192, "model_type": "llama",
             "num_attention_heads": 9, "num_hidden_layers": 2, "num_key_value_heads": 3, "pretraining_tp": 1,
             "rms_norm_eps": 1e-05, "rope_interleaved": false, "rope_scaling": null, "rope_theta": 100000,
             "tie_word_embeddings": true, "torch_dtype": "bfloat16", "transformers_version": "4.42.3", "use_cache": true,
             "vocab_size": 49152}
            """, """{"bos_token_id": 1, "eos_token_id": 2, "transformers_version": "4.42.3"}""", "mistral-7b-v0.1"),
        // Real heads (32), KV heads (8), head_dim (128), vocab, rope and window; hidden 4096 -> 1024 and intermediate
        // 14336 -> 3584 (head_dim given explicitly) because the real widths need ~11 GB for AdamW training on this machine.
        ["Mistral-7B-v0.1"] = new("""
            {"architectures": ["MistralForCausalLM"], "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu",
             "hidden_size": 1024, "head_dim": 128, "initializer_range": 0.02, "intermediate_size": 3584,
             "max_position_embeddings": 32768, "model_type": "mistral", "num_attention_heads": 32, "num_hidden_layers": 2,
             "num_key_value_heads": 8, "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "sliding_window": 4096,
             "tie_word_embeddings": false, "torch_dtype": "bfloat16", "transformers_version": "4.34.0.dev0",
             "use_cache": true, "vocab_size": 32000}
            """, """{"bos_token_id": 1, "eos_token_id": 2, "transformers_version": "4.34.0.dev0"}""", "mistral-7b-v0.1"),
    };

    // The published widths of the two models scaled above; ORPO_REAL_WIDTHS=1 runs them (minutes and ~11 GB, not in CI).
    private static readonly Dictionary<string, (int Hidden, int Intermediate)> PublishedWidths = new()
    {
        ["Llama-3.2-1B"] = (2048, 8192),
        ["Mistral-7B-v0.1"] = (4096, 14336),
    };

    private static string ConfigJson(string name)
    {
        string json = Architectures[name].ConfigJson;
        if (Environment.GetEnvironmentVariable("ORPO_REAL_WIDTHS") != "1" || !PublishedWidths.TryGetValue(name, out var widths)) return json;
        var config = JsonNode.Parse(json)!.AsObject();
        config["hidden_size"] = widths.Hidden;
        config["intermediate_size"] = widths.Intermediate;
        return config.ToJsonString();
    }

    private static string TokenizerFolder(string name) => Path.Combine(AppContext.BaseDirectory, "TestData", "tokenizers", name);

    private static string WriteCheckpoint(string configJson, string generationJson, string tokenizer)
    {
        var config = LlamaConfig.FromJson(configJson);
        string folder = TestAssets.NewTempDirectory("real-architecture");
        using (var scope = NewDisposeScope())
        {
            using var generator = new Generator(20);
            var weights = ModelWeights.ExpectedShapes(config).ToDictionary(e => e.Name,
                e => e.Name.EndsWith("norm.weight", StringComparison.Ordinal) ? ones(e.Shape) : randn(e.Shape, generator: generator) * 0.02);
            var files = new[] { "tokenizer.json", "tokenizer_config.json" }
                .ToDictionary(f => f, f => File.ReadAllBytes(Path.Combine(TokenizerFolder(tokenizer), f)));
            HuggingFaceFolder.Save(folder, config, weights, files, GenerationConfig.FromJson(generationJson));
        }
        // config.json exactly as published (the writer's own rendering is checked by the export below).
        File.WriteAllText(Path.Combine(folder, HuggingFaceFolder.ConfigFileName), configJson);
        return folder;
    }

    private static double PeakResidentMegabytes() =>
        File.ReadLines("/proc/self/status").Where(l => l.StartsWith("VmHWM:", StringComparison.Ordinal))
            .Select(l => double.Parse(l.Split([' ', '\t'], StringSplitOptions.RemoveEmptyEntries)[1], System.Globalization.CultureInfo.InvariantCulture) / 1024)
            .FirstOrDefault(); // "VmHWM:\t 4800000 kB", or with no space once the figure has eight digits

    private static Tensor Logits(OrpoTransformer model, IReadOnlyList<int> ids)
    {
        using var noGrad = no_grad();
        return model.Model.Network.Forward(tensor(ids.Select(i => (long)i).ToArray()).unsqueeze(0));
    }

    [TestMethod]
    [DataRow("Llama-3.2-1B")]
    [DataRow("Qwen2.5-0.5B")]
    [DataRow("SmolLM2-135M")]
    [DataRow("Mistral-7B-v0.1")]
    public void LoadsTrainsGeneratesAndRoundTripsThroughHuggingFaceExport(string name)
    {
        var architecture = Architectures[name] with { ConfigJson = ConfigJson(name) };
        var clock = Stopwatch.StartNew();
        string folder = WriteCheckpoint(architecture.ConfigJson, architecture.GenerationJson, architecture.Tokenizer);
        string export = TestAssets.NewTempDirectory("real-architecture-export");
        try
        {
            var ml = new MLContext(seed: 1);
            var pairs = ml.Data.LoadFromEnumerable(ProtagonistPairs.Create().Train.Take(2).Select(p => new { p.Prompt, p.Chosen, p.Rejected }));
            using var fitted = ml.Transforms.OrpoFineTune(new OrpoOptions
            {
                BaseModelPath = folder, LearningRate = 1e-4, BatchSize = 1, MaxLength = 64, Shuffle = false,
            }).Fit(pairs);
            var expectedConfig = LlamaConfig.FromJson(architecture.ConfigJson);
            Assert.AreEqual(expectedConfig.ToJson(), fitted.Model.Config.ToJson());
            Assert.HasCount(2, fitted.TrainingHistory);
            Assert.IsTrue(fitted.TrainingHistory.All(m => double.IsFinite(m.Loss) && m.GradNorm > 0), name);
            Assert.AreEqual(name == "Qwen2.5-0.5B", fitted.Model.Network.NamedWeights().Any(w => w.Name.EndsWith("k_proj.bias", StringComparison.Ordinal)));
            Assert.AreEqual(expectedConfig.TieWordEmbeddings, !fitted.Model.Network.NamedWeights().Any(w => w.Name == "lm_head.weight"));
            long trained = clock.ElapsedMilliseconds;

            var greedy = new GenerationOptions { MaxNewTokens = 8 };
            string text = fitted.Generate("Once upon a time", greedy);

            fitted.SaveHuggingFace(export);
            var exported = GenerationConfig.FromJson(File.ReadAllText(Path.Combine(export, HuggingFaceFolder.GenerationConfigFileName)));
            Assert.IsTrue(JsonNode.DeepEquals(JsonNode.Parse(architecture.GenerationJson), JsonNode.Parse(exported.ToJson())), name);
            var (savedConfig, saved) = HuggingFaceFolder.Load(export);
            try
            {
                Assert.AreEqual(expectedConfig.ToJson(), savedConfig.ToJson());
                var own = fitted.Model.ExportWeights();
                try { ModelFileTestData.AssertBitEqual(own, saved); }
                finally { foreach (var t in own.Values) t.Dispose(); }
            }
            finally
            {
                foreach (var t in saved.Values) t.Dispose();
            }

            using var reloaded = OrpoTransformer.FromPretrained(ml, export);
            var ids = fitted.Encode("Once upon a time", " there was a cat", " there was a dog").PromptIds
                .Concat(fitted.Encode("Once upon a time", " there was a cat", " there was a dog").ChosenIds).ToArray();
            using (var scope = NewDisposeScope())
                Assert.IsTrue(Logits(fitted, ids).equal(Logits(reloaded, ids)).all().item<bool>(), $"{name}: logits differ after export and reload");
            Assert.AreEqual(text, reloaded.Generate("Once upon a time", greedy));
            TestContext.WriteLine($"{name}: {fitted.Model.Config.ParameterCount() / 1e6:F1}M parameters; load + 2 ORPO steps {trained} ms; " +
                $"total {clock.ElapsedMilliseconds} ms; peak RSS {PeakResidentMegabytes():F0} MB; generated '{text}'");
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
            Directory.Delete(export, recursive: true);
        }
    }

    [TestMethod]
    public void AConfigFieldThatChangesTheMathAndIsNotImplementedIsRefusedByName()
    {
        string smol = Architectures["SmolLM2-135M"].ConfigJson;
        var e = Assert.ThrowsExactly<NotSupportedException>(() => LlamaConfig.FromJson(smol.Replace("\"rope_interleaved\": false", "\"rope_interleaved\": true")));
        StringAssert.Contains(e.Message, "'rope_interleaved' = true");
        e = Assert.ThrowsExactly<NotSupportedException>(() => LlamaConfig.FromJson(smol.Replace("\"attention_dropout\": 0.0", "\"attention_dropout\": 0.1")));
        StringAssert.Contains(e.Message, "'attention_dropout' = 0.1");
        e = Assert.ThrowsExactly<NotSupportedException>(() => LlamaConfig.FromJson(smol.Replace("\"rope_scaling\": null",
            "\"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 4.0}")));
        StringAssert.Contains(e.Message, "rope_scaling type 'yarn'");
    }

    [TestMethod]
    public void ASequenceLongerThanTheSlidingWindowIsRefusedClearly()
    {
        string mistral = Architectures["SmolLM2-135M"].ConfigJson
            .Replace("LlamaForCausalLM", "MistralForCausalLM").Replace("\"model_type\": \"llama\"", "\"model_type\": \"mistral\"")
            .Replace("\"vocab_size\": 49152", "\"vocab_size\": 32000, \"sliding_window\": 8");
        string folder = WriteCheckpoint(mistral, """{"bos_token_id": 1, "eos_token_id": 2}""", "mistral-7b-v0.1");
        try
        {
            using var model = OrpoTransformer.FromPretrained(new MLContext(seed: 1), folder);
            Assert.AreEqual(8, model.Model.Config.SlidingWindow);
            Assert.IsFalse(string.IsNullOrEmpty(model.Generate("Hi", new GenerationOptions { MaxNewTokens = 3 })), "inside the window it runs");
            var e = Assert.ThrowsExactly<NotSupportedException>(() => model.Generate("Once upon a time, there was a little girl", new GenerationOptions { MaxNewTokens = 8 }));
            StringAssert.Contains(e.Message, "sliding window 8");
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }
}
