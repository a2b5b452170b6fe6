namespace Microsoft.ML.Orpo.Evaluation;

/// <summary>Cosine similarity of embedding vectors, accumulated in double precision.</summary>
internal static class CosineSimilarity
{
    /// <summary>cos(a, b) in [-1, 1]; 0 when either vector is all zeros.</summary>
    public static double Of(float[] a, float[] b)
    {
        if (a.Length != b.Length) throw new ArgumentException($"Embeddings of different lengths ({a.Length} and {b.Length}) cannot be compared.");
        double dot = 0, na = 0, nb = 0;
        for (int i = 0; i < a.Length; i++)
        {
            dot += (double)a[i] * b[i];
            na += (double)a[i] * a[i];
            nb += (double)b[i] * b[i];
        }
        if (na == 0 || nb == 0) return 0;
        return Math.Clamp(dot / (Math.Sqrt(na) * Math.Sqrt(nb)), -1.0, 1.0);
    }

    /// <summary>The mean of cos over all unordered pairs of at least two vectors.</summary>
    public static double MeanPairwise(IReadOnlyList<float[]> vectors)
    {
        if (vectors.Count < 2) throw new ArgumentException("Pairwise similarity needs at least two vectors.", nameof(vectors));
        double sum = 0;
        int pairs = 0;
        for (int i = 0; i < vectors.Count; i++)
            for (int j = i + 1; j < vectors.Count; j++)
            {
                sum += Of(vectors[i], vectors[j]);
                pairs++;
            }
        return sum / pairs;
    }
}
