namespace Microsoft.ML.Orpo;

/// <summary>
/// Settings of <see cref="OrpoEstimator"/>. Defaults follow the ORPO paper and TRL's ORPOTrainer where they exist.
/// <c>Fit</c> never modifies this object; it validates it and works on a resolved copy.
/// </summary>
public sealed class OrpoOptions
{
    // The defaults that optional parameters elsewhere (OrpoCatalog, Evaluate, LoadPreferenceJsonl) repeat: those must be
    // compile-time constants, so they read these rather than the properties.
    internal const string DefaultPromptColumnName = "Prompt";
    internal const string DefaultChosenColumnName = "Chosen";
    internal const string DefaultRejectedColumnName = "Rejected";
    internal const string DefaultOutputColumnName = "Response";
    internal const double DefaultLambda = 0.1;
    internal const int DefaultEpochs = 1;
    internal const double DefaultLearningRate = 8e-6;

    /// <summary>A Hugging Face model folder (config.json + safetensors) or a llama2.c <c>.bin</c>. Required.</summary>
    public string BaseModelPath { get; set; } = "";

    /// <summary>Tokenizer file or folder; default: the model folder (or the .bin's folder).</summary>
    public string? TokenizerPath { get; set; }

    /// <summary>Text column with the prompts. Default "Prompt".</summary>
    public string PromptColumnName { get; set; } = DefaultPromptColumnName;

    /// <summary>Text column with the preferred responses. Default "Chosen".</summary>
    public string ChosenColumnName { get; set; } = DefaultChosenColumnName;

    /// <summary>Text column with the dispreferred responses. Default "Rejected".</summary>
    public string RejectedColumnName { get; set; } = DefaultRejectedColumnName;

    /// <summary>Text column the fitted transformer adds with generated responses. Default "Response".</summary>
    public string OutputColumnName { get; set; } = DefaultOutputColumnName;

    /// <summary>
    /// Template applied to every prompt in training and generation, with a <c>{prompt}</c> placeholder
    /// (e.g. <c>"&lt;|user|&gt;\n{prompt}\n&lt;|assistant|&gt;\n"</c>). Null uses the prompt as is.
    /// </summary>
    public string? PromptTemplate { get; set; }

    /// <summary>
    /// Chat template (Jinja, as in a Hugging Face <c>tokenizer_config.json</c>) that formats prompts and responses in
    /// training, <c>Generate</c>, <c>Transform</c> and the chat client alike. Null (the default): none, prompts are text
    /// (with <see cref="PromptTemplate"/>). <see cref="ModelChatTemplate"/> (<c>"model"</c>): the model's own
    /// <c>chat_template</c> (an error if it has none). Any other string: that template. With a template, a prompt cell
    /// that holds a JSON message list (<c>[{"role": "user", "content": "..."}]</c>) is that conversation and plain text
    /// is one user message; a response cell is a message list ending with the assistant turn, or plain text (the
    /// assistant's content). The prompt is rendered with <c>add_generation_prompt</c>, a response as the rendering of
    /// prompt + response with the prompt's rendering removed, encoded as rendered (special tokens in the text are
    /// tokens), ending with the template's end-of-turn token (e.g. <c>&lt;|im_end|&gt;</c>; EOS where the template
    /// writes none), at which generation also stops. The resolved template is saved with the model (zip, and
    /// <c>tokenizer_config.json</c> of <c>SaveHuggingFace</c>). Setting it together with <see cref="PromptTemplate"/> is an error.
    /// </summary>
    public string? ChatTemplate { get; set; }

    /// <summary>The <see cref="ChatTemplate"/> value that selects the model's own chat template.</summary>
    public const string ModelChatTemplate = "model";

    /// <summary>Weight of the odds-ratio term (the paper's lambda; it recommends 0.1 to 0.25). Default 0.1.</summary>
    public double Lambda { get; set; } = DefaultLambda;

    /// <summary>Add the prompt tokens to the NLL term (the paper's definition excludes them). Default false.</summary>
    public bool IncludePromptInNll { get; set; }

    /// <summary>Peak AdamW learning rate. Default 8e-6 (the paper's value for 7B models; small models want ~1e-3).</summary>
    public double LearningRate { get; set; } = DefaultLearningRate;

    /// <summary>Passes over the training pairs. Default 1.</summary>
    public int Epochs { get; set; } = DefaultEpochs;

    /// <summary>Pairs per micro-batch (each runs as 2 x BatchSize rows). Default 8.</summary>
    public int BatchSize { get; set; } = 8;

    /// <summary>Micro-batches per optimiser step; the update equals one batch of BatchSize x this. Default 1.</summary>
    public int GradientAccumulationSteps { get; set; } = 1;

    /// <summary>Decoupled AdamW weight decay on weight matrices (not norms or biases). Default 0.</summary>
    public double WeightDecay { get; set; }

    /// <summary>AdamW beta1. Default 0.9.</summary>
    public double AdamBeta1 { get; set; } = 0.9;

    /// <summary>AdamW beta2. Default 0.999.</summary>
    public double AdamBeta2 { get; set; } = 0.999;

    /// <summary>AdamW epsilon. Default 1e-8.</summary>
    public double AdamEpsilon { get; set; } = 1e-8;

    /// <summary>Fraction of the optimiser steps used for linear warm-up. Default 0.</summary>
    public double WarmupRatio { get; set; }

    /// <summary>Decay after warm-up. Default <see cref="Orpo.LearningRateSchedule.Linear"/>.</summary>
    public LearningRateSchedule LearningRateSchedule { get; set; } = LearningRateSchedule.Linear;

    /// <summary>Clip the global gradient L2 norm to this value; 0 turns clipping off. Default 1.0.</summary>
    public double MaxGradNorm { get; set; } = 1.0;

    /// <summary>Shuffle the pairs every epoch (deterministically from <see cref="Seed"/>). Default true.</summary>
    public bool Shuffle { get; set; } = true;

    /// <summary>Group pairs of similar length into batches to cut padding. Default true.</summary>
    public bool GroupByLength { get; set; } = true;

    /// <summary>
    /// Seed of the per-epoch data order; null draws one from the MLContext (a resumed run then reuses the seed its
    /// checkpoint recorded). Sampling during generation uses <see cref="GenerationOptions.Seed"/>. Default null.
    /// </summary>
    public int? Seed { get; set; }

    /// <summary>Maximum tokens of prompt + response; null: min(1024, the model's context). Default null.</summary>
    public int? MaxLength { get; set; }

    /// <summary>Maximum prompt tokens kept (from the end) when a pair is too long; null: MaxLength / 2. Default null.</summary>
    public int? MaxPromptLength { get; set; }

    /// <summary>
    /// What to do with a prompt that alone is MaxLength tokens or longer: false (default) refuses the row with an error
    /// naming it; true keeps the prompt's last MaxPromptLength tokens (and BOS), counted in the log like every
    /// truncation, and the fitted transformer's generation cuts prompts that fill the model's whole context the same
    /// way. Prompts shorter than MaxLength are always cut to MaxPromptLength when the pair is too long.
    /// </summary>
    public bool TruncateLongPrompts { get; set; }

    /// <summary>
    /// Compute each pair's prompt once and let both responses attend to it (one packed row per pair instead of two
    /// rows that repeat the prompt). Same loss and gradients as the default layout up to float rounding. The gain grows
    /// with the prompt's share of the tokens: training steps of a 41.7M-parameter model on CPU were about 1.38x as fast
    /// at prompt:response 2:1, 1.25x at 1:1 and 1.1x at 1:3 (benchmarks/README.md). With <see cref="Lora"/> dropout the
    /// prompt, encoded once, gets one dropout mask for both responses (two in the default layout). Default false.
    /// </summary>
    public bool SharedPromptForward { get; set; }

    /// <summary>
    /// Recompute each decoder layer's activations during the backward pass instead of keeping them from the forward
    /// pass ("gradient checkpointing" in Hugging Face terms; unrelated to <see cref="CheckpointDirectory"/>). Same loss
    /// and gradients; peak training memory holds one layer's activations instead of all of them, for roughly one
    /// extra forward pass of compute (measured on the 41.7M benchmark model: benchmarks/README.md). Default false.
    /// </summary>
    public bool RecomputeActivations { get; set; }

    /// <summary>
    /// Arithmetic of training. <see cref="OrpoPrecision.BFloat16"/> is mixed precision in the style of PyTorch's autocast:
    /// the matrix products of the Linear layers and the LM head run in bfloat16 while the weights, gradients and AdamW
    /// state stay float32 (as do norms, attention, softmax, the residual stream and the loss). It is faster where the
    /// hardware multiplies bfloat16 natively (CPUs with AVX-512 BF16 or AMX, recent GPUs) and slower elsewhere. Losses,
    /// metrics and gradients differ from float32 training by a few tenths of a percent (bfloat16 keeps 8 significant
    /// bits), so runs are not bit-comparable across precisions, and a checkpoint resumes only with the precision it
    /// was written with.
    /// Validation during training uses this precision too; generation, <c>Evaluate</c> and the saved weights are
    /// always float32. Default <see cref="OrpoPrecision.Float32"/>.
    /// </summary>
    public OrpoPrecision Precision { get; set; }

    /// <summary>Held-out pairs (same columns) evaluated every <see cref="ValidationInterval"/> steps. Default null.</summary>
    public IDataView? ValidationSet { get; set; }

    /// <summary>Optimiser steps between validation passes; 0 validates only after the last step. Default 0.</summary>
    public int ValidationInterval { get; set; }

    /// <summary>Folder for resumable checkpoints; null disables checkpointing. An existing checkpoint there is resumed.</summary>
    public string? CheckpointDirectory { get; set; }

    /// <summary>Optimiser steps between checkpoints (one is always written at the end). Default 50.</summary>
    public int CheckpointInterval { get; set; } = 50;

    /// <summary>How many of the newest checkpoints to keep. Default 2.</summary>
    public int CheckpointsToKeep { get; set; } = 2;

    /// <summary>Receives each optimiser step's metrics.</summary>
    public IProgress<OrpoStepMetrics>? Progress { get; set; }

    /// <summary>
    /// Stops <c>Fit</c> between micro-batches with an <see cref="OperationCanceledException"/>; a checkpointed run resumes
    /// from its last checkpoint. (ML.NET 5.0.1 keeps <c>MLContext.CancelExecution()</c> internal; when ML.NET calls it,
    /// Fit stops too.)
    /// </summary>
    public CancellationToken CancellationToken { get; set; }

    /// <summary>
    /// Low-rank adapters instead of full fine-tuning: the base weights stay frozen and only the adapters train
    /// (<see cref="LoraOptions"/>). Null (the default) fine-tunes every weight.
    /// </summary>
    public LoraOptions? Lora { get; set; }

    /// <summary>
    /// A PEFT LoRA adapter folder (<c>adapter_config.json</c> + <c>adapter_model.safetensors</c>, e.g. an SFT adapter or one
    /// written by <see cref="OrpoTransformer.SaveAdapter"/>) that training starts from and continues. Its rank, alpha,
    /// dropout and target modules are used; <see cref="Lora"/> may be null, or must agree with them. Default null.
    /// </summary>
    public string? AdapterPath { get; set; }

    /// <summary>"cpu", "cuda" or "cuda:N". Default "cpu".</summary>
    public string Device { get; set; } = "cpu";

    /// <summary>
    /// Generation defaults of the fitted transformer's <c>Transform</c> and of <c>Generate</c> without options. Until
    /// the caller sets or reads this property (reading hands out an object that may then be changed), the base model's
    /// <c>generation_config.json</c> supplies them: its <c>do_sample</c>, <c>temperature</c>, <c>top_k</c>, <c>top_p</c>,
    /// <c>max_new_tokens</c> and <c>stop_strings</c>; without that file, greedy and 64 tokens.
    /// </summary>
    public GenerationOptions Generation
    {
        get => generation ??= new GenerationOptions();
        set => generation = value ?? throw new ArgumentNullException(nameof(value), "OrpoOptions.Generation must not be null.");
    }

    /// <summary>The generation options the caller gave, or null to use the model's generation_config.json.</summary>
    internal GenerationOptions? ExplicitGeneration => generation;

    private GenerationOptions? generation;

    /// <summary>A deep copy (the estimator keeps its own, so later changes by the caller don't leak into Fit).</summary>
    public OrpoOptions Clone()
    {
        var copy = (OrpoOptions)MemberwiseClone();
        copy.generation = generation?.Clone();
        copy.Lora = Lora?.Clone();
        return copy;
    }
}
