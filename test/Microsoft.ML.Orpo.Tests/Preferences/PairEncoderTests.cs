using Microsoft.ML.Orpo.Tests.Infrastructure;
using Microsoft.ML.Orpo.Tokenization;
using Microsoft.ML.Orpo.Training;
using Microsoft.ML.Orpo.Preferences;

namespace Microsoft.ML.Orpo.Tests.Preferences;

[TestClass]
public sealed class PairEncoderTests
{
    private static readonly OrpoTokenizer Tokenizer = OrpoTokenizer.Load(TestAssets.Stories260KTokenizer);

    [TestMethod]
    public void PromptAndResponsesAreEncodedSeparatelyWithBosAndEos()
    {
        var encoder = new PairEncoder(Tokenizer, "Q: {prompt}\nA:", 512, 256);
        var pair = encoder.Encode("Who is Tom?", "Tom is a cat.", "Tom is a dog.", out var outcome)!;
        Assert.AreEqual(PairOutcome.Kept, outcome);
        CollectionAssert.AreEqual(new[] { 1 }.Concat(Tokenizer.Encode("Q: Who is Tom?\nA:")).ToList(), pair.PromptIds.ToList());
        CollectionAssert.AreEqual(Tokenizer.Encode("Tom is a cat.").Append(2).ToList(), pair.ChosenIds.ToList());
        CollectionAssert.AreEqual(Tokenizer.Encode("Tom is a dog.").Append(2).ToList(), pair.RejectedIds.ToList());
        Assert.AreEqual(1, pair.PromptIds.Count(i => i == 1), "exactly one BOS");
    }

    [TestMethod]
    public void EmptyPromptIsJustBos() =>
        CollectionAssert.AreEqual(new[] { 1 }, new PairEncoder(Tokenizer, null, 64, 32).EncodePrompt("").ToList());

    [TestMethod]
    public void LongPairsKeepThePromptEndAndCutResponses()
    {
        var encoder = new PairEncoder(Tokenizer, null, maxLength: 24, maxPromptLength: 10);
        string prompt = "Once upon a time, there was a little girl named Lily.";
        var full = new PairEncoder(Tokenizer, null, 4096, 2048).EncodePrompt(prompt);
        Assert.IsTrue(full.Count is > 10 and < 24, $"the prompt ({full.Count} tokens) is over MaxPromptLength but under MaxLength");
        var pair = encoder.Encode(prompt, "She saw a big red ball and a small blue bird in the tall green tree.", "No.", out var outcome)!;
        Assert.AreEqual(PairOutcome.Truncated, outcome);
        Assert.HasCount(10, pair.PromptIds);
        Assert.AreEqual(1, pair.PromptIds[0], "BOS survives");
        CollectionAssert.AreEqual(full.TakeLast(9).ToList(), pair.PromptIds.Skip(1).ToList(), "the prompt keeps its end");
        Assert.HasCount(14, pair.ChosenIds, "the longer response is cut to MaxLength - prompt");
        Assert.AreEqual(2, pair.RejectedIds[^1], "a short response keeps its EOS");
        Assert.IsLessThanOrEqualTo(24, pair.LongestLength);
    }

    [TestMethod]
    public void EmptyAndIdenticalResponsesAreSkippedWithTheirReason()
    {
        var encoder = new PairEncoder(Tokenizer, null, 64, 32);
        Assert.IsNull(encoder.Encode("p", "", "b", out var empty));
        Assert.AreEqual(PairOutcome.SkippedEmptyResponse, empty);
        // Whitespace is text, with ids of its own.
        Assert.IsNotNull(encoder.Encode("p", " ", "b", out var whitespace));
        Assert.AreEqual(PairOutcome.Kept, whitespace);
        Assert.IsNull(encoder.Encode("p", "same", "same", out var identical));
        Assert.AreEqual(PairOutcome.SkippedIdenticalResponses, identical);
        var tight = new PairEncoder(Tokenizer, null, 6, 3);
        Assert.IsNull(tight.Encode("p", "The cat sat on the mat.", "The cat sat on the rug.", out var dropped));
        Assert.AreEqual(PairOutcome.DroppedIdenticalAfterTruncation, dropped);
    }

    [TestMethod]
    public void PromptLongerThanMaxLengthIsRefusedUnlessTruncationIsAsked()
    {
        string prompt = string.Join(" ", Enumerable.Repeat("Once upon a time", 10));
        Assert.IsNull(new PairEncoder(Tokenizer, null, 16, 8).Encode(prompt, "Yes.", "No.", out var refused));
        Assert.AreEqual(PairOutcome.PromptLongerThanMaxLength, refused);
        var pair = new PairEncoder(Tokenizer, null, 16, 8, truncateLongPrompts: true).Encode(prompt, "Yes.", "No.", out var cut)!;
        Assert.AreEqual(PairOutcome.Truncated, cut);
        Assert.HasCount(8, pair.PromptIds);
        Assert.AreEqual(1, pair.PromptIds[0]);
    }
}
