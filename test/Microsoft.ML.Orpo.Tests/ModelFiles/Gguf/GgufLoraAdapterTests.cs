using Microsoft.ML.Orpo.Tests.Infrastructure;
using static Microsoft.ML.Orpo.Tests.Lora.LoraPipelineFixtures;

namespace Microsoft.ML.Orpo.Tests.ModelFiles.Gguf;

/// <summary>
/// <see cref="OrpoTransformer.SaveAdapterGguf"/>: the adapter as llama.cpp's GGUF LoRA file, checked by its layout and by
/// real llama.cpp (LLamaSharp 0.30.0) running it on the base model's GGUF: the greedy continuation must be ours.
/// </summary>
[TestClass]
public sealed class GgufLoraAdapterTests
{
    private const int Tokens = 128;

    public TestContext TestContext { get; set; } = null!;

    private static string? baseGguf;

    /// <summary>stories260K without an adapter, in F32.</summary>
    private static string BaseGguf()
    {
        if (baseGguf is not null) return baseGguf;
        using var plain = OrpoTransformer.FromPretrained(new MLContext(seed: 1), TestAssets.Stories260KHf);
        string path = Path.Combine(TestAssets.NewTempDirectory("orpo-gguf"), "base.gguf");
        plain.SaveGguf(path, GgufTensorType.F32);
        return baseGguf = path;
    }

    [TestMethod]
    public void TheAdapterFileHasLlamaCppsMetadataNamesAndShapes()
    {
        string path = Path.Combine(TestAssets.NewTempDirectory("orpo-gguf"), "adapter.gguf");
        Fitted.SaveAdapterGguf(path);
        var gguf = new GgufReader(path);
        Assert.AreEqual("llama", gguf.Metadata["general.architecture"]);
        Assert.AreEqual("adapter", gguf.Metadata["general.type"]);
        Assert.AreEqual("lora", gguf.Metadata["adapter.type"]);
        Assert.AreEqual((float)Alpha, gguf.Metadata["adapter.lora.alpha"]);
        Assert.HasCount(70, gguf.Tensors);
        string[] names = ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"];
        for (int layer = 0; layer < 5; layer++)
            for (int i = 0; i < names.Length; i++)
            {
                var (_, _, inFeatures, outFeatures) = Projections[i];
                string weight = $"blk.{layer}.{names[i]}.weight";
                // GGUF lists dimensions innermost first: A (r x in) is [in, r], B (out x r) is [r, out].
                CollectionAssert.AreEqual(new long[] { inFeatures, Rank }, gguf.Tensors[weight + ".lora_a"].Dims, weight);
                CollectionAssert.AreEqual(new long[] { Rank, outFeatures }, gguf.Tensors[weight + ".lora_b"].Dims, weight);
            }
        // v is not rotated: its A and B are PEFT's, unchanged.
        var peft = AdapterWeights(Fitted);
        CollectionAssert.AreEqual(peft["base_model.model.model.layers.2.self_attn.v_proj.lora_A.weight"], gguf.Read("blk.2.attn_v.weight.lora_a"));
        CollectionAssert.AreEqual(peft["base_model.model.model.layers.2.self_attn.v_proj.lora_B.weight"], gguf.Read("blk.2.attn_v.weight.lora_b"));

        using var merged = Fitted.MergeAdapter();
        Assert.Throws<InvalidOperationException>(() => merged.SaveAdapterGguf(path));
    }

    [TestMethod]
    public void WithTheBaseGgufAnOllamaModelfileAppliesTheAdapterToIt()
    {
        string folder = TestAssets.NewTempDirectory("orpo-gguf");
        string adapter = Path.Combine(folder, "tuned-adapter.gguf");
        Fitted.SaveAdapterGguf(adapter);
        Assert.IsFalse(File.Exists(Path.Combine(folder, "tuned-adapter.Modelfile")), "no Modelfile without a base");

        Fitted.SaveAdapterGguf(adapter, baseGguf: "../models/base.gguf");
        string[] lines = File.ReadAllLines(Path.Combine(folder, "tuned-adapter.Modelfile"));
        // The merged model's own Modelfile, with the base as FROM and the adapter added: the same template, stops and defaults.
        string merged = Path.Combine(folder, "merged.gguf");
        Fitted.SaveGguf(merged, GgufTensorType.F32);
        string[] mergedLines = File.ReadAllLines(Path.Combine(folder, "merged.Modelfile"));
        Assert.AreEqual("FROM ./merged.gguf", mergedLines[1]);
        CollectionAssert.AreEqual(
            mergedLines.Take(1).Concat(["FROM ../models/base.gguf", "ADAPTER ./tuned-adapter.gguf"]).Concat(mergedLines.Skip(2)).ToArray(), lines);
        Assert.Throws<ArgumentException>(() => Fitted.SaveAdapterGguf(adapter, baseGguf: " "));
    }

    [TestMethod]
    [DataRow(false, DisplayName = "alpha / r")]
    [DataRow(true, DisplayName = "rsLoRA, alpha / sqrt(r)")]
    public void LlamaCppRunsTheAdapterOnTheBaseGgufToOurGreedyTokens(bool rsLora)
    {
        // Fitted's trained adapter; for rsLoRA the same weights read with use_rslora (factor 4 instead of 2).
        string folder = SavedFittedAdapter(useRsLora: rsLora);
        using var model = OrpoTransformer.FromPretrained(new MLContext(seed: 1), TestAssets.Stories260KHf, adapterPath: folder);
        string adapter = Path.Combine(TestAssets.NewTempDirectory("orpo-gguf"), "adapter.gguf");
        model.SaveAdapterGguf(adapter);
        Assert.AreEqual((float)(rsLora ? Alpha * Math.Sqrt(Rank) : Alpha), new GgufReader(adapter).Metadata["adapter.lora.alpha"]);

        int[] ours = LlamaCppGreedy.Ours(model, Tokens);
        int[] theirs = LlamaCppGreedy.FromBos(BaseGguf(), Tokens, adapter);
        int[] baseOnly = LlamaCppGreedy.FromBos(BaseGguf(), Tokens);
        int shared = LlamaCppGreedy.SharedPrefix(ours, theirs);
        TestContext.WriteLine($"{(rsLora ? "rsLoRA" : "LoRA")}: {shared}/{Tokens} tokens equal; the base model alone shares {LlamaCppGreedy.SharedPrefix(ours, baseOnly)}");
        Assert.AreNotEqual(Tokens, LlamaCppGreedy.SharedPrefix(ours, baseOnly), "the adapter must change the greedy text for this to test it");
        if (shared == Tokens) return;
        // As for the merged GGUF of a fine-tuned model: a difference is allowed only at a float32 near-tie in ours.
        Assert.IsGreaterThanOrEqualTo(32, shared, $"llama.cpp's greedy ids differ from ours at token {shared}");
        double gap = LlamaCppGreedy.LogitGap(model, ours.Take(shared).ToArray(), ours[shared], theirs[shared]);
        Assert.IsLessThan(1e-3, gap, $"llama.cpp's token {theirs[shared]} at {shared} is not a near-tie with ours ({ours[shared]})");
    }
}
