namespace Microsoft.ML.Orpo.Evaluation;

/// <summary>Samples responses and computes the paper's Per-Input and Across-Input Diversity from their embeddings.</summary>
internal static class DiversityEvaluator
{
    public static OrpoDiversityMetrics Evaluate(OrpoTransformer model, IReadOnlyList<string> prompts, OrpoDiversityOptions options)
    {
        ArgumentNullException.ThrowIfNull(prompts);
        ArgumentNullException.ThrowIfNull(options);
        if (prompts.Count < 2) throw new ArgumentException("Across-Input Diversity needs at least two prompts.", nameof(prompts));
        if (options.SamplesPerPrompt < 2)
            throw new ArgumentOutOfRangeException(nameof(options), options.SamplesPerPrompt, "OrpoDiversityOptions.SamplesPerPrompt must be >= 2.");
        var generation = options.Generation ?? throw new ArgumentNullException(nameof(options), "OrpoDiversityOptions.Generation must not be null.");
        generation.Validate();
        if (!(generation.Temperature > 0))
            throw new ArgumentOutOfRangeException(nameof(options), generation.Temperature,
                "OrpoDiversityOptions.Generation.Temperature must be > 0: greedy decoding makes every sample of a prompt identical.");
        var embed = options.Embedding ?? model.HiddenStateEmbedding();
        int k = options.SamplesPerPrompt;

        var samples = new List<IReadOnlyList<string>>(prompts.Count);
        for (int p = 0; p < prompts.Count; p++)
        {
            var sampling = generation.Clone();
            sampling.Seed = unchecked(generation.Seed + p);
            samples.Add(model.Generate(Enumerable.Repeat(prompts[p], k).ToArray(), sampling));
        }

        var vectors = Embed(embed, samples.SelectMany(s => s).ToList());
        var perPrompt = new double[prompts.Count];
        for (int p = 0; p < prompts.Count; p++)
            perPrompt[p] = CosineSimilarity.MeanPairwise(vectors.Skip(p * k).Take(k).ToList());
        double across = CosineSimilarity.MeanPairwise(Enumerable.Range(0, prompts.Count).Select(p => vectors[p * k]).ToList());
        return new OrpoDiversityMetrics
        {
            PerInputDiversity = perPrompt.Average(),
            AcrossInputDiversity = across,
            PerPromptSimilarity = perPrompt,
            Samples = samples,
            Prompts = prompts.Count,
            SamplesPerPrompt = k,
        };
    }

    /// <summary>Calls the embedding function and checks its answer: one finite vector per text, all of one length.</summary>
    private static float[][] Embed(Func<IReadOnlyList<string>, float[][]> embed, IReadOnlyList<string> texts)
    {
        var vectors = embed(texts) ?? throw new InvalidOperationException("The embedding function returned null.");
        if (vectors.Length != texts.Count)
            throw new InvalidOperationException($"The embedding function returned {vectors.Length} vectors for {texts.Count} texts.");
        int dim = vectors.Length == 0 ? 0 : vectors[0]?.Length ?? 0;
        for (int i = 0; i < vectors.Length; i++)
        {
            if (vectors[i] is null || vectors[i].Length != dim || dim == 0)
                throw new InvalidOperationException($"The embedding function returned a null, empty or differently sized vector for text {i}.");
            if (vectors[i].Any(v => !float.IsFinite(v)))
                throw new InvalidOperationException($"The embedding function returned a non-finite value for text {i}.");
        }
        return vectors;
    }
}
