using TorchSharp;
using Microsoft.ML.Orpo.Generation;
using Microsoft.ML.Orpo.Modeling;
using Microsoft.ML.Orpo.Tests.Infrastructure;
using Microsoft.ML.Orpo.ModelFiles;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Tests.Generation;

[TestClass]
public sealed class Stories260KGenerationTests
{
    // The first 200 characters of llama2.c's published greedy output for stories260K
    // (`./run stories260K.bin -z tok512.bin -t 0.0`, doc/stories260K.md), as recorded in models/stories260K/README.md.
    private const string PublishedStart =
        "Once upon a time, there was a little girl named Lily. She loved to play outside in the park. One day, she saw a big, red ball. " +
        "She wanted to play with it, but it was too high.\nLily's mom said, \"Lily, ";

    private static readonly GenerationOptions Greedy256 = new() { MaxNewTokens = 256, Temperature = 0 };

    [TestMethod]
    public void GreedyFromBosReproducesPublishedOutputFromBothFormats()
    {
        using var fromBin = CausalLanguageModel.Load(TestAssets.Stories260KBin, TestAssets.Stories260KTokenizer, "cpu");
        using var fromHf = CausalLanguageModel.Load(TestAssets.Stories260KHf, null, "cpu");
        var bos = new[] { new[] { 1 } };
        var eos = new HashSet<int> { 2 };
        var idsBin = TextGenerator.Generate(fromBin.Network, bos, Greedy256, eos)[0];
        var idsHf = TextGenerator.Generate(fromHf.Network, bos, Greedy256, eos)[0];

        Assert.HasCount(256, idsBin, "llama2.c's run produces 256 tokens without hitting BOS/EOS");
        CollectionAssert.AreEqual(idsBin, idsHf);
        string text = fromBin.Tokenizer.Decode(idsBin);
        Assert.StartsWith(PublishedStart, text);

        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var sequence = tensor(new long[] { 1 }.Concat(idsBin.Select(i => (long)i)).ToArray()).unsqueeze(0);
        var difference = (fromBin.Network.Forward(sequence) - fromHf.Network.Forward(sequence)).abs().max().ToDouble();
        Assert.IsLessThan(1e-5, difference, $"logits of the .bin and HF loads differ by {difference}");
    }

    [TestMethod]
    public void PublicGenerateFromEmptyPromptStartsFromBos()
    {
        var ml = new MLContext(seed: 1);
        using var model = OrpoTransformer.FromPretrained(ml, TestAssets.Stories260KHf);
        string text = model.Generate("", new GenerationOptions { MaxNewTokens = 256 });
        Assert.StartsWith(PublishedStart, text);
    }

    [TestMethod]
    public void KeyValueCacheDecodingEqualsFullRecomputation()
    {
        using var model = CausalLanguageModel.Load(TestAssets.Stories260KHf, null, "cpu");
        var prompt = new List<int> { 1 };
        prompt.AddRange(model.Tokenizer.Encode("Tom and his dog went to the park."));
        var cached = TextGenerator.Generate(model.Network, new[] { prompt }, new GenerationOptions { MaxNewTokens = 60 }, new HashSet<int>())[0];

        var sequence = new List<int>(prompt);
        using var noGrad = no_grad();
        for (int step = 0; step < 60; step++)
        {
            using var scope = NewDisposeScope();
            var logits = model.Network.Forward(tensor(sequence.Select(i => (long)i).ToArray()).unsqueeze(0));
            sequence.Add((int)logits[0, -1].argmax().ToInt64());
        }
        CollectionAssert.AreEqual(sequence.Skip(prompt.Count).ToList(), cached);
    }

    [TestMethod]
    public void BatchedGenerationEqualsOneByOne()
    {
        var ml = new MLContext(seed: 1);
        using var model = OrpoTransformer.FromPretrained(ml, TestAssets.Stories260KBin, TestAssets.Stories260KTokenizer);
        var prompts = new[] { "Once upon a time", "The cat", "", "Tom and his dog went to the park. They saw a big tree" };
        var options = new GenerationOptions { MaxNewTokens = 40 };
        var batched = model.Generate(prompts, options);
        var single = prompts.Select(p => model.Generate(p, options)).ToList();
        CollectionAssert.AreEqual(single, batched.ToList());
        Assert.IsTrue(single.All(s => s.Length > 20), "every prompt produced text");
    }

    [TestMethod]
    public void SamplingIsSeededAndTopKOneIsGreedy()
    {
        var ml = new MLContext(seed: 1);
        using var model = OrpoTransformer.FromPretrained(ml, TestAssets.Stories260KHf);
        const string prompt = "Once upon a time";
        var greedy = model.Generate(prompt, new GenerationOptions { MaxNewTokens = 30 });
        var sample = new GenerationOptions { MaxNewTokens = 30, Temperature = 1.0, Seed = 7 };
        Assert.AreEqual(model.Generate(prompt, sample), model.Generate(prompt, sample), "same seed, same text");
        var seeds = Enumerable.Range(0, 5).Select(s => model.Generate(prompt, new GenerationOptions { MaxNewTokens = 30, Temperature = 1.0, Seed = s })).ToList();
        Assert.IsGreaterThan(1, seeds.Distinct().Count(), "different seeds give different samples");
        Assert.AreEqual(greedy, model.Generate(prompt, new GenerationOptions { MaxNewTokens = 30, Temperature = 1.0, TopK = 1, Seed = 3 }));
        Assert.AreEqual(greedy, model.Generate(prompt, new GenerationOptions { MaxNewTokens = 30, Temperature = 1.0, TopP = 1e-9, Seed = 3 }));
    }

    [TestMethod]
    public void StopSequenceEndsTheTextBeforeIt()
    {
        var ml = new MLContext(seed: 1);
        using var model = OrpoTransformer.FromPretrained(ml, TestAssets.Stories260KHf);
        var full = model.Generate("", new GenerationOptions { MaxNewTokens = 60 });
        var stopped = model.Generate("", new GenerationOptions { MaxNewTokens = 60, StopSequences = new[] { "." } });
        Assert.AreEqual(full[..full.IndexOf('.')], stopped);
    }

    [TestMethod]
    public void RepeatedGenerationKeepsLiveTensorsAndMemoryFlat()
    {
        var ml = new MLContext(seed: 1);
        using var model = OrpoTransformer.FromPretrained(ml, TestAssets.Stories260KHf);
        var options = new GenerationOptions { MaxNewTokens = 24, Temperature = 0.8, TopK = 40, TopP = 0.9 };
        for (int i = 0; i < 10; i++) model.Generate(new[] { "Once upon a time", "The dog" }, options);
        // Tensor.TotalCount is process-wide: tensors earlier tests dropped undisposed are finalized now, not on the
        // finalizer thread inside the loop, where each one would lower the count.
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
        long tensorsBefore = Tensor.TotalCount;
        long rssBefore = Environment.WorkingSet;
        const int iterations = 150;
        for (int i = 0; i < iterations; i++) model.Generate(new[] { "Once upon a time", "The dog" }, options);
        long tensorsAfter = Tensor.TotalCount; // before any collection: a tensor the loop left to the finalizer still counts
        GC.Collect();
        long rssGrowth = Environment.WorkingSet - rssBefore;
        Console.WriteLine($"leak check: {iterations} generations, live tensors {tensorsBefore} -> {tensorsAfter}, RSS growth {rssGrowth / 1024} KiB");
        Assert.AreEqual(tensorsBefore, tensorsAfter, "live tensor count must not grow");
        Assert.IsLessThan(32L << 20, rssGrowth, "RSS must stay flat (under 32 MiB of growth)");
    }

    [TestMethod]
    public void GeneratingFirstLeavesTrainingGradientsUnchanged()
    {
        // Generation runs in inference mode; whatever a model caches on its first use (the rotary frequencies) must
        // still serve training afterwards, with the same loss and gradients as in a model that never generated.
        static (double Loss, Tensor Gradient) LossAndGradient(bool generateFirst)
        {
            using var model = Microsoft.ML.Orpo.Tests.Training.TrainingFixtures.LoadModel();
            if (generateFirst) TextGenerator.Generate(model.Network, new[] { new[] { 1, 403, 407 } }, new GenerationOptions { MaxNewTokens = 8 }, new HashSet<int>());
            var pairs = Microsoft.ML.Orpo.Tests.Training.TrainingFixtures.TrainPairs(model, 2);
            var settings = new Microsoft.ML.Orpo.Training.TrainingSettings { Lambda = 0.5 };
            model.Network.train();
            using var scope = NewDisposeScope();
            var (terms, _) = Microsoft.ML.Orpo.Training.PreferenceForward.Loss(model.Network, pairs, settings, CPU,
                pairs.Sum(p => (double)p.NllTokenCount(false)), pairs.Count);
            terms.Loss.backward();
            var gradient = model.Network.NamedWeights().First(w => w.Name.EndsWith("q_proj.weight", StringComparison.Ordinal)).Parameter.grad!;
            return (terms.Loss.ToDouble(), gradient.clone().DetachFromDisposeScope());
        }
        var (fresh, freshGradient) = LossAndGradient(generateFirst: false);
        var (afterGeneration, gradient) = LossAndGradient(generateFirst: true);
        using (freshGradient)
        using (gradient)
        {
            Assert.AreEqual(fresh, afterGeneration, "loss");
            Assert.IsTrue(gradient.eq(freshGradient).all().ToBoolean(), "gradients");
        }
    }
}
