using Microsoft.ML.Orpo.MlNet;
using Microsoft.ML.Orpo.Modeling;
using Microsoft.ML.Runtime;
using Microsoft.ML.Orpo.Preferences;
using Microsoft.ML.Orpo.ModelFiles;

namespace Microsoft.ML.Orpo.Training;

/// <summary>
/// One fine-tuning run, as <see cref="OrpoEstimator.Fit"/>, every sweep trial and
/// <see cref="OrpoTransformer.FromPretrained(MLContext, OrpoOptions)"/> perform it: <see cref="Start"/> loads the base
/// model and resolves the options against it, <see cref="Read"/> encodes preference pairs with its tokenizer, template
/// and lengths, <see cref="Train"/> fine-tunes the model in place, and <see cref="HandOver"/> hands it to the fitted
/// transformer. Until then the run owns the model: disposing a run that was not finished (any failure) disposes it.
/// </summary>
internal sealed class FineTuningRun : IDisposable
{
    private CausalLanguageModel? model;
    private PairEncoder? encoder;

    private FineTuningRun(OrpoOptions options, CausalLanguageModel model, TrainingSettings settings)
    {
        Options = options;
        this.model = model;
        Settings = settings;
    }

    /// <summary>The options of the run, as given (never modified).</summary>
    public OrpoOptions Options { get; }

    /// <summary>The options resolved against the base model.</summary>
    public TrainingSettings Settings { get; }

    /// <summary>The base model, trained in place by <see cref="Train"/>.</summary>
    public CausalLanguageModel Model => model ?? throw new ObjectDisposedException(nameof(FineTuningRun));

    /// <summary>
    /// Loads <see cref="OrpoOptions.BaseModelPath"/> and resolves <paramref name="options"/> against it.
    /// </summary>
    /// <param name="options">Validated options; kept, not copied.</param>
    /// <param name="fallbackSeed">Called once, after <paramref name="loaded"/>: the seed when <see cref="OrpoOptions.Seed"/> is null.</param>
    /// <param name="loaded">Sees the model before the options are resolved against it.</param>
    public static FineTuningRun Start(OrpoOptions options, Func<int> fallbackSeed, Action<CausalLanguageModel>? loaded = null)
    {
        // A bfloat16 base is built and loaded in bfloat16: converted after loading, the float32 model set the peak.
        var projections = options.Lora?.BFloat16Base == true ? TorchSharp.torch.ScalarType.BFloat16 : (TorchSharp.torch.ScalarType?)null;
        var model = CausalLanguageModel.Load(options.BaseModelPath, options.TokenizerPath, options.Device, projections);
        try
        {
            loaded?.Invoke(model);
            var settings = TrainingSettings.Resolve(options, model.Config, fallbackSeed(), model.Tokenizer);
            return new FineTuningRun(options, model, AttachAdapters(options, model, settings));
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary>
    /// LoRA: attaches adapters to the model, new ones (<see cref="OrpoOptions.Lora"/>, drawn from the run's seed) or
    /// those of <see cref="OrpoOptions.AdapterPath"/>, and records their config in the settings.
    /// </summary>
    private static TrainingSettings AttachAdapters(OrpoOptions options, CausalLanguageModel model, TrainingSettings settings)
    {
        if (options.AdapterPath is null)
        {
            if (options.Lora is null) return settings;
            var config = LoraConfig.From(options.Lora);
            LoraAdapters.Create(model.Network, config, settings.Seed);
            return settings with { Lora = config };
        }
        using var adapter = PeftAdapterFolder.Read(options.AdapterPath, model.Network);
        var saved = adapter.Config;
        if (options.Lora is { } requested)
        {
            var wanted = LoraConfig.From(requested);
            if (wanted.Rank != saved.Rank || !wanted.Alpha.Equals(saved.Alpha) || wanted.UseRsLora != saved.UseRsLora || wanted.UseDora != saved.UseDora
                || !wanted.TargetModules.Order(StringComparer.Ordinal).SequenceEqual(saved.TargetModules.Order(StringComparer.Ordinal)))
                throw new ArgumentException(
                    $"OrpoOptions.Lora (rank {wanted.Rank}, alpha {wanted.Alpha}, UseRsLora {wanted.UseRsLora}, UseDora {wanted.UseDora}, targets {string.Join(", ", wanted.TargetModules)}) disagrees with the adapter in " +
                    $"OrpoOptions.AdapterPath '{options.AdapterPath}' (rank {saved.Rank}, alpha {saved.Alpha}, use_rslora {saved.UseRsLora}, use_dora {saved.UseDora}, targets {string.Join(", ", saved.TargetModules)}). " +
                    "Set OrpoOptions.Lora to null to continue the adapter as it is, or match its rank, alpha, rsLoRA and DoRA settings and target modules.", nameof(options.Lora));
            saved = saved with { Dropout = wanted.Dropout, BFloat16Base = wanted.BFloat16Base };
        }
        LoraAdapters.Load(model.Network, saved, adapter.Tensors, options.AdapterPath);
        return settings with { Lora = saved, InitialAdapterSha256 = adapter.WeightsSha256 };
    }

    /// <summary>Reads and encodes the preference pairs of <paramref name="data"/> (the columns of <see cref="Options"/>).</summary>
    /// <param name="data">The rows to read.</param>
    /// <param name="dataName">What the rows are, in messages ("training data", "validation set").</param>
    /// <param name="isCanceled">Polled between rows.</param>
    public PreferenceData Read(IDataView data, string dataName, Func<bool> isCanceled) =>
        PreferenceDataReader.Read(data, Options, encoder ??= Settings.Encoder(Model.Tokenizer), dataName, isCanceled);

    /// <summary>Fine-tunes the model in place; every step is reported to <see cref="OrpoOptions.Progress"/>.</summary>
    /// <param name="train">The training pairs.</param>
    /// <param name="validation">Pairs scored during training (<see cref="OrpoOptions.ValidationInterval"/>), or null.</param>
    /// <param name="log">Receives the trainer's log lines.</param>
    /// <param name="cancellationToken">Stops training between micro-batches.</param>
    /// <param name="isCanceled">Polled between micro-batches too (MLContext cancellation).</param>
    /// <param name="afterStep">Called after each optimiser step with its 1-based number.</param>
    /// <returns>One metrics entry per optimiser step.</returns>
    public IReadOnlyList<OrpoStepMetrics> Train(IReadOnlyList<EncodedPair> train, IReadOnlyList<EncodedPair>? validation,
        Action<string>? log, CancellationToken cancellationToken, Func<bool> isCanceled, Action<int>? afterStep = null)
    {
        var callbacks = new TrainingCallbacks
        {
            Log = log,
            Progress = Options.Progress,
            IsCanceled = isCanceled,
            CancellationToken = cancellationToken,
            AfterStep = afterStep,
        };
        return new OrpoTrainer(Model, Settings, callbacks).Train(train, validation);
    }

    /// <summary>
    /// The trained model and the settings a fitted transformer keeps with it; the caller (the transformer) owns the
    /// model from now on.
    /// </summary>
    public (CausalLanguageModel Model, TransformerSettings Settings) HandOver()
    {
        var handed = (Model, TransformerSettings.From(Options, Settings, Model.Generation));
        model = null;
        return handed;
    }

    /// <summary>Disposes the model unless <see cref="HandOver"/> handed it over.</summary>
    public void Dispose()
    {
        model?.Dispose();
        model = null;
    }
}
