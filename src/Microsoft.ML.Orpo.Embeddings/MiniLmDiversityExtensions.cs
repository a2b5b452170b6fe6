namespace Microsoft.ML.Orpo.Embeddings;

/// <summary>Plugs <see cref="MiniLmEmbedder"/> into the diversity metrics of <see cref="OrpoEvaluation.EvaluateDiversity"/>.</summary>
public static class MiniLmDiversityExtensions
{
    /// <summary>
    /// Makes <paramref name="options"/> embed the samples with <paramref name="embedder"/>, as the ORPO paper did with
    /// an external sentence-embedding model (section 6.4).
    /// </summary>
    /// <param name="options">The options to change.</param>
    /// <param name="embedder">The embedder; it must outlive every evaluation that uses these options.</param>
    /// <returns><paramref name="options"/>, for chaining.</returns>
    public static OrpoDiversityOptions WithMiniLm(this OrpoDiversityOptions options, MiniLmEmbedder embedder)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(embedder);
        options.Embedding = embedder.Embed;
        return options;
    }
}
