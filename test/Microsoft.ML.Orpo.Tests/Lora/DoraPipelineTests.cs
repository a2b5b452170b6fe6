using System.Text.Json.Nodes;
using Microsoft.ML.Orpo.Tests.Infrastructure;
using static Microsoft.ML.Orpo.Tests.Lora.LoraPipelineFixtures;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Tests.Lora;

/// <summary>
/// DoRA (<see cref="LoraOptions.UseDora"/>, PEFT's <c>use_dora</c>) through the pipeline: trained with dropout through
/// ML.NET, written as PEFT writes it (magnitudes under <c>lora_magnitude_vector</c>), merged by PEFT's formula (checked
/// in float64 from the files alone), kept by the model zip, refused where a format cannot hold it, and generating
/// with the factors held for the call only.
/// </summary>
[TestClass]
public sealed class DoraPipelineTests
{
    private static LoraOptions Dora()
    {
        var lora = RankFour(dropout: 0.05); // dropout on: training runs PEFT's two-product formula
        lora.UseDora = true;
        return lora;
    }

    /// <summary>The fixture's run: two steps, a checkpoint after each.</summary>
    private static OrpoOptions DoraOptions(string checkpoints)
    {
        var options = Options(Dora(), checkpoints);
        options.CheckpointInterval = 1;
        return options;
    }

    private static readonly Lazy<(OrpoTransformer Model, string Adapter, string Checkpoints)> fitted = new(() =>
    {
        var ml = new MLContext(seed: 1);
        string checkpoints = TestAssets.NewTempDirectory("orpo-dora-checkpoints");
        var model = ml.Transforms.OrpoFineTune(DoraOptions(checkpoints)).Fit(Pairs(ml));
        string dir = TestAssets.NewTempDirectory("orpo-dora-adapter");
        model.SaveAdapter(dir);
        return (model, dir, checkpoints);
    });

    private static OrpoTransformer Fitted => fitted.Value.Model;
    private static string Adapter => fitted.Value.Adapter;

    private static string Module(int layer, string block, string name) => $"model.layers.{layer}.{block}.{name}";

    [TestMethod]
    public void SaveAdapterWritesUseDoraAndAMagnitudePerOutputRowAndReloadsBitForBit()
    {
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(Adapter, "adapter_config.json")))!.AsObject();
        Assert.IsTrue(config["use_dora"]!.GetValue<bool>());
        Assert.IsFalse(config["use_rslora"]!.GetValue<bool>());

        // A and B as for LoRA, plus PEFT's magnitude key (no ".weight") of shape (out) for each of the 35 projections.
        var expected = ExpectedAdapterKeys();
        for (int layer = 0; layer < 5; layer++)
            foreach (var (name, block, _, outFeatures) in Projections)
                expected[$"base_model.model.{Module(layer, block, name)}.lora_magnitude_vector"] = [outFeatures];
        var header = Header(Path.Combine(Adapter, "adapter_model.safetensors"));
        Assert.HasCount(105, expected);
        CollectionAssert.AreEqual(expected.Keys.ToArray(), header.Keys.ToArray());
        foreach (var (key, shape) in expected)
        {
            CollectionAssert.AreEqual(shape, header[key].Shape, key);
            Assert.AreEqual("F32", header[key].DType, key);
        }

        using var loaded = OrpoTransformer.FromPretrained(new MLContext(seed: 2), TestAssets.Stories260KHf, adapterPath: Adapter);
        CollectionAssert.AreEqual(Logits(Fitted), Logits(loaded));
        string again = TestAssets.NewTempDirectory("orpo-dora-adapter");
        loaded.SaveAdapter(again);
        AssertSameFiles(Adapter, again);
    }

    [TestMethod]
    public void TrainingMovesTheMagnitudesAndTheMergedWeightsArePeftsDoraMerge()
    {
        // Everything below from the files alone, in float64: the base, the adapter and the merged export.
        string merged = TestAssets.NewTempDirectory("orpo-dora-merged");
        using (var mergedModel = Fitted.MergeAdapter())
        {
            Assert.IsFalse(mergedModel.HasAdapter);
            double error = LoraFixtures.RelativeMaxError(Logits(Fitted).Select(v => (double)v).ToArray(), Logits(mergedModel).Select(v => (double)v).ToArray());
            Console.WriteLine($"merged against adapter logits: {error:E2} of the largest logit");
            Assert.IsLessThan(1e-5, error);
            mergedModel.SaveHuggingFace(merged);
        }
        var baseWeights = Tensors(Path.Combine(TestAssets.Stories260KHf, "model.safetensors"));
        var mergedWeights = Tensors(Path.Combine(merged, "model.safetensors"));
        var adapter = Tensors(Path.Combine(Adapter, "adapter_model.safetensors"));
        double s = Alpha / Rank, worst = 0, loraWorst = 0, magnitudeMoved = 0, factorMoved = 0;
        foreach (var (name, block, inFeatures, outFeatures) in Projections)
            for (int layer = 0; layer < 5; layer++)
            {
                string module = Module(layer, block, name), key = "base_model.model." + module;
                float[] w = baseWeights[module + ".weight"], got = mergedWeights[module + ".weight"];
                float[] a = adapter[key + ".lora_A.weight"], b = adapter[key + ".lora_B.weight"], m = adapter[key + ".lora_magnitude_vector"];
                for (int o = 0; o < outFeatures; o++)
                {
                    var row = new double[inFeatures];
                    double norm = 0, baseNorm = 0;
                    for (int i = 0; i < inFeatures; i++)
                    {
                        double ba = 0;
                        for (int k = 0; k < Rank; k++) ba += (double)b[o * Rank + k] * a[k * inFeatures + i];
                        row[i] = w[o * inFeatures + i] + s * ba;
                        norm += row[i] * row[i];
                        baseNorm += (double)w[o * inFeatures + i] * w[o * inFeatures + i];
                    }
                    norm = Math.Sqrt(norm);
                    magnitudeMoved = Math.Max(magnitudeMoved, Math.Abs(m[o] - Math.Sqrt(baseNorm)) / Math.Sqrt(baseNorm));
                    factorMoved = Math.Max(factorMoved, Math.Abs(m[o] / norm - 1));
                    for (int i = 0; i < inFeatures; i++)
                    {
                        worst = Math.Max(worst, Math.Abs(got[o * inFeatures + i] - m[o] / norm * row[i]));
                        loraWorst = Math.Max(loraWorst, Math.Abs(got[o * inFeatures + i] - row[i]));
                    }
                }
            }
        Console.WriteLine($"|merged - (m / ||W + s BA||)(W + s BA)| <= {worst:E2}; against plain LoRA's W + s BA: {loraWorst:E2}; " +
            $"magnitudes moved from the base row norms by up to {magnitudeMoved:P2}, factors m / n from 1 by up to {factorMoved:E2}");
        Assert.IsLessThan(1e-6, worst, "float32 rounding of PEFT's DoRA merge");
        Assert.IsGreaterThan(1e-4, loraWorst, "the factors must matter enough to tell DoRA's merge from LoRA's");
        Assert.IsGreaterThan(1e-4, magnitudeMoved, "training moved the magnitudes away from the base row norms");
    }

    [TestMethod]
    public void TheModelZipIsFormat5AndReloadsIdentically()
    {
        Assert.AreEqual(5u, PayloadVersion(Fitted), "a format-3 or -4 reader must refuse a DoRA zip, not run it as plain LoRA");
        using var loaded = ThroughModelZip(Fitted, "dora");
        Assert.IsTrue(loaded.Model.Network.Adapters!.Config.UseDora);
        CollectionAssert.AreEqual(Logits(Fitted), Logits(loaded));
        CollectionAssert.AreEqual(Generations(Fitted), Generations(loaded));
    }

    [TestMethod]
    public void AResumedRunEndsWithTheUninterruptedRunsMagnitudesBitForBit()
    {
        // Fitted checkpointed after steps 1 and 2; a run given only the first resumes there and trains step 2 again.
        string first = Path.Combine(fitted.Value.Checkpoints, "checkpoint-000001");
        var optimizer = Header(Path.Combine(first, "optimizer.safetensors"));
        Assert.IsTrue(optimizer.Keys.Any(k => k.Contains(".lora_magnitude_vector", StringComparison.Ordinal)), "AdamW state for the magnitudes");
        Assert.IsTrue(Header(Path.Combine(first, "model.safetensors")).ContainsKey("base_model.model.model.layers.4.mlp.down_proj.lora_magnitude_vector"));
        string resumeFrom = TestAssets.NewTempDirectory("orpo-dora-resume");
        string copy = Path.Combine(resumeFrom, "checkpoint-000001");
        Directory.CreateDirectory(copy);
        foreach (string file in Directory.GetFiles(first)) File.Copy(file, Path.Combine(copy, Path.GetFileName(file)));

        var ml = new MLContext(seed: 1);
        using var resumed = ml.Transforms.OrpoFineTune(DoraOptions(resumeFrom)).Fit(Pairs(ml));
        Assert.IsTrue(BitIdentical(AdapterWeights(Fitted), AdapterWeights(resumed)), "A, B and m after the resumed step 2");
        Assert.AreEqual(Fitted.TrainingHistory[^1].Loss, resumed.TrainingHistory[^1].Loss);
    }

    [TestMethod]
    public void SaveAdapterGgufRefusesDoraByNameAndWritesNothing()
    {
        string path = Path.Combine(TestAssets.NewTempDirectory("orpo-dora-gguf"), "adapter.gguf");
        var error = Assert.Throws<NotSupportedException>(() => Fitted.SaveAdapterGguf(path));
        StringAssert.Contains(error.Message, "DoRA");
        StringAssert.Contains(error.Message, "SaveGguf");
        Assert.IsFalse(File.Exists(path));
    }

    [TestMethod]
    public void ContinuingTheAdapterKeepsDoraAndDisagreeingOptionsAreAnError()
    {
        var ml = new MLContext(seed: 1);
        var options = Options(lora: RankFour());
        options.AdapterPath = Adapter;
        var error = Assert.Throws<ArgumentException>(() => ml.Transforms.OrpoFineTune(options).Fit(Pairs(ml)).Dispose());
        StringAssert.Contains(error.Message, "UseDora False");
        StringAssert.Contains(error.Message, "use_dora True");

        options.Lora = null; // continue the adapter as it is
        options.Epochs = 1;
        using var continued = ml.Transforms.OrpoFineTune(options).Fit(Pairs(ml, count: 4));
        Assert.IsTrue(continued.Model.Network.Adapters!.Config.UseDora);
        var before = AdapterWeights(Fitted);
        var after = AdapterWeights(continued);
        string magnitude = "base_model.model.model.layers.2.mlp.up_proj.lora_magnitude_vector";
        Assert.IsFalse(before[magnitude].AsSpan().SequenceEqual(after[magnitude]), "the continued run trains the magnitudes");
    }

    [TestMethod]
    public void AFolderWhoseTensorsDisagreeWithUseDoraIsRejectedByName()
    {
        static string WithUseDora(string source, bool useDora) => CopyWithConfig(source, config => config["use_dora"] = useDora);
        var extra = Assert.Throws<InvalidDataException>(() =>
            OrpoTransformer.FromPretrained(new MLContext(seed: 1), TestAssets.Stories260KHf, adapterPath: WithUseDora(Adapter, false)).Dispose());
        StringAssert.Contains(extra.Message, ".lora_magnitude_vector");
        StringAssert.Contains(extra.Message, "use_dora");
        var missing = Assert.Throws<InvalidDataException>(() =>
            OrpoTransformer.FromPretrained(new MLContext(seed: 1), TestAssets.Stories260KHf, adapterPath: WithUseDora(SavedFittedAdapter(), true)).Dispose());
        StringAssert.Contains(missing.Message, "missing tensor 'base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector'");
        StringAssert.Contains(missing.Message, "use_dora");
    }

    [TestMethod]
    public void GenerationHoldsTheFactorsForTheCallOnlyAndLeaksNoTensor()
    {
        using var model = OrpoTransformer.FromPretrained(new MLContext(seed: 1), TestAssets.Stories260KHf, adapterPath: Adapter);
        using (var merged = model.MergeAdapter())
            CollectionAssert.AreEqual(Generations(merged), Generations(model), "greedy text of the adapter model and the merged one");
        for (int i = 0; i < 3; i++) Generations(model);
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
        long tensorsBefore = Tensor.TotalCount;
        for (int i = 0; i < 20; i++) Generations(model);
        Assert.AreEqual(tensorsBefore, Tensor.TotalCount, "the held factors are released with each call");

        // After a call, the factors follow the parameters again: a changed magnitude changes the logits.
        var logits = Logits(model);
        using (no_grad()) model.Model.Network.Adapters!.ByPath[0].Adapter.Magnitude!.mul_(2);
        Assert.IsFalse(logits.AsSpan().SequenceEqual(Logits(model)));
    }
}
