using Microsoft.ML.Orpo.Tests.Infrastructure;
using Microsoft.ML.Orpo.Tokenization;

namespace Microsoft.ML.Orpo.Tests.Tokenization;

[TestClass]
public sealed class WhitespaceResponseTests
{
    private sealed record Pair(string Prompt, string Chosen, string Rejected);

    [TestMethod]
    public void WhitespaceOnlyResponsesEncodeTrainAndDecode()
    {
        var ml = new MLContext(seed: 1);
        var rows = new[]
        {
            new Pair("Once upon a time", "\n\n", " there was a dog."),
            new Pair("The cat", " ", " sat on the mat."),
            new Pair("   ", "\t\n", " Lily was happy."),
            new Pair("Tom said", "  ", " hello."),
        };
        var options = new OrpoOptions { BaseModelPath = TestAssets.Stories260KHf, BatchSize = 2, Epochs = 1, LearningRate = 1e-3, Seed = 2, Shuffle = false };
        using var fitted = ml.Transforms.OrpoFineTune(options).Fit(ml.Data.LoadFromEnumerable(rows));

        Assert.HasCount(2, fitted.TrainingHistory, "every pair is trained on: 4 pairs in batches of 2");
        Assert.IsTrue(fitted.TrainingHistory.All(m => double.IsFinite(m.Loss)));

        var tokenizer = OrpoTokenizer.Load(TestAssets.Stories260KHf);
        foreach (var row in rows)
        {
            var pair = fitted.Encode(row.Prompt, row.Chosen, row.Rejected);
            var textIds = tokenizer.Encode(row.Chosen);
            Assert.IsNotEmpty(textIds, $"ids of {row.Chosen.Replace("\n", "\\n")}");
            CollectionAssert.AreEqual(textIds.Append(tokenizer.EosId!.Value).ToArray(), pair.ChosenIds.ToArray());
            Assert.AreEqual(tokenizer.Decode(textIds), tokenizer.Decode(pair.ChosenIds), "EOS is left out of the decoding");
        }
        // An empty response is still no response.
        Assert.ThrowsExactly<ArgumentException>(() => fitted.Encode("p", "", "b"));
    }

    [TestMethod]
    public void WhitespaceOnlyTextRoundTripsThroughARealByteLevelTokenizer()
    {
        var tokenizer = OrpoTokenizer.Load(RealTokenizers.Json("qwen3"));
        foreach (string text in new[] { "\n\n", " ", "\t", " \n\t \n" })
            Assert.AreEqual(text, tokenizer.Decode(tokenizer.Encode(text)));
    }
}
