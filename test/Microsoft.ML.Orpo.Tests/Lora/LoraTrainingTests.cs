using TorchSharp;
using Microsoft.ML.Orpo.ModelFiles;
using Microsoft.ML.Orpo.Modeling;
using Microsoft.ML.Orpo.Preferences;
using Microsoft.ML.Orpo.Tests.Infrastructure;
using Microsoft.ML.Orpo.Tests.Training;
using Microsoft.ML.Orpo.Training;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Tests.Lora;

/// <summary>LoRA training's variants: a bfloat16 frozen base (with and without mixed precision) and adapter dropout.</summary>
[TestClass]
public sealed class LoraTrainingTests
{
    private static CausalLanguageModel Adapted(LoraConfig config, int bSeed = 7)
    {
        var model = TrainingFixtures.LoadModel();
        LoraFixtures.RandomizeB(LoraAdapters.Create(model.Network, config, seed: 5), bSeed);
        return model;
    }

    [TestMethod]
    [DataRow(OrpoPrecision.Float32, false)]
    [DataRow(OrpoPrecision.BFloat16, false)]
    [DataRow(OrpoPrecision.Float32, true, DisplayName = "DoRA, float32 products")]
    [DataRow(OrpoPrecision.BFloat16, true, DisplayName = "DoRA, bfloat16 products")]
    public void BFloat16BaseTrainsTheAdaptersAndStaysBitIdentical(OrpoPrecision precision, bool dora)
    {
        using var model = Adapted(LoraFixtures.Config(bf16: true, dora: dora));
        var network = model.Network;
        Assert.IsTrue(network.Projections().All(p => p.Module.weight!.dtype == ScalarType.BFloat16), "decoder projections in bfloat16");
        Assert.IsTrue(network.NamedWeights().Where(p => !p.Name.EndsWith("_proj.weight", StringComparison.Ordinal))
            .All(p => p.Parameter.dtype == ScalarType.Float32), "embedding, norms and head stay float32");
        Assert.IsTrue(network.Adapters!.NamedParameters().All(p => p.Parameter.dtype == ScalarType.Float32), "float32 adapters");
        var baseBefore = TrainingFixtures.Snapshot(model);
        var adaptersBefore = LoraFixtures.Snapshot(network.Adapters);
        var pairs = LoraFixtures.ShortPairs(model, 4);
        var settings = TrainingFixtures.Plain(batchSize: 2, learningRate: 1e-2) with { Lora = network.Adapters.Config, Precision = precision };
        var history = new OrpoTrainer(model, settings).Train(pairs);

        // The same adapters on the float32 base: the first step's loss within bfloat16 rounding (of the base, and of
        // the products under mixed precision).
        using var reference = Adapted(LoraFixtures.Config(dora: dora));
        var referenceHistory = new OrpoTrainer(reference, settings with { Precision = OrpoPrecision.Float32, Epochs = 1 }).Train(pairs);
        double lossGap = Math.Abs(history[0].Loss - referenceHistory[0].Loss) / referenceHistory[0].Loss;
        Console.WriteLine($"bfloat16 base, {precision}: losses {string.Join(", ", history.Select(h => h.Loss.ToString("F5")))}; first loss {lossGap:E2} from the float32 base's");
        Assert.HasCount(2, history);
        Assert.IsTrue(history.All(h => double.IsFinite(h.Loss) && h.GradNorm > 0), "finite losses, non-zero gradients");
        Assert.IsLessThan(2e-2, lossGap);
        Assert.IsTrue(TrainingFixtures.BitIdentical(baseBefore, TrainingFixtures.Snapshot(model)), "the bfloat16 base is untouched");
        Assert.IsTrue(network.Projections().All(p => p.Module.weight!.dtype == ScalarType.BFloat16), "still bfloat16");
        var adaptersAfter = LoraFixtures.Snapshot(network.Adapters);
        Assert.IsTrue(adaptersAfter.All(kv => !kv.Value.AsSpan().SequenceEqual(adaptersBefore[kv.Key])), "every A and B (and DoRA magnitude) moved");
    }

    [TestMethod]
    [DataRow(false, DisplayName = "Hugging Face folder (safetensors)")]
    [DataRow(true, DisplayName = "llama2.c .bin")]
    public void ABFloat16BaseLoadsItsProjectionsInBFloat16AsConvertingTheLoadedModelWould(bool llama2c)
    {
        // A LoRA run with a bfloat16 base builds and loads its projections in bfloat16 (no float32 model at the load's
        // peak); the weights must be those of the float32 model converted after loading, bit for bit.
        string path = llama2c ? TestAssets.Stories260KBin : TestAssets.Stories260KHf;
        string? tokenizer = llama2c ? TestAssets.Stories260KTokenizer : null;
        using var converted = CausalLanguageModel.Load(path, tokenizer, "cpu");
        foreach (var (_, _, module, _) in converted.Network.Projections()) module.to(ScalarType.BFloat16);
        using var loaded = CausalLanguageModel.Load(path, tokenizer, "cpu", ScalarType.BFloat16);
        var expected = converted.Network.NamedWeights();
        var actual = loaded.Network.NamedWeights();
        CollectionAssert.AreEqual(expected.Select(p => p.Name).ToList(), actual.Select(p => p.Name).ToList());
        Assert.AreEqual(7 * converted.Config.NumHiddenLayers, actual.Count(p => p.Parameter.dtype == ScalarType.BFloat16), "the seven projections of every layer");
        foreach (var ((name, want), (_, got)) in expected.Zip(actual))
        {
            Assert.AreEqual(want.dtype, got.dtype, name);
            Assert.IsTrue(want.bytes.SequenceEqual(got.bytes), $"{name}: not the converted weights bit for bit");
        }
    }

    [TestMethod]
    public void BFloat16BaseComputesTheFloat32ProductOfTheRoundedWeights()
    {
        using var float32Base = Adapted(LoraFixtures.Config());
        using var bf16Base = Adapted(LoraFixtures.Config(bf16: true));
        var exact = LoraFixtures.Logits(float32Base);
        var rounded = LoraFixtures.Logits(bf16Base);
        double roundingGap = LoraFixtures.RelativeMaxError(exact, rounded);
        // The float32 base with its projections rounded to bfloat16 by hand: the same function up to float32 summation.
        using (no_grad())
            foreach (var (_, _, module, _) in float32Base.Network.Projections())
                using (var roundedWeight = module.weight!.to_type(ScalarType.BFloat16).to_type(ScalarType.Float32))
                    module.weight.copy_(roundedWeight);
        double productGap = LoraFixtures.RelativeMaxError(LoraFixtures.Logits(float32Base), rounded);
        Console.WriteLine($"bfloat16 base: logits {roundingGap:E2} from the float32 base's, {productGap:E2} from the float32 product of the rounded weights");
        Assert.IsGreaterThan(1e-5, roundingGap, "the base really is rounded");
        Assert.IsLessThan(2e-2, roundingGap, "within bfloat16 rounding (8-bit mantissa, 4e-3 per weight) through five layers");
        Assert.IsLessThan(2e-6, productGap);
    }

    /// <summary>Two steps of 2 pairs from the same adapters; the adapters afterwards.</summary>
    private static Dictionary<string, double[]> Train(double dropout, int seed, bool recompute, bool dora)
    {
        using var model = Adapted(LoraFixtures.Config(dropout: dropout, dora: dora));
        var settings = TrainingFixtures.Plain(batchSize: 2, learningRate: 1e-2) with
        {
            Lora = model.Network.Adapters!.Config, Seed = seed, RecomputeActivations = recompute,
        };
        new OrpoTrainer(model, settings).Train(LoraFixtures.ShortPairs(model, 4));
        return LoraFixtures.Snapshot(model.Network.Adapters);
    }

    [TestMethod]
    [DataRow(false)]
    [DataRow(true, DisplayName = "DoRA")]
    public void DropoutIsReproducibleFromTheSeedAndRedrawnIdenticallyWhenRecomputing(bool dora)
    {
        var first = Train(dropout: 0.2, seed: 1, recompute: false, dora);
        Assert.IsTrue(LoraFixtures.BitIdentical(first, Train(dropout: 0.2, seed: 1, recompute: false, dora)), "same seed: bit-identical adapters");
        Assert.IsTrue(LoraFixtures.BitIdentical(first, Train(dropout: 0.2, seed: 1, recompute: true, dora)),
            "recomputed activations draw the same masks: bit-identical adapters");
        // The masks matter: another seed draws others, and no dropout trains otherwise.
        double otherSeed = LoraFixtures.MaxDifference(first, Train(dropout: 0.2, seed: 2, recompute: false, dora));
        double noDropout = LoraFixtures.MaxDifference(first, Train(dropout: 0, seed: 1, recompute: false, dora));
        Console.WriteLine($"dropout 0.2: adapters {otherSeed:E2} from another seed's, {noDropout:E2} from no dropout's");
        Assert.IsGreaterThan(1e-4, otherSeed);
        Assert.IsGreaterThan(1e-4, noDropout);
    }

    [TestMethod]
    public void DropoutIsOffOutsideTrainingSteps()
    {
        using var model = Adapted(LoraFixtures.Config(dropout: 0.5));
        var settings = TrainingFixtures.Plain(batchSize: 2, learningRate: 1e-2) with { Lora = model.Network.Adapters!.Config };
        new OrpoTrainer(model, settings).Train(LoraFixtures.ShortPairs(model, 2));
        var adapters = model.Network.Adapters;
        model.Network.eval();
        var evaluated = LoraFixtures.Logits(model);
        CollectionAssert.AreEqual(evaluated, LoraFixtures.Logits(model), "deterministic");
        // The same trained adapters without dropout: the same logits, bit for bit.
        using var plain = TrainingFixtures.LoadModel();
        var weights = adapters.Export();
        LoraAdapters.Load(plain.Network, adapters.Config with { Dropout = 0 }, weights, "trained adapters");
        foreach (var t in weights.Values) t.Dispose();
        CollectionAssert.AreEqual(evaluated, LoraFixtures.Logits(plain), "equal to the model without dropout");
        // Inside a training step the same forward drops inputs.
        double[] dropped;
        using (adapters.Dropout.During(runSeed: 1, step: 0, microBatch: 0)) dropped = LoraFixtures.Logits(model);
        Assert.IsGreaterThan(1e-3, LoraFixtures.RelativeMaxError(evaluated, dropped), "dropout acts during a training step");
        CollectionAssert.AreEqual(evaluated, LoraFixtures.Logits(model), "and is off again after it");
    }
    [TestMethod]
    [DataRow(false)]
    [DataRow(true, DisplayName = "DoRA")]
    public void SharedPromptForwardGivesTheConcatenatedLossAndAdapterGradients(bool dora)
    {
        // Non-zero adapters on every projection, no dropout: the shared-prompt layout computes the same function of the
        // adapters, so its loss and its gradients of A and B (and m) equal the concatenated layout's up to float32 summation.
        using var model = Adapted(LoraFixtures.Config(dora: dora));
        var pairs = LoraFixtures.ShortPairs(model, 4);
        var concat = TrainingFixtures.Plain(batchSize: 4, learningRate: 1e-2) with { Lora = model.Network.Adapters!.Config };
        var (concatLoss, concatGrads) = AdapterLossAndGradients(model, pairs, concat, dropoutStep: null);
        var (sharedLoss, sharedGrads) = AdapterLossAndGradients(model, pairs, concat with { SharedPromptForward = true }, dropoutStep: null);
        Assert.AreEqual(concatLoss, sharedLoss, 1e-5 * Math.Abs(concatLoss), "loss");
        double scale = concatGrads.Values.Max(g => g.Max(Math.Abs));
        Assert.IsGreaterThan(0, scale, "the adapters get a gradient");
        Assert.IsLessThan(1e-5 * scale, LoraFixtures.MaxDifference(concatGrads, sharedGrads), "gradients of A and B");

        // With dropout the prompt is encoded once, so chosen and rejected see one mask on it (two in the concatenated
        // layout): a different draw, not a different loss function. It is still a function of the step's seed.
        using var dropped = Adapted(LoraFixtures.Config(dropout: 0.3, dora: dora));
        var settings = concat with { Lora = dropped.Network.Adapters!.Config, SharedPromptForward = true };
        var (first, firstGrads) = AdapterLossAndGradients(dropped, pairs, settings, dropoutStep: 0);
        var (again, againGrads) = AdapterLossAndGradients(dropped, pairs, settings, dropoutStep: 0);
        var (other, _) = AdapterLossAndGradients(dropped, pairs, settings, dropoutStep: 1);
        var (noDropout, _) = AdapterLossAndGradients(dropped, pairs, settings, dropoutStep: null);
        Assert.AreEqual(first, again, "the same step's mask again");
        Assert.AreEqual(0.0, LoraFixtures.MaxDifference(firstGrads, againGrads), "and the same gradients");
        Assert.AreNotEqual(first, other, "another step draws another mask");
        Assert.AreNotEqual(first, noDropout, "dropout acts in the shared layout");
    }

    private static (double Loss, Dictionary<string, double[]> Gradients) AdapterLossAndGradients(CausalLanguageModel model,
        IReadOnlyList<EncodedPair> pairs, TrainingSettings settings, int? dropoutStep)
    {
        var network = model.Network;
        network.train();
        network.Adapters!.ZeroGradients();
        double nllTokens = pairs.Sum(p => (double)p.NllTokenCount(settings.IncludePromptInNll));
        using var scope = NewDisposeScope();
        using var dropout = dropoutStep is int step ? network.Adapters.Dropout.During(runSeed: 3, step, microBatch: 0) : null;
        var (terms, _) = PreferenceForward.Loss(network, pairs, settings, CPU, nllTokens, pairs.Count);
        terms.Loss.backward();
        var gradients = network.Adapters.NamedParameters().ToDictionary(p => p.Name, p => p.Parameter.grad!.to_type(ScalarType.Float64).data<double>().ToArray());
        return (terms.Loss.ToDouble(), gradients);
    }
}
