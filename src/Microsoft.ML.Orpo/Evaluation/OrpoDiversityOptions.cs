namespace Microsoft.ML.Orpo;

/// <summary>Settings of <see cref="OrpoEvaluation.EvaluateDiversity"/>.</summary>
public sealed class OrpoDiversityOptions
{
    /// <summary>Samples generated per prompt (the paper's K); at least 2. Default 5.</summary>
    public int SamplesPerPrompt { get; set; } = 5;

    /// <summary>
    /// How samples are drawn. Default: temperature 1 (the paper's setting), no top-k/top-p, 48 new tokens, seed 0.
    /// Prompt <c>i</c> is sampled with seed <c>Seed + i</c>, so the result is deterministic for a seed.
    /// Temperature must be above 0: greedy decoding makes every sample of a prompt identical.
    /// </summary>
    public GenerationOptions Generation { get; set; } = new() { Temperature = 1.0, MaxNewTokens = 48 };

    /// <summary>
    /// Maps texts to one embedding vector each (all of the same length). Null (the default) uses the evaluated
    /// model's own mean-pooled final hidden states (<see cref="OrpoEvaluation.HiddenStateEmbedding"/>). The ORPO
    /// paper embedded the responses with an external sentence-embedding model; plug one in here to reproduce that.
    /// </summary>
    public Func<IReadOnlyList<string>, float[][]>? Embedding { get; set; }
}
