using Microsoft.ML.Orpo.Tests.Infrastructure;
using Microsoft.ML.Orpo.Tests.MlNet;
using static Microsoft.ML.Orpo.Tests.Lora.LoraPipelineFixtures;

namespace Microsoft.ML.Orpo.Tests.Lora;

/// <summary>
/// LoRA through ML.NET: OrpoFineTune with <see cref="OrpoOptions.Lora"/>, the model zip (also in a fresh process),
/// merging and export, continuing from <see cref="OrpoOptions.AdapterPath"/>, and adapter-only checkpoints.
/// </summary>
[TestClass]
public sealed class LoraPipelineTests
{
    private sealed class PromptRow
    {
        public string Prompt { get; set; } = "";
    }

    [TestMethod]
    public void TheFittedAdapterModelChangedTheTextAndTheBaseModelDidNotTrain()
    {
        Assert.IsTrue(Fitted.HasAdapter);
        Assert.HasCount(2, Fitted.TrainingHistory);
        using var plain = OrpoTransformer.FromPretrained(new MLContext(seed: 1), TestAssets.Stories260KHf);
        CollectionAssert.AreNotEqual(Generations(plain), FittedGenerations, "the adapter must change the greedy text for these tests to mean anything");
        // The zip stores the base weights as they were: bit-identical to the file the run started from.
        var baseWeights = Fitted.Model.ExportBaseWeights();
        try
        {
            var file = Tensors(Path.Combine(TestAssets.Stories260KHf, "model.safetensors"));
            Assert.IsTrue(file.All(kv => baseWeights[kv.Key].data<float>().ToArray().AsSpan().SequenceEqual(kv.Value)), "the frozen base is unchanged");
        }
        finally
        {
            foreach (var t in baseWeights.Values) t.Dispose();
        }
    }

    [TestMethod]
    public void ModelZipSaveAndLoadKeepTheAdapterAlsoInAFreshProcess()
    {
        var ml = FittedContext;
        var prompts = ml.Data.LoadFromEnumerable(Prompts.Select(p => new PromptRow { Prompt = p }));
        string[] expected = ModelZipTestSupport.Responses(Fitted, prompts);
        CollectionAssert.AreEqual(FittedGenerations, expected);
        string path = Path.Combine(TestAssets.NewTempDirectory("orpo-lora-zip"), "lora.zip");
        ml.Model.Save(Fitted, prompts.Schema, path);

        var other = new MLContext(seed: 2).RegisterOrpo();
        using var loaded = (OrpoTransformer)other.Model.Load(path, out _);
        Assert.IsTrue(loaded.HasAdapter);
        CollectionAssert.AreEqual(expected, ModelZipTestSupport.Responses(loaded, prompts));
        Assert.IsTrue(BitIdentical(AdapterWeights(Fitted), AdapterWeights(loaded)));
        CollectionAssert.AreEqual(Logits(Fitted), Logits(loaded));
        string savedBefore = TestAssets.NewTempDirectory("orpo-adapter"), savedAfter = TestAssets.NewTempDirectory("orpo-adapter");
        Fitted.SaveAdapter(savedBefore);
        loaded.SaveAdapter(savedAfter);
        AssertSameFiles(savedBefore, savedAfter);

        ModelZipFreshProcessTests.AssertFreshOrpoResponses(path, Prompts, expected);
    }

    [TestMethod]
    public void MergeAdapterGivesAPlainModelWhoseExportReloadsToTheSameText()
    {
        using var merged = Fitted.MergeAdapter();
        Assert.IsFalse(merged.HasAdapter);
        Assert.IsTrue(Fitted.HasAdapter, "merging leaves the adapter model as it was");
        Assert.Throws<InvalidOperationException>(() => merged.SaveAdapter(TestAssets.NewTempDirectory("orpo-adapter")));
        Assert.Throws<InvalidOperationException>(() => merged.MergeAdapter());
        string[] expected = FittedGenerations;
        CollectionAssert.AreEqual(expected, Generations(merged));

        // Exporting the adapter model writes the merged model: the same bytes.
        string fromMerged = TestAssets.NewTempDirectory("orpo-merged"), fromAdapter = TestAssets.NewTempDirectory("orpo-merged");
        merged.SaveHuggingFace(fromMerged);
        Fitted.SaveHuggingFace(fromAdapter);
        AssertSameFiles(fromMerged, fromAdapter);
        Assert.IsFalse(Header(Path.Combine(fromMerged, "model.safetensors")).Keys.Any(k => k.Contains("lora_", StringComparison.Ordinal)));

        using var reloaded = OrpoTransformer.FromPretrained(new MLContext(seed: 3), fromMerged);
        Assert.IsFalse(reloaded.HasAdapter);
        CollectionAssert.AreEqual(expected, Generations(reloaded));
        CollectionAssert.AreEqual(Logits(merged), Logits(reloaded));
    }

    [TestMethod]
    public void AdapterPathContinuesTrainingFromTheSavedAdapter()
    {
        string adapter = SavedFittedAdapter();
        var ml = new MLContext(seed: 1);
        // One step over all eight pairs, without dropout, so the step's loss is the loss of the model it starts from.
        var options = Options(RankFour(dropout: 0));
        options.AdapterPath = adapter;
        options.BatchSize = 8;
        var data = Pairs(ml);

        using var start = OrpoTransformer.FromPretrained(ml, options);
        Assert.IsTrue(start.HasAdapter);
        Assert.IsTrue(BitIdentical(AdapterWeights(Fitted), AdapterWeights(start)), "FromPretrained(options) applies AdapterPath");
        CollectionAssert.AreEqual(FittedGenerations, Generations(start));
        double adapterLoss = start.Evaluate(data).Loss;
        var baseOptions = Options();
        baseOptions.Lora = null;
        using var plain = OrpoTransformer.FromPretrained(ml, baseOptions);
        double baseLoss = plain.Evaluate(data).Loss;

        using var continued = ml.Transforms.OrpoFineTune(options).Fit(data);
        Assert.HasCount(1, continued.TrainingHistory);
        double firstLoss = continued.TrainingHistory[0].Loss;
        Assert.AreEqual(adapterLoss, firstLoss, 1e-5 * adapterLoss, $"base loss {baseLoss}");
        Assert.IsGreaterThan(100 * 1e-5 * adapterLoss, Math.Abs(baseLoss - adapterLoss), "the adapter's loss must be told apart from the base model's");
        Assert.IsTrue(continued.HasAdapter);
        Assert.IsFalse(BitIdentical(AdapterWeights(Fitted), AdapterWeights(continued)), "the step trained the adapter further");
    }

    [TestMethod]
    public void CheckpointsHoldOnlyTheAdapterAndAnotherLoraConfigCannotResumeThem()
    {
        string checkpoint = Path.Combine(FittedCheckpoints, "checkpoint-000002");
        var model = Header(Path.Combine(checkpoint, "model.safetensors"));
        var expected = ExpectedAdapterKeys();
        CollectionAssert.AreEqual(expected.Keys.ToArray(), model.Keys.ToArray());
        foreach (var (key, shape) in expected) CollectionAssert.AreEqual(shape, model[key].Shape, key);
        long adapterBytes = new FileInfo(Path.Combine(checkpoint, "model.safetensors")).Length;
        long baseBytes = new FileInfo(Path.Combine(TestAssets.Stories260KHf, "model.safetensors")).Length;
        Assert.IsLessThan(baseBytes / 5, adapterBytes, $"adapter checkpoint {adapterBytes} bytes, base model {baseBytes}");
        // AdamW's moments exist for the adapters only.
        var optimizer = Header(Path.Combine(checkpoint, "optimizer.safetensors"));
        Assert.IsTrue(optimizer.Keys.All(k => k.Contains(".lora_A.weight", StringComparison.Ordinal) || k.Contains(".lora_B.weight", StringComparison.Ordinal)),
            string.Join(", ", optimizer.Keys.Take(5)));
        // Its weights are the fitted adapter's.
        Assert.IsTrue(BitIdentical(AdapterWeights(Fitted), Tensors(Path.Combine(checkpoint, "model.safetensors"))));

        // Same shapes, other alpha or dropout; full fine-tuning: each is another run, refused rather than resumed.
        var ml = new MLContext(seed: 1);
        foreach (var lora in new LoraOptions?[] { new() { Rank = Rank, Alpha = 16 }, RankFour(dropout: 0.1), null })
        {
            var options = Options(lora, FittedCheckpoints);
            if (lora is null) options.Lora = null;
            var error = Assert.Throws<InvalidOperationException>(() => ml.Transforms.OrpoFineTune(options).Fit(Pairs(ml)));
            StringAssert.Contains(error.Message, "different run");
        }
        // The same options resume (at the last step: nothing left to train) to the same adapter.
        using var resumed = ml.Transforms.OrpoFineTune(Options(checkpoints: FittedCheckpoints)).Fit(Pairs(ml));
        Assert.IsTrue(BitIdentical(AdapterWeights(Fitted), AdapterWeights(resumed)));
        Assert.AreEqual(Fitted.TrainingHistory[^1].Loss, resumed.TrainingHistory[^1].Loss);
    }
}
