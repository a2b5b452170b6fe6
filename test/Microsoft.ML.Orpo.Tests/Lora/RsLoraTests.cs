using System.Text.Json.Nodes;
using Microsoft.ML.Orpo.Tests.Infrastructure;
using static Microsoft.ML.Orpo.Tests.Lora.LoraPipelineFixtures;

namespace Microsoft.ML.Orpo.Tests.Lora;

/// <summary>
/// Rank-stabilised LoRA (PEFT's <c>use_rslora</c>): the update is scaled by alpha / sqrt(r) instead of alpha / r, in an
/// adapter folder read and written, in training, and in the model zip.
/// </summary>
[TestClass]
public sealed class RsLoraTests
{
    [TestMethod]
    public void AnRsLoraFolderMergesToTheBasePlusAlphaOverSqrtRankTimesBA()
    {
        string dir = SavedFittedAdapter(useRsLora: true);
        using var loaded = OrpoTransformer.FromPretrained(new MLContext(seed: 1), TestAssets.Stories260KHf, adapterPath: dir);
        string merged = TestAssets.NewTempDirectory("orpo-merged");
        loaded.SaveHuggingFace(merged);

        // The merged weights against the formula, computed here in float64 from the files alone.
        var baseWeights = Tensors(Path.Combine(TestAssets.Stories260KHf, "model.safetensors"));
        var mergedWeights = Tensors(Path.Combine(merged, "model.safetensors"));
        var adapter = Tensors(Path.Combine(dir, "adapter_model.safetensors"));
        double rsFactor = Alpha / Math.Sqrt(Rank), plainFactor = Alpha / Rank; // 4 and 2
        double worst = 0, plainWorst = 0;
        int projections = 0;
        for (int layer = 0; layer < 5; layer++)
            foreach (var (name, block, inFeatures, outFeatures) in Projections)
            {
                string module = $"model.layers.{layer}.{block}.{name}";
                float[] w = baseWeights[module + ".weight"], m = mergedWeights[module + ".weight"];
                float[] a = adapter[$"base_model.model.{module}.lora_A.weight"], b = adapter[$"base_model.model.{module}.lora_B.weight"];
                for (int o = 0; o < outFeatures; o++)
                    for (int i = 0; i < inFeatures; i++)
                    {
                        double ba = 0;
                        for (int k = 0; k < Rank; k++) ba += (double)b[o * Rank + k] * a[k * inFeatures + i];
                        double got = m[o * inFeatures + i];
                        worst = Math.Max(worst, Math.Abs(got - (w[o * inFeatures + i] + rsFactor * ba)));
                        plainWorst = Math.Max(plainWorst, Math.Abs(got - (w[o * inFeatures + i] + plainFactor * ba)));
                    }
                projections++;
            }
        Console.WriteLine($"{projections} projections: worst |merged - (W + {rsFactor} BA)| = {worst:E2}; against alpha / r: {plainWorst:E2}");
        Assert.AreEqual(35, projections);
        Assert.IsLessThan(1e-6, worst, "float32 rounding of W + s BA");
        Assert.IsGreaterThan(1e-3, plainWorst, "the adapter must be large enough to tell the two factors apart");

        // SaveAdapter writes the flag back, with the same weights.
        string again = TestAssets.NewTempDirectory("orpo-adapter");
        loaded.SaveAdapter(again);
        Assert.IsTrue(JsonNode.Parse(File.ReadAllText(Path.Combine(again, "adapter_config.json")))!["use_rslora"]!.GetValue<bool>());
        CollectionAssert.AreEqual(File.ReadAllBytes(Path.Combine(dir, "adapter_model.safetensors")), File.ReadAllBytes(Path.Combine(again, "adapter_model.safetensors")));
    }

    [TestMethod]
    public void TrainingWithUseRsLoraScalesTheFirstGradientBySqrtRankAndTheModelZipKeepsIt()
    {
        // The same run as Fitted's but rank-stabilised. B starts at zero, so the first loss is the base model's in both
        // runs, A gets no gradient and B's gradient is proportional to the factor: the first gradient norm is
        // (alpha / sqrt(r)) / (alpha / r) = sqrt(r) = 2 times Fitted's.
        var ml = new MLContext(seed: 1);
        var lora = RankFour();
        lora.UseRsLora = true;
        using var fitted = ml.Transforms.OrpoFineTune(Options(lora)).Fit(Pairs(ml));
        var plain = Fitted.TrainingHistory[0];
        var stabilised = fitted.TrainingHistory[0];
        Assert.AreEqual(plain.Loss, stabilised.Loss, 1e-6 * plain.Loss, "B = 0: both start at the base model");
        Assert.AreEqual(Math.Sqrt(Rank), stabilised.GradNorm / plain.GradNorm, 1e-4, $"gradient norms {stabilised.GradNorm} and {plain.GradNorm}");

        string adapter = TestAssets.NewTempDirectory("orpo-adapter");
        fitted.SaveAdapter(adapter);
        Assert.IsTrue(JsonNode.Parse(File.ReadAllText(Path.Combine(adapter, "adapter_config.json")))!["use_rslora"]!.GetValue<bool>());
        using (var reloaded = OrpoTransformer.FromPretrained(new MLContext(seed: 2), TestAssets.Stories260KHf, adapterPath: adapter))
            CollectionAssert.AreEqual(Logits(fitted), Logits(reloaded), "the folder reloads to the same function");

        // The model zip: format 4 (a format-3 reader would ignore the flag, so it must refuse the zip), reloaded identically.
        Assert.AreEqual(4u, PayloadVersion(fitted));
        Assert.AreEqual(3u, PayloadVersion(Fitted), "adapters without rsLoRA keep format 3, which older releases read");
        using var loaded = ThroughModelZip(fitted, "rslora");
        CollectionAssert.AreEqual(Logits(fitted), Logits(loaded));
        CollectionAssert.AreEqual(Generations(fitted), Generations(loaded));
    }
}
