using Microsoft.ML.Orpo.Tests.Infrastructure;

namespace Microsoft.ML.Orpo.Tests.Evaluation;

[TestClass]
public sealed class DiversityTests
{
    private static readonly string[] Prompts =
    {
        "Once upon a time, there was a little dog named",
        "Tom and his mom went to the",
        "The sun was shining and the birds",
        "One day, a big bear found a",
        "The little car was sad because",
        "Anna had a new red",
    };

    [TestMethod]
    public void PerInputAndAcrossInputDiversityAreCosinesDeterministicForASeedAndSamplesOfOnePromptAreMoreAlike()
    {
        var ml = new MLContext(seed: 1);
        using var model = OrpoTransformer.FromPretrained(ml, TestAssets.Stories260KHf);
        var options = new OrpoDiversityOptions { SamplesPerPrompt = 4 };
        options.Generation.MaxNewTokens = 32;
        options.Generation.Seed = 7;

        var first = model.EvaluateDiversity(Prompts, options);
        var again = model.EvaluateDiversity(Prompts, options);
        options.Generation.Seed = 8;
        var otherSeed = model.EvaluateDiversity(Prompts, options);

        Console.WriteLine($"stories260K: PID {first.PerInputDiversity:F4}, AID {first.AcrossInputDiversity:F4} (seed 7); " +
                          $"PID {otherSeed.PerInputDiversity:F4}, AID {otherSeed.AcrossInputDiversity:F4} (seed 8)");
        Console.WriteLine($"per prompt: {string.Join(", ", first.PerPromptSimilarity.Select(v => v.ToString("F3")))}");
        Console.WriteLine($"samples of prompt 0: {string.Join(" | ", first.Samples[0])}");
        foreach (var m in new[] { first, otherSeed })
        {
            Assert.IsTrue(m.PerInputDiversity is >= -1 and <= 1, $"PID {m.PerInputDiversity}");
            Assert.IsTrue(m.AcrossInputDiversity is >= -1 and <= 1, $"AID {m.AcrossInputDiversity}");
            Assert.IsGreaterThan(m.AcrossInputDiversity, m.PerInputDiversity, "samples for one prompt are more alike than first samples across prompts");
        }
        Assert.AreEqual(first.PerInputDiversity, again.PerInputDiversity);
        Assert.AreEqual(first.AcrossInputDiversity, again.AcrossInputDiversity);
        CollectionAssert.AreEqual(first.Samples.SelectMany(s => s).ToList(), again.Samples.SelectMany(s => s).ToList());
        CollectionAssert.AreNotEqual(first.Samples.SelectMany(s => s).ToList(), otherSeed.Samples.SelectMany(s => s).ToList());
        Assert.AreEqual(Prompts.Length, first.Prompts);
        Assert.IsTrue(first.Samples.All(s => s.Count == 4 && s.Distinct().Count() > 1), "temperature 1 gives different samples per prompt");
    }

    [TestMethod]
    public void APluggedInEmbeddingIsUsedForEverySample()
    {
        var ml = new MLContext(seed: 1);
        using var model = OrpoTransformer.FromPretrained(ml, TestAssets.Stories260KHf);
        var seen = new List<string>();
        // A constant embedding: every pair of samples has cosine 1.
        float[][] Constant(IReadOnlyList<string> texts)
        {
            seen.AddRange(texts);
            return texts.Select(_ => new[] { 1f, 2f, 3f }).ToArray();
        }
        var options = new OrpoDiversityOptions { SamplesPerPrompt = 3, Embedding = Constant };
        options.Generation.MaxNewTokens = 8;
        var m = model.EvaluateDiversity(Prompts.Take(3).ToList(), options);
        Assert.HasCount(9, seen);
        CollectionAssert.AreEqual(m.Samples.SelectMany(s => s).ToList(), seen);
        Assert.AreEqual(1.0, m.PerInputDiversity, 1e-12);
        Assert.AreEqual(1.0, m.AcrossInputDiversity, 1e-12);

        options.Embedding = texts => texts.Select(_ => new[] { float.NaN }).ToArray();
        Assert.ThrowsExactly<InvalidOperationException>(() => model.EvaluateDiversity(Prompts.Take(2).ToList(), options));
        options.Generation.Temperature = 0;
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => model.EvaluateDiversity(Prompts.Take(2).ToList(), options));
    }
}
