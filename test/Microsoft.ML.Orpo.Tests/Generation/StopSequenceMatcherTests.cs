using Microsoft.ML.Orpo.Generation;
using Microsoft.ML.Orpo.Modeling;
using Microsoft.ML.Orpo.Tests.Infrastructure;
using Microsoft.ML.Orpo.Tests.Tokenization;
using Microsoft.ML.Orpo.Tokenization;
using Microsoft.ML.Orpo.ModelFiles;

namespace Microsoft.ML.Orpo.Tests.Generation;

/// <summary>
/// The windowed stop-sequence check stops every row at exactly the token where decoding the whole generated text
/// (the previous check) first contains a stop sequence.
/// </summary>
[TestClass]
public sealed class StopSequenceMatcherTests
{
    private static bool WholeText(OrpoTokenizer tokenizer, IReadOnlyList<int> ids, IReadOnlyList<string> stops) =>
        StopSequenceMatcher.Contains(tokenizer.Decode(ids), stops);

    /// <summary>The first prefix length at which <paramref name="check"/> says stop, or -1.</summary>
    private static int FirstStop(IReadOnlyList<int> ids, Func<IReadOnlyList<int>, bool> check)
    {
        var prefix = new List<int>();
        foreach (int id in ids)
        {
            prefix.Add(id);
            if (check(prefix)) return prefix.Count;
        }
        return -1;
    }

    private static IEnumerable<int[]> SentencePieceSequences(Random random, int count) =>
        Enumerable.Range(0, count).Select(_ => Enumerable.Range(0, 90).Select(_ => random.Next(0, 512)).ToArray());

    /// <summary>Byte tokens (often cut UTF-8 characters), whole two-byte characters, merges and added tokens.</summary>
    private static IEnumerable<int[]> ByteLevelSequences(Random random, int count)
    {
        int[] pieces = { 'a', 'b', ' ', '.', 0xC3, 0xA9, 0xE2, 0x82, 0xAC, 0xF0, 0x9F, 0x98, 0x80, TinyBpe.Hello, TinyBpe.SpaceW, TinyBpe.EAcute, TinyBpe.End, TinyBpe.Tool };
        return Enumerable.Range(0, count).Select(_ => Enumerable.Range(0, 90)
            .Select(_ => random.Next(4) == 0 ? random.Next(0, 256) : pieces[random.Next(pieces.Length)]).ToArray());
    }

    [TestMethod]
    [DataRow("sentencepiece")]
    [DataRow("byte-level bpe")]
    public void WindowedCheckStopsAtTheSameTokenAsTheWholeTextCheck(string kind)
    {
        var tokenizer = kind == "sentencepiece"
            ? OrpoTokenizer.Load(TestAssets.Stories260KHf)
            : OrpoTokenizer.Load(TinyBpe.WriteFolder(TinyBpe.Json()));
        var random = new Random(17);
        var sequences = kind == "sentencepiece" ? SentencePieceSequences(random, 150) : ByteLevelSequences(random, 150);
        int cases = 0, stopped = 0, spanning = 0;
        foreach (var ids in sequences)
        {
            string text = tokenizer.Decode(ids);
            for (int trial = 0; trial < 4 && text.Length > 10; trial++)
            {
                // Stops taken from the text itself (so they occur), of 1-12 characters, one or two of them; sometimes a
                // stop that never occurs, so the check must run over the whole sequence.
                int length = 1 + random.Next(12), start = random.Next(text.Length - Math.Min(length, text.Length) + 1);
                var stops = new List<string> { text.Substring(start, Math.Min(length, text.Length - start)) };
                if (trial == 1) stops.Add(text.Substring(random.Next(text.Length - 1), 2));
                if (trial == 3) stops = new List<string> { "\u0001never\u0002" };
                var matcher = new StopSequenceMatcher(stops, tokenizer);
                int expected = FirstStop(ids, prefix => WholeText(tokenizer, prefix, stops));
                int actual = FirstStop(ids, matcher.ShouldStop);
                Assert.AreEqual(expected, actual, $"{kind}: stops [{string.Join(" | ", stops)}] in ids [{string.Join(",", ids)}]");
                cases++;
                if (expected < 0) continue;
                stopped++;
                // A stop is "spanning" when the token that completed it does not hold it on its own.
                if (!WholeText(tokenizer, new[] { ids[expected - 1] }, stops)) spanning++;
            }
        }
        Console.WriteLine($"{kind}: {cases} cases, {stopped} stopped, {spanning} by a stop spanning several tokens");
        Assert.IsGreaterThan(100, spanning, "the cases must exercise stops spanning several tokens");
        Assert.IsGreaterThan(spanning, stopped, "and single-token ones");
    }

    /// <summary>
    /// Decoding with the model: a stop sequence of several tokens ends generation at the same token as the whole-text
    /// check did, and the public text is cut before it.
    /// </summary>
    [TestMethod]
    public void StopSequenceSpanningSeveralTokensStopsWhereTheWholeTextCheckDid()
    {
        using var model = CausalLanguageModel.Load(TestAssets.Stories260KHf, null, "cpu");
        var prompt = new List<int> { 1 };
        prompt.AddRange(model.Tokenizer.Encode("Once upon a time"));
        var options = new GenerationOptions { MaxNewTokens = 80 };
        var none = new HashSet<int>();
        var all = TextGenerator.Generate(model.Network, new[] { prompt }, options, none)[0];
        Assert.HasCount(80, all);
        string text = model.Tokenizer.Decode(all);
        // Twelve characters starting where token 60's text starts: past the 56-token window, so only a tail is decoded.
        int at = model.Tokenizer.Decode(all.Take(60)).Length;
        string stop = text.Substring(at, 12);
        Assert.AreEqual(at, text.IndexOf(stop, StringComparison.Ordinal), "the stop must first occur there");

        var stops = new[] { stop };
        var wholeText = TextGenerator.Generate(model.Network, new[] { prompt }, options, none, (_, ids) => WholeText(model.Tokenizer, ids, stops))[0];
        var windowed = TextGenerator.Generate(model.Network, new[] { prompt }, options, none, (_, ids) => new StopSequenceMatcher(stops, model.Tokenizer).ShouldStop(ids))[0];
        CollectionAssert.AreEqual(wholeText, windowed);
        Assert.IsLessThan(80, windowed.Count, "generation stopped early");
        Assert.IsGreaterThan(61, windowed.Count, "the stop spans several tokens");
        Assert.IsFalse(WholeText(model.Tokenizer, windowed.Take(windowed.Count - 1).ToList(), stops), "it completed on the last token");

        var ml = new MLContext(seed: 1);
        using var transformer = OrpoTransformer.FromPretrained(ml, TestAssets.Stories260KHf);
        string full = transformer.Generate("Once upon a time", options);
        string cut = transformer.Generate("Once upon a time", new GenerationOptions { MaxNewTokens = 80, StopSequences = stops });
        Assert.AreEqual(full[..full.IndexOf(stop, StringComparison.Ordinal)], cut);
    }
}
