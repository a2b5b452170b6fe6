using Microsoft.ML.Orpo.ModelFiles;
using Microsoft.ML.Orpo.Modeling;
using Microsoft.ML.Orpo.Tests.Infrastructure;
using Microsoft.ML.Orpo.Tests.Training;
using Microsoft.ML.Orpo.Training;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Tests.Lora;

/// <summary>The adapter itself: PEFT's initial state, the frozen base, merging, and what training touches.</summary>
[TestClass]
public sealed class LoraAdapterTests
{
    private static LoraConfig Config(double dropout = 0, params string[] targets) => LoraFixtures.Config(dropout: dropout, targets: targets);

    private static float[] Logits(CausalLanguageModel model, long[] ids)
    {
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        using var input = tensor(ids).unsqueeze(0);
        return model.Network.Forward(input).data<float>().ToArray();
    }

    private static CausalLanguageModel? baseModel;

    private static CausalLanguageModel BaseModel() => baseModel ??= TrainingFixtures.LoadModel();

    private static readonly long[] Ids = { 1, 403, 407, 261, 378, 425, 306, 275, 260, 301, 449 };

    [TestMethod]
    public void FreshAdapterWithZeroBGivesTheBaseLogitsExactly()
    {
        using var model = TrainingFixtures.LoadModel();
        var before = Logits(model, Ids);
        LoraAdapters.Create(model.Network, Config(), seed: 5);
        var after = Logits(model, Ids);
        CollectionAssert.AreEqual(before, after);
        // A is really drawn (Kaiming-uniform, bound 1/sqrt(in)), B is zero.
        var (path, adapter) = model.Network.Adapters!.ByPath[0];
        Assert.AreEqual("model.layers.0.self_attn.q_proj", path);
        var a = adapter.A.data<float>().ToArray();
        double bound = 1 / Math.Sqrt(adapter.A.shape[1]);
        Assert.IsTrue(a.All(x => Math.Abs(x) <= bound) && a.Max() > 0.5 * bound && a.Min() < -0.5 * bound);
        Assert.IsTrue(adapter.B.data<float>().ToArray().All(x => x == 0));
        Assert.AreEqual(7 * model.Config.NumHiddenLayers, model.Network.Adapters.ByPath.Count);
    }

    [TestMethod]
    public void BaseIsFrozenAndOnlyAdaptersAreTrainable()
    {
        using var model = TrainingFixtures.LoadModel();
        LoraAdapters.Create(model.Network, Config(targets: new[] { "q_proj", "v_proj" }), seed: 5);
        Assert.IsTrue(model.Network.NamedWeights().All(p => !p.Parameter.requires_grad));
        var trainable = model.Network.TrainableWeights();
        Assert.AreEqual(4 * model.Config.NumHiddenLayers, trainable.Count);
        Assert.AreEqual("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", trainable[0].Name);
        Assert.AreEqual("base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight", trainable[1].Name);
        Assert.AreEqual("base_model.model.model.layers.0.self_attn.v_proj.lora_A.weight", trainable[2].Name);
    }

    [TestMethod]
    public void TrainingChangesOnlyTheAdaptersAndTheBaseStaysBitIdentical()
    {
        using var model = TrainingFixtures.LoadModel();
        var baseBefore = TrainingFixtures.Snapshot(model);
        LoraAdapters.Create(model.Network, Config(dropout: 0.1), seed: 5);
        var pairs = TrainingFixtures.TrainPairs(model, 8);
        var settings = TrainingFixtures.Plain(batchSize: 4, learningRate: 1e-2) with { Lora = model.Network.Adapters!.Config };
        var history = new OrpoTrainer(model, settings).Train(pairs);
        Assert.AreEqual(2, history.Count);
        Assert.IsTrue(TrainingFixtures.BitIdentical(baseBefore, TrainingFixtures.Snapshot(model)));
        Assert.IsTrue(model.Network.Adapters.ByPath.All(a => a.Adapter.B.abs().max().item<float>() > 0), "every B moved");
        Assert.IsTrue(history.All(h => double.IsFinite(h.Loss) && h.GradNorm > 0));
    }

    [TestMethod]
    public void RecomputedActivationsTrainTheAdaptersAsStoredOnesDo()
    {
        IReadOnlyList<OrpoStepMetrics> Train(bool recompute)
        {
            using var model = TrainingFixtures.LoadModel();
            LoraAdapters.Create(model.Network, Config(dropout: 0.1), seed: 5);
            var settings = TrainingFixtures.Plain(batchSize: 4, learningRate: 1e-2) with
            {
                Lora = model.Network.Adapters!.Config, RecomputeActivations = recompute,
            };
            return new OrpoTrainer(model, settings).Train(TrainingFixtures.TrainPairs(model, 8));
        }
        var stored = Train(false);
        var recomputed = Train(true);
        Assert.AreEqual(2, recomputed.Count);
        for (int i = 0; i < stored.Count; i++)
        {
            Assert.AreEqual(stored[i].Loss, recomputed[i].Loss, 1e-5 * Math.Abs(stored[i].Loss), $"step {i + 1} loss");
            Assert.AreEqual(stored[i].GradNorm, recomputed[i].GradNorm, 1e-4 * stored[i].GradNorm, $"step {i + 1} gradient norm");
        }
    }

    [TestMethod]
    public void MergedModelMatchesTheTrainedAdapterModelWithin1e5()
    {
        using var model = TrainingFixtures.LoadModel();
        LoraAdapters.Create(model.Network, Config(), seed: 5);
        var settings = TrainingFixtures.Plain(batchSize: 4, learningRate: 1e-2) with { Lora = model.Network.Adapters!.Config };
        new OrpoTrainer(model, settings).Train(TrainingFixtures.TrainPairs(model, 12));
        var adapted = Logits(model, Ids);
        var weights = model.ExportWeights();
        using var merged = CausalLanguageModel.Create(model.Config, weights, model.Tokenizer, CPU, "merged");
        foreach (var t in weights.Values) t.Dispose();
        var plain = Logits(merged, Ids);
        double worst = adapted.Zip(plain, (x, y) => Math.Abs(x - y)).Max();
        // float32: two orders of summation ((W + sBA) x against W x + s B (A x)) through five layers; relative to the logits' scale.
        Assert.IsLessThan(1e-5 * adapted.Max(Math.Abs), worst, $"logits up to {adapted.Max(Math.Abs)}, worst {worst}");
        Assert.IsGreaterThan(1e-3, adapted.Zip(Logits(BaseModel(), Ids), (x, y) => Math.Abs(x - y)).Max(), "the adapter changed the function");
        Assert.IsTrue(adapted.Zip(Logits(model, Ids), (x, y) => x == y).All(b => b), "adapter forward is deterministic");
    }
}
