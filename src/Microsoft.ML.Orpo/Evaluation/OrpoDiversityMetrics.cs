namespace Microsoft.ML.Orpo;

/// <summary>
/// The ORPO paper's diversity metrics (section 6.4), as mean pairwise cosine similarities of response embeddings:
/// values lie in [-1, 1] and lower means more diverse.
/// </summary>
public sealed record OrpoDiversityMetrics
{
    /// <summary>Per-Input Diversity (PID): the mean pairwise cosine similarity of the samples of one prompt, averaged over prompts.</summary>
    public double PerInputDiversity { get; init; }

    /// <summary>Across-Input Diversity (AID): the mean pairwise cosine similarity of the first samples of all prompts.</summary>
    public double AcrossInputDiversity { get; init; }

    /// <summary>The per-prompt values whose mean is <see cref="PerInputDiversity"/>, in prompt order.</summary>
    public IReadOnlyList<double> PerPromptSimilarity { get; init; } = Array.Empty<double>();

    /// <summary>The generated samples: one list of <see cref="SamplesPerPrompt"/> responses per prompt.</summary>
    public IReadOnlyList<IReadOnlyList<string>> Samples { get; init; } = Array.Empty<IReadOnlyList<string>>();

    /// <summary>Number of prompts.</summary>
    public int Prompts { get; init; }

    /// <summary>Samples per prompt.</summary>
    public int SamplesPerPrompt { get; init; }
}
