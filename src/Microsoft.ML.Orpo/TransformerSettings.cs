using Microsoft.ML.Orpo.Modeling;
using Microsoft.ML.Orpo.Training;

namespace Microsoft.ML.Orpo;

/// <summary>What a fitted <see cref="OrpoTransformer"/> needs besides its weights; saved with it in the model zip.</summary>
internal sealed record TransformerSettings
{
    public string PromptColumnName { get; init; } = "Prompt";
    public string OutputColumnName { get; init; } = "Response";
    public string? PromptTemplate { get; init; }
    /// <summary>The chat template's source (resolved, never the "model" sentinel), or null.</summary>
    public string? ChatTemplate { get; init; }
    public int MaxLength { get; init; }
    public int MaxPromptLength { get; init; }
    public bool TruncateLongPrompts { get; init; }
    public double Lambda { get; init; } = 0.1;
    public bool IncludePromptInNll { get; init; }
    public GenerationOptions Generation { get; init; } = new();

    /// <summary>A base model's settings: generation defaults from its generation_config.json when given.</summary>
    public static TransformerSettings ForBaseModel(LlamaConfig config, GenerationConfig? generation = null)
    {
        int maxLength = Math.Min(1024, config.MaxPositionEmbeddings);
        return new TransformerSettings
        {
            MaxLength = maxLength, MaxPromptLength = maxLength / 2,
            Generation = generation?.ToGenerationOptions() ?? new GenerationOptions(),
        };
    }

    /// <summary>A fit's settings: <see cref="OrpoOptions.Generation"/> when the caller gave it, else the model's generation_config.json.</summary>
    public static TransformerSettings From(OrpoOptions options, TrainingSettings training, GenerationConfig generation) => new()
    {
        PromptColumnName = options.PromptColumnName,
        OutputColumnName = options.OutputColumnName,
        PromptTemplate = options.PromptTemplate,
        ChatTemplate = training.ChatTemplate,
        MaxLength = training.MaxLength,
        MaxPromptLength = training.MaxPromptLength,
        TruncateLongPrompts = training.TruncateLongPrompts,
        Lambda = training.Lambda,
        IncludePromptInNll = training.IncludePromptInNll,
        Generation = options.ExplicitGeneration?.Clone() ?? generation.ToGenerationOptions(),
    };
}
