using System.Text.Json.Nodes;
using Microsoft.ML.Orpo.ModelFiles;
using Microsoft.ML.Orpo.MlNet;
using Microsoft.ML.Orpo.Modeling;
using Microsoft.ML.Orpo.Tests.Infrastructure;

namespace Microsoft.ML.Orpo.Tests.Generation;

/// <summary>generation_config.json: read on load, its stop ids and sampling defaults applied, written back on export and into the zip.</summary>
[TestClass]
public sealed class GenerationConfigTests
{
    private const string Prompt = "Once upon a time, there was a little girl named";

    private static string StoriesWith(string generationConfigJson)
    {
        string folder = TestAssets.NewTempDirectory("generation-config");
        foreach (string file in Directory.GetFiles(TestAssets.Stories260KHf))
            File.Copy(file, Path.Combine(folder, Path.GetFileName(file)));
        File.WriteAllText(Path.Combine(folder, HuggingFaceFolder.GenerationConfigFileName), generationConfigJson);
        return folder;
    }

    [TestMethod]
    public void ParsesListsAndSamplingKeepsTheRestAndNamesWhatIsNotApplied()
    {
        var config = GenerationConfig.FromJson("""
            {"bos_token_id": 1, "eos_token_id": [5, 9], "do_sample": true, "temperature": 0.6, "top_p": 0.9,
             "repetition_penalty": 1.1, "num_beams": 1, "transformers_version": "4.45.0"}
            """);
        CollectionAssert.AreEqual(new[] { 5, 9 }, config.EosTokenIds.ToArray());
        CollectionAssert.AreEqual(new[] { "repetition_penalty" }, config.NotApplied.ToArray(), "num_beams 1 changes nothing");
        var options = config.ToGenerationOptions();
        Assert.AreEqual(0.6, options.Temperature);
        Assert.AreEqual(50, options.TopK, "transformers' top_k default applies when do_sample is on and top_k is absent");
        Assert.AreEqual(0.9, options.TopP);
        Assert.AreEqual(64, options.MaxNewTokens);
        Assert.IsTrue(JsonNode.DeepEquals(JsonNode.Parse(config.ToJson()), JsonNode.Parse(GenerationConfig.FromJson(config.ToJson()).ToJson())));

        var greedy = GenerationConfig.FromJson("""{"eos_token_id": 2, "temperature": 0.6, "top_k": 20, "max_new_tokens": 9}""").ToGenerationOptions();
        Assert.AreEqual(0.0, greedy.Temperature, "without do_sample transformers decodes greedily whatever the temperature");
        Assert.AreEqual(9, greedy.MaxNewTokens);

        var e = Assert.ThrowsExactly<InvalidDataException>(() => GenerationConfig.FromJson("""{"eos_token_id": [2, "x"]}""", "g.json"));
        StringAssert.Contains(e.Message, "eos_token_id");
        e = Assert.ThrowsExactly<InvalidDataException>(() => GenerationConfig.FromJson("""{"do_sample": true, "top_p": 1.5}""", "g.json"));
        StringAssert.Contains(e.Message, "TopP");
    }

    [TestMethod]
    public void GenerationStopsAtTheSecondEosIdOfTheList()
    {
        var ml = new MLContext(seed: 1);
        int[] free = [];
        using (var plain = OrpoTransformer.FromPretrained(ml, TestAssets.Stories260KHf))
            plain.GenerateCore([Prompt], new GenerationOptions { MaxNewTokens = 16 }, (_, ids) => free = ids.ToArray(), CancellationToken.None);
        // The first generated token that did not occur before it: stopping there leaves exactly the tokens before it.
        int stopAt = Enumerable.Range(2, free.Length - 2).First(k => !free.Take(k).Contains(free[k]));
        string folder = StoriesWith($$"""{"bos_token_id": 1, "eos_token_id": [511, {{free[stopAt]}}], "do_sample": false, "max_new_tokens": 16}""");

        using var model = OrpoTransformer.FromPretrained(ml, folder);
        var result = model.GenerateCore([Prompt], options: null, onToken: null, CancellationToken.None)[0];
        Assert.AreEqual(stopAt, result.OutputTokens, $"generation must stop at id {free[stopAt]}, the second of eos_token_id");
        Assert.IsFalse(result.OutOfRoom);
        Assert.AreEqual(model.Model.Tokenizer.Decode(free.Take(stopAt).ToArray()), result.Text);
    }

    [TestMethod]
    public void SamplingDefaultsApplyWhereTheCallerGivesNoneAndTravelThroughExportAndZip()
    {
        const string json = """
            {"bos_token_id": 1, "eos_token_id": [2, 3], "do_sample": true, "temperature": 0.7, "top_k": 5, "top_p": 0.9,
             "max_new_tokens": 7, "repetition_penalty": 1.05, "transformers_version": "4.45.0"}
            """;
        string folder = StoriesWith(json);
        var ml = new MLContext(seed: 1);
        var expected = new GenerationOptions { MaxNewTokens = 7, Temperature = 0.7, TopK = 5, TopP = 0.9 };
        string Describe(GenerationOptions o) => $"{o.MaxNewTokens} {o.Temperature} {o.TopK} {o.TopP} {o.Seed} [{string.Join("|", o.StopSequences)}]";

        using var model = OrpoTransformer.FromPretrained(ml, folder);
        Assert.AreEqual(Describe(expected), Describe(model.GenerationDefaults));
        Assert.AreEqual(model.Generate(Prompt, expected), model.Generate(Prompt));

        var pairs = ml.Data.LoadFromEnumerable(ProtagonistPairs.Create().Train.Take(4).Select(p => new { p.Prompt, p.Chosen, p.Rejected }));
        using (var fitted = ml.Transforms.OrpoFineTune(new OrpoOptions { BaseModelPath = folder, BatchSize = 4 }).Fit(pairs))
            Assert.AreEqual(Describe(expected), Describe(fitted.GenerationDefaults), "a fit without OrpoOptions.Generation takes the model's");
        var own = new GenerationOptions { MaxNewTokens = 3 };
        using (var fitted = ml.Transforms.OrpoFineTune(new OrpoOptions { BaseModelPath = folder, BatchSize = 4, Generation = own }).Fit(pairs))
            Assert.AreEqual(Describe(own), Describe(fitted.GenerationDefaults), "OrpoOptions.Generation, when given, wins");

        string export = TestAssets.NewTempDirectory("generation-config-export");
        model.SaveHuggingFace(export);
        Assert.IsTrue(JsonNode.DeepEquals(JsonNode.Parse(json),
            JsonNode.Parse(File.ReadAllText(Path.Combine(export, HuggingFaceFolder.GenerationConfigFileName)))),
            "the export writes the generation config back as it was read");

        string zip = Path.Combine(TestAssets.NewTempDirectory("generation-config-zip"), "model.zip");
        ml.Model.Save(model, null, zip);
        using var loaded = (OrpoTransformer)new MLContext(seed: 2).RegisterOrpo().Model.Load(zip, out _);
        Assert.AreEqual(Describe(expected), Describe(loaded.GenerationDefaults));
        CollectionAssert.AreEqual(new[] { 2, 3 }, loaded.Model.Generation.EosTokenIds.ToArray());
        Assert.AreEqual(model.Generate(Prompt), loaded.Generate(Prompt));
    }

    [TestMethod]
    public void AFormatOnePayloadStillLoadsWithTheConfigsStopIds()
    {
        var ml = new MLContext(seed: 1);
        using var model = OrpoTransformer.FromPretrained(ml, StoriesWith("""{"eos_token_id": [2, 3]}"""));
        using var buffer = new MemoryStream();
        OrpoModelPayload.Write(buffer, model.Settings, model.Model, model.TrainingHistory);
        byte[] bytes = buffer.ToArray();
        // Format 1 ended after the training history: drop the trailing generation_config block and stamp version 1.
        int generationBlock = 8 + model.Model.Generation.ToJson().Length;
        byte[] v1 = bytes[..^generationBlock];
        BitConverter.GetBytes(1u).CopyTo(v1, 4);
        var contents = OrpoModelPayload.Read(new MemoryStream(v1), TorchSharp.torch.CPU);
        using var loaded = contents.Model;
        CollectionAssert.AreEqual(model.Model.Config.EosTokenIds.ToArray(), loaded.Generation.EosTokenIds.ToArray());
        Assert.AreEqual(model.Generate(Prompt, new GenerationOptions { MaxNewTokens = 8 }),
            new OrpoTransformer(ml, loaded, contents.Settings, contents.History).Generate(Prompt, new GenerationOptions { MaxNewTokens = 8 }));
    }
}
