using Microsoft.ML.Orpo.Modeling;
using Microsoft.ML.Orpo.Training;
using Microsoft.ML.Orpo.ModelFiles;

namespace Microsoft.ML.Orpo.Training;

/// <summary>
/// What a fitted <see cref="OrpoTransformer"/> needs besides its weights; saved with it in the model zip (its property
/// names and types are that JSON's). Defaults are <see cref="OrpoOptions"/>'s; they also fill values a zip lacks.
/// </summary>
internal sealed record TransformerSettings
{
    private static readonly OrpoOptions Defaults = new();

    public string PromptColumnName { get; init; } = Defaults.PromptColumnName;
    public string OutputColumnName { get; init; } = Defaults.OutputColumnName;
    public string? PromptTemplate { get; init; } = Defaults.PromptTemplate;
    /// <summary>The chat template's source (resolved, never the "model" sentinel), or null.</summary>
    public string? ChatTemplate { get; init; }
    public int MaxLength { get; init; }
    public int MaxPromptLength { get; init; }
    public bool TruncateLongPrompts { get; init; } = Defaults.TruncateLongPrompts;
    public double Lambda { get; init; } = Defaults.Lambda;
    public bool IncludePromptInNll { get; init; } = Defaults.IncludePromptInNll;
    public GenerationOptions Generation { get; init; } = new();
    /// <summary>Where the base model came from (OrpoOptions.BaseModelPath), recorded as an adapter's base_model_name_or_path; null when unknown.</summary>
    public string? BaseModelPath { get; init; }

    /// <summary>A base model's settings: generation defaults from its generation_config.json when given.</summary>
    public static TransformerSettings ForBaseModel(LlamaConfig config, GenerationConfig? generation = null)
    {
        var (maxLength, maxPromptLength) = TrainingSettings.Lengths(Defaults, config);
        return new TransformerSettings
        {
            MaxLength = maxLength, MaxPromptLength = maxPromptLength,
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
        BaseModelPath = options.BaseModelPath,
    };
}
