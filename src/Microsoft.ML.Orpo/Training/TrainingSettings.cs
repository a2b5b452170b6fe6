using Microsoft.ML.Orpo.Chat;
using Microsoft.ML.Orpo.Modeling;
using Microsoft.ML.Orpo.Tokenization;
using Microsoft.ML.Orpo.ModelFiles;
using Microsoft.ML.Orpo.Preferences;

namespace Microsoft.ML.Orpo.Training;

/// <summary>
/// <see cref="OrpoOptions"/> validated and resolved against a model (lengths, seed, chat template): what the trainer
/// runs with. Every option's default is <see cref="OrpoOptions"/>'s own, so settings built by hand start where a Fit
/// with default options starts; the values resolved against a model (<see cref="Seed"/>, <see cref="MaxLength"/>,
/// <see cref="MaxPromptLength"/>, <see cref="ChatTemplate"/>) have no default and are whatever the builder sets.
/// The checkpoint fingerprint lists its fields explicitly (<see cref="FingerprintJson"/>), so this record's shape is free.
/// </summary>
internal sealed record TrainingSettings
{
    private static readonly OrpoOptions Defaults = new();

    public double Lambda { get; init; } = Defaults.Lambda;
    public bool IncludePromptInNll { get; init; } = Defaults.IncludePromptInNll;
    public double LearningRate { get; init; } = Defaults.LearningRate;
    public int Epochs { get; init; } = Defaults.Epochs;
    public int BatchSize { get; init; } = Defaults.BatchSize;
    public int GradientAccumulationSteps { get; init; } = Defaults.GradientAccumulationSteps;
    public double WeightDecay { get; init; } = Defaults.WeightDecay;
    public double AdamBeta1 { get; init; } = Defaults.AdamBeta1;
    public double AdamBeta2 { get; init; } = Defaults.AdamBeta2;
    public double AdamEpsilon { get; init; } = Defaults.AdamEpsilon;
    public double WarmupRatio { get; init; } = Defaults.WarmupRatio;
    public LearningRateSchedule Schedule { get; init; } = Defaults.LearningRateSchedule;
    public double MaxGradNorm { get; init; } = Defaults.MaxGradNorm;
    public bool Shuffle { get; init; } = Defaults.Shuffle;
    public bool GroupByLength { get; init; } = Defaults.GroupByLength;
    /// <summary>OrpoOptions.Seed, or the seed drawn from the MLContext when it was null.</summary>
    public int Seed { get; init; }
    /// <summary>False when <see cref="Seed"/> was drawn from the MLContext (OrpoOptions.Seed was null).</summary>
    public bool SeedIsExplicit { get; init; } = true;
    /// <summary>OrpoOptions.MaxLength resolved against the model (<see cref="Lengths"/>).</summary>
    public int MaxLength { get; init; }
    /// <summary>OrpoOptions.MaxPromptLength resolved against <see cref="MaxLength"/> (<see cref="Lengths"/>).</summary>
    public int MaxPromptLength { get; init; }
    public string? PromptTemplate { get; init; } = Defaults.PromptTemplate;
    /// <summary>The chat template's source (OrpoOptions.ChatTemplate resolved, never the "model" sentinel), or null.</summary>
    public string? ChatTemplate { get; init; }
    public bool TruncateLongPrompts { get; init; } = Defaults.TruncateLongPrompts;
    public int ValidationInterval { get; init; } = Defaults.ValidationInterval;
    public string? CheckpointDirectory { get; init; } = Defaults.CheckpointDirectory;
    public int CheckpointInterval { get; init; } = Defaults.CheckpointInterval;
    public int CheckpointsToKeep { get; init; } = Defaults.CheckpointsToKeep;
    /// <summary>
    /// Performance switch: pack each pair as [prompt | chosen | rejected] so the prompt is computed once
    /// (<see cref="SharedPromptBatch"/>, attention by <see cref="Ops.SharedPrefixAttention"/>); equal loss and
    /// gradients to the concatenated layout up to float rounding.
    /// </summary>
    public bool SharedPromptForward { get; init; } = Defaults.SharedPromptForward;
    /// <summary>
    /// Performance switch: rows of the LM head computed at once. Training uses <see cref="Ops.FusedOrpoLoss"/> (LM head and
    /// loss together, gradients produced in the forward pass, chunks of whole pairs), evaluation
    /// <see cref="Ops.ChunkedLogProbs"/>; neither holds the full (rows x vocabulary) logits, and only scored predictions go
    /// through the LM head. 0 computes the logits of every position in one piece (the plain path). On by default: same
    /// loss and gradients up to float rounding (tested), less peak memory and faster (benchmarks/README.md).
    /// Not an OrpoOptions option: benchmarks and tests set it.
    /// </summary>
    public int LogitsChunkRows { get; init; } = DefaultLogitsChunkRows;
    /// <summary>
    /// Memory switch: each decoder layer's activations are recomputed in the backward pass instead of kept
    /// (<see cref="RecomputedLayer"/>); same loss and gradients, about one more forward pass of compute.
    /// </summary>
    public bool RecomputeActivations { get; init; } = Defaults.RecomputeActivations;

    /// <summary>
    /// Mixed precision (<see cref="OrpoPrecision"/>): part of the run's identity, so a checkpoint resumes only with the
    /// same value.
    /// </summary>
    public OrpoPrecision Precision { get; init; } = Defaults.Precision;

    /// <summary>
    /// The LoRA adapters trained instead of the weights (<see cref="OrpoOptions.Lora"/>, or the config of
    /// <see cref="OrpoOptions.AdapterPath"/>), or null: full fine-tuning. Set by <see cref="FineTuningRun"/>.
    /// </summary>
    public LoraConfig? Lora { get; init; }

    /// <summary>SHA-256 of the adapter weights training started from (<see cref="OrpoOptions.AdapterPath"/>), or null.</summary>
    public string? InitialAdapterSha256 { get; init; }

    /// <summary>256 rows x 32000 vocabulary = 33 MB of float32 logits per chunk.</summary>
    public const int DefaultLogitsChunkRows = 256;

    /// <summary>Checks every option and throws an <see cref="ArgumentException"/> naming the first invalid one.</summary>
    public static void Validate(OrpoOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        static void Check(bool ok, string name, object? value, string rule)
        {
            if (!ok) throw new ArgumentOutOfRangeException(name, value, $"OrpoOptions.{name} = {value ?? "null"}: {rule}");
        }
        if (string.IsNullOrWhiteSpace(options.BaseModelPath))
            throw new ArgumentException("OrpoOptions.BaseModelPath is required: a Hugging Face model folder or a llama2.c .bin file.", nameof(options.BaseModelPath));
        foreach (var (name, value) in new[]
        {
            (nameof(options.PromptColumnName), options.PromptColumnName), (nameof(options.ChosenColumnName), options.ChosenColumnName),
            (nameof(options.RejectedColumnName), options.RejectedColumnName), (nameof(options.OutputColumnName), options.OutputColumnName),
        })
            if (string.IsNullOrWhiteSpace(value)) throw new ArgumentException($"OrpoOptions.{name} must name a column.", name);
        Check(double.IsFinite(options.Lambda) && options.Lambda >= 0, nameof(options.Lambda), options.Lambda, "must be a finite number >= 0.");
        Check(double.IsFinite(options.LearningRate) && options.LearningRate > 0, nameof(options.LearningRate), options.LearningRate, "must be a finite number > 0.");
        Check(options.Epochs >= 1, nameof(options.Epochs), options.Epochs, "must be >= 1.");
        Check(options.BatchSize >= 1, nameof(options.BatchSize), options.BatchSize, "must be >= 1.");
        Check(options.GradientAccumulationSteps >= 1, nameof(options.GradientAccumulationSteps), options.GradientAccumulationSteps, "must be >= 1.");
        Check(double.IsFinite(options.WeightDecay) && options.WeightDecay >= 0, nameof(options.WeightDecay), options.WeightDecay, "must be a finite number >= 0.");
        Check(options.AdamBeta1 >= 0 && options.AdamBeta1 < 1, nameof(options.AdamBeta1), options.AdamBeta1, "must be in [0, 1).");
        Check(options.AdamBeta2 >= 0 && options.AdamBeta2 < 1, nameof(options.AdamBeta2), options.AdamBeta2, "must be in [0, 1).");
        Check(double.IsFinite(options.AdamEpsilon) && options.AdamEpsilon > 0, nameof(options.AdamEpsilon), options.AdamEpsilon, "must be > 0.");
        Check(options.WarmupRatio >= 0 && options.WarmupRatio < 1, nameof(options.WarmupRatio), options.WarmupRatio, "must be in [0, 1).");
        Check(Enum.IsDefined(options.LearningRateSchedule), nameof(options.LearningRateSchedule), options.LearningRateSchedule, "is not a known schedule.");
        Check(Enum.IsDefined(options.Precision), nameof(options.Precision), options.Precision, "is not a known precision (Float32 or BFloat16).");
        Check(double.IsFinite(options.MaxGradNorm) && options.MaxGradNorm >= 0, nameof(options.MaxGradNorm), options.MaxGradNorm, "must be >= 0 (0 = no clipping).");
        Check(options.MaxLength is null || options.MaxLength >= 2, nameof(options.MaxLength), options.MaxLength, "must be >= 2.");
        Check(options.MaxPromptLength is null || options.MaxPromptLength >= 1, nameof(options.MaxPromptLength), options.MaxPromptLength, "must be >= 1.");
        Check(options.MaxLength is null || options.MaxPromptLength is null || options.MaxPromptLength < options.MaxLength,
            nameof(options.MaxPromptLength), options.MaxPromptLength, $"must be smaller than MaxLength ({options.MaxLength}) to leave room for the response.");
        Check(options.ValidationInterval >= 0, nameof(options.ValidationInterval), options.ValidationInterval, "must be >= 0.");
        Check(options.CheckpointInterval >= 0, nameof(options.CheckpointInterval), options.CheckpointInterval, "must be >= 0.");
        Check(options.CheckpointsToKeep >= 1, nameof(options.CheckpointsToKeep), options.CheckpointsToKeep, "must be >= 1.");
        if (options.PromptTemplate is not null && !options.PromptTemplate.Contains("{prompt}", StringComparison.Ordinal))
            throw new ArgumentException($"OrpoOptions.PromptTemplate must contain the placeholder {{prompt}}; got \"{options.PromptTemplate}\".", nameof(options.PromptTemplate));
        if (options.ChatTemplate is not null && string.IsNullOrWhiteSpace(options.ChatTemplate))
            throw new ArgumentException("OrpoOptions.ChatTemplate is empty: set a Jinja chat template, OrpoOptions.ModelChatTemplate (\"model\") for the model's own, or null for plain prompts.", nameof(options.ChatTemplate));
        if (options.ChatTemplate is not null && options.PromptTemplate is not null)
            throw new ArgumentException("OrpoOptions.PromptTemplate and OrpoOptions.ChatTemplate are both set; a chat template formats the prompt itself, so set only one.", nameof(options.ChatTemplate));
        DeviceNames.Validate(options.Device);
        options.ExplicitGeneration?.Validate();
        if (options.Lora is not null) LoraConfig.From(options.Lora);
        if (options.AdapterPath is not null && string.IsNullOrWhiteSpace(options.AdapterPath))
            throw new ArgumentException("OrpoOptions.AdapterPath is empty: set a PEFT adapter folder, or null to start new adapters.", nameof(options.AdapterPath));
    }

    /// <summary>The chat template's source, checked to parse (so a bad template fails before any data is read).</summary>
    private static string? ResolveChatTemplate(string? option, OrpoTokenizer? tokenizer)
    {
        if (option is null) return null;
        ArgumentNullException.ThrowIfNull(tokenizer);
        string? source = ChatFormat.ResolveSource(option, tokenizer);
        if (source is not null) ChatFormat.Create(source, tokenizer);
        return source;
    }

    /// <summary>
    /// OrpoOptions.MaxLength and MaxPromptLength for a model: the options' values, else min(1024, the model's context)
    /// and half of MaxLength. Not checked (<see cref="Resolve"/> checks them).
    /// </summary>
    public static (int MaxLength, int MaxPromptLength) Lengths(OrpoOptions options, LlamaConfig config)
    {
        int maxLength = options.MaxLength ?? Math.Min(1024, config.MaxPositionEmbeddings);
        return (maxLength, options.MaxPromptLength ?? maxLength / 2);
    }

    /// <summary>Resolves defaults that depend on the model and the ML.NET context (the model's tokenizer holds its own
    /// chat template, which OrpoOptions.ModelChatTemplate selects).</summary>
    public static TrainingSettings Resolve(OrpoOptions options, LlamaConfig config, int fallbackSeed, OrpoTokenizer? tokenizer = null)
    {
        Validate(options);
        var (maxLength, maxPromptLength) = Lengths(options, config);
        if (maxLength > config.MaxPositionEmbeddings)
            throw new ArgumentOutOfRangeException(nameof(options.MaxLength), maxLength,
                $"OrpoOptions.MaxLength = {maxLength} exceeds the model's context of {config.MaxPositionEmbeddings} positions.");
        if (maxPromptLength >= maxLength)
            throw new ArgumentOutOfRangeException(nameof(options.MaxPromptLength), maxPromptLength,
                $"OrpoOptions.MaxPromptLength = {maxPromptLength} must be smaller than MaxLength ({maxLength}).");
        return new TrainingSettings
        {
            Lambda = options.Lambda,
            IncludePromptInNll = options.IncludePromptInNll,
            LearningRate = options.LearningRate,
            Epochs = options.Epochs,
            BatchSize = options.BatchSize,
            GradientAccumulationSteps = options.GradientAccumulationSteps,
            WeightDecay = options.WeightDecay,
            AdamBeta1 = options.AdamBeta1,
            AdamBeta2 = options.AdamBeta2,
            AdamEpsilon = options.AdamEpsilon,
            WarmupRatio = options.WarmupRatio,
            Schedule = options.LearningRateSchedule,
            MaxGradNorm = options.MaxGradNorm,
            Shuffle = options.Shuffle,
            GroupByLength = options.GroupByLength,
            Seed = options.Seed ?? fallbackSeed,
            SeedIsExplicit = options.Seed is not null,
            MaxLength = maxLength,
            MaxPromptLength = maxPromptLength,
            PromptTemplate = options.PromptTemplate,
            ChatTemplate = ResolveChatTemplate(options.ChatTemplate, tokenizer),
            TruncateLongPrompts = options.TruncateLongPrompts,
            SharedPromptForward = options.SharedPromptForward,
            RecomputeActivations = options.RecomputeActivations,
            Precision = options.Precision,
            ValidationInterval = options.ValidationInterval,
            CheckpointDirectory = options.CheckpointDirectory,
            CheckpointInterval = options.CheckpointInterval,
            CheckpointsToKeep = options.CheckpointsToKeep,
        };
    }

    /// <summary>The pair encoder these settings train with (lengths, templates, truncation) for <paramref name="tokenizer"/>.</summary>
    public PairEncoder Encoder(OrpoTokenizer tokenizer) =>
        new(tokenizer, PromptTemplate, MaxLength, MaxPromptLength, TruncateLongPrompts, ChatTemplate is null ? null : ChatFormat.Create(ChatTemplate, tokenizer));
}
