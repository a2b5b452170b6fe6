using System.Text.Json;

namespace Microsoft.ML.Orpo.Embeddings.Tests;

[TestClass]
public sealed class MiniLmEmbedderTests
{
    private static MiniLmEmbedder _embedder = null!;

    private sealed record FixtureSentence(string Text, int[] Ids, float[] Embedding);
    private sealed record Fixture(string Model, string Reference, int MaxSeqLength, FixtureSentence[] Sentences);

    private static readonly Fixture Reference = JsonSerializer.Deserialize<Fixture>(
        File.ReadAllText(Path.Combine(AppContext.BaseDirectory, "TestData", "minilm-reference.json")),
        new JsonSerializerOptions { PropertyNameCaseInsensitive = true })!;

    [ClassInitialize]
    public static void Load(TestContext _) => _embedder = MiniLmEmbedder.Create(batchSize: 4);

    [ClassCleanup]
    public static void Unload() => _embedder.Dispose();

    private static double Cosine(float[] a, float[] b)
    {
        double dot = 0, na = 0, nb = 0;
        for (int i = 0; i < a.Length; i++) { dot += a[i] * b[i]; na += a[i] * a[i]; nb += b[i] * b[i]; }
        return dot / Math.Sqrt(na * nb);
    }

    private static double Norm(float[] v) => Math.Sqrt(v.Sum(x => (double)x * x));

    [TestMethod]
    public void TokenIdsEqualTheIndependentWordPiece()
    {
        Assert.IsGreaterThanOrEqualTo(10, Reference.Sentences.Length);
        foreach (var s in Reference.Sentences)
            CollectionAssert.AreEqual(s.Ids, _embedder.Tokenize(s.Text).ToArray(), $"tokens of {JsonSerializer.Serialize(s.Text)}");
    }

    [TestMethod]
    public void EmbeddingsMatchTheIndependentImplementation()
    {
        var vectors = _embedder.Embed(Reference.Sentences.Select(s => s.Text).ToArray());
        var cosines = Reference.Sentences.Select((s, i) => Cosine(s.Embedding, vectors[i])).ToArray();
        Console.WriteLine($"cosine with the transformers.js reference over {cosines.Length} sentences: min {cosines.Min():F9}, mean {cosines.Average():F9}");
        for (int i = 0; i < cosines.Length; i++)
        {
            Assert.AreEqual(MiniLmEmbedder.Dimension, vectors[i].Length);
            Assert.IsGreaterThanOrEqualTo(0.999, cosines[i], $"sentence {i} {JsonSerializer.Serialize(Reference.Sentences[i].Text)}");
        }
    }

    [TestMethod]
    public void EmbeddingsHaveUnitLength()
    {
        foreach (var v in _embedder.Embed(["Lily went to the park.", "", "a b c d e f g"]))
            Assert.AreEqual(1.0, Norm(v), 1e-5);
    }

    [TestMethod]
    public void BatchedEmbeddingsEqualOneAtATime()
    {
        // Mixed lengths, more texts than the batch size of 4: padding and batch order must not change a vector.
        var texts = Reference.Sentences.Select(s => s.Text).Reverse().ToArray();
        var batched = _embedder.Embed(texts);
        for (int i = 0; i < texts.Length; i++)
        {
            var single = _embedder.Embed(texts[i]);
            for (int d = 0; d < single.Length; d++)
                Assert.AreEqual(single[d], batched[i][d], 2e-5f, $"text {i}, dimension {d}");
        }
        Assert.AreEqual(0, _embedder.Embed(Array.Empty<string>()).Length);
    }

    [TestMethod]
    public void EmptyTextIsClsAndSepAndLongTextIsCutTo256Pieces()
    {
        CollectionAssert.AreEqual(new[] { 101, 102 }, _embedder.Tokenize("").ToArray());
        Assert.AreEqual(1.0, Norm(_embedder.Embed("")), 1e-5);

        string story = string.Concat(Enumerable.Repeat("Lily and Tom played with a big red ball in the sunny park. ", 40));
        var ids = _embedder.Tokenize(story);
        Assert.AreEqual(MiniLmEmbedder.MaxSequenceLength, ids.Count);
        Assert.AreEqual(102, ids[^1], "[SEP] closes a cut text");
        // Only the first 254 pieces count: whatever follows them does not change the embedding.
        var vectors = _embedder.Embed([story, story + " Then a dragon ate the moon and everyone cried."]);
        CollectionAssert.AreEqual(vectors[0], vectors[1]);
    }

    [TestMethod]
    public void AWordOfMoreThan100CharactersIsUnknownAsInBert()
    {
        CollectionAssert.AreEqual(new[] { 101, 100, 102 }, _embedder.Tokenize(new string('a', 101)).ToArray());
        var hundred = _embedder.Tokenize(new string('a', 100));
        Assert.IsTrue(hundred.Count > 3 && !hundred.Contains(100), "100 characters are still split into word pieces");
    }

    [TestMethod]
    public void DisposedEmbedderRefusesWork()
    {
        var embedder = MiniLmEmbedder.Create();
        Assert.AreEqual(MiniLmEmbedder.Dimension, embedder.Embed("hello").Length);
        embedder.Dispose();
        embedder.Dispose();
        Assert.ThrowsExactly<ObjectDisposedException>(() => embedder.Embed("hello"));
        Assert.ThrowsExactly<ObjectDisposedException>(() => embedder.Tokenize("hello"));
    }

    [TestMethod]
    public void NullTextIsRefused()
    {
        Assert.ThrowsExactly<ArgumentNullException>(() => _embedder.Embed((IReadOnlyList<string>)null!));
        Assert.ThrowsExactly<ArgumentException>(() => _embedder.Embed(["a", null!]));
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => MiniLmEmbedder.Create(batchSize: 0));
    }

    [TestMethod]
    public void DiversityMetricsUseMiniLm()
    {
        var ml = new MLContext(seed: 1);
        using var model = OrpoTransformer.FromPretrained(ml, Path.Combine(RepoRoot(), "models", "stories260K", "hf"));
        var options = new OrpoDiversityOptions { SamplesPerPrompt = 3 }.WithMiniLm(_embedder);
        options.Generation.MaxNewTokens = 24;
        var metrics = model.EvaluateDiversity(["Once upon a time, there was a little dog named", "Tom and his mom went to the"], options);

        Console.WriteLine($"MiniLM: PID {metrics.PerInputDiversity:F4}, AID {metrics.AcrossInputDiversity:F4}");
        var first = _embedder.Embed([metrics.Samples[0][0], metrics.Samples[1][0]]);
        Assert.AreEqual(Cosine(first[0], first[1]), metrics.AcrossInputDiversity, 1e-6, "AID of two prompts is the cosine of their first samples' MiniLM embeddings");
        Assert.IsTrue(metrics.PerInputDiversity is > -1 and < 1);
    }

    private static string RepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "Microsoft.ML.Orpo.sln")))
                return dir.FullName;
        throw new InvalidOperationException("Could not find Microsoft.ML.Orpo.sln above " + AppContext.BaseDirectory);
    }
}
