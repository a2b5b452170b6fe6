using Microsoft.ML.Orpo.Chat;
using Microsoft.ML.Orpo.ModelFiles;
using Microsoft.ML.Orpo.Generation;
using Microsoft.ML.Orpo.MlNet;
using Microsoft.ML.Orpo.Modeling;
using Microsoft.ML.Orpo.Training;
using Microsoft.ML.Runtime;
using Microsoft.ML.Orpo.Preferences;

namespace Microsoft.ML.Orpo;

/// <summary>
/// A causal language model as an ML.NET transformer: generates the <c>OutputColumnName</c> text column from the
/// prompt column, and exposes generation, the training-time encoding and Hugging Face export directly.
/// Generation keeps all state per call, so one instance serves several threads.
/// </summary>
public sealed partial class OrpoTransformer : IDisposable
{
    private readonly IHostEnvironment env;
    private readonly CausalLanguageModel model;
    private readonly TransformerSettings settings;
    private readonly object lifetime = new();
    private int disposed;
    private int inFlight;
    private bool released;

    internal OrpoTransformer(IHostEnvironment env, CausalLanguageModel model, TransformerSettings settings,
        IReadOnlyList<OrpoStepMetrics> history)
    {
        this.env = env;
        this.model = model;
        this.settings = settings;
        TrainingHistory = history;
    }

    /// <summary>The transformer of a finished run, which takes over its model.</summary>
    internal static OrpoTransformer From(IHostEnvironment env, FineTuningRun run, IReadOnlyList<OrpoStepMetrics> history)
    {
        var (model, settings) = run.HandOver();
        return new OrpoTransformer(env, model, settings, history);
    }

    /// <summary>One entry per optimiser step of the <c>Fit</c> that produced this model (empty for a base model).</summary>
    public IReadOnlyList<OrpoStepMetrics> TrainingHistory { get; }

    /// <summary>The prompt column <c>Transform</c> reads.</summary>
    public string PromptColumnName => settings.PromptColumnName;

    /// <summary>The text column <c>Transform</c> adds.</summary>
    public string OutputColumnName => settings.OutputColumnName;

    /// <summary>The template applied to prompts, or null.</summary>
    public string? PromptTemplate => settings.PromptTemplate;

    /// <summary>The chat template (its Jinja source) prompts and responses are rendered with, or null
    /// (<see cref="OrpoOptions.ChatTemplate"/>).</summary>
    public string? ChatTemplate => settings.ChatTemplate;

    /// <summary>A copy of the generation settings <c>Transform</c> uses.</summary>
    public GenerationOptions GenerationDefaults => settings.Generation.Clone();

    internal CausalLanguageModel Model => ThrowIfDisposed();
    internal TransformerSettings Settings => settings;
    internal IHostEnvironment Environment => env;

    /// <summary>
    /// The base model as a transformer, for generation-only use and before/after comparisons: a Hugging Face folder,
    /// or a llama2.c <c>.bin</c> with its tokenizer (<paramref name="tokenizerPath"/>, or a tokenizer beside it), with
    /// the PEFT LoRA adapter of <paramref name="adapterPath"/> applied when given (read strictly: a key, shape or
    /// unsupported option is an error naming it). Such a transformer generates with the adapter,
    /// <see cref="SaveAdapter"/> writes it back and <see cref="MergeAdapter"/> folds it into the weights.
    /// </summary>
    public static OrpoTransformer FromPretrained(MLContext mlContext, string modelPath, string? tokenizerPath = null, string? adapterPath = null)
    {
        ArgumentNullException.ThrowIfNull(mlContext);
        var model = CausalLanguageModel.Load(modelPath, tokenizerPath, "cpu");
        try
        {
            if (adapterPath is not null)
            {
                using var adapter = PeftAdapterFolder.Read(adapterPath, model.Network);
                LoraAdapters.Load(model.Network, adapter.Config, adapter.Tensors, adapterPath);
            }
            WarnNotApplied(mlContext, model.Generation);
            var settings = TransformerSettings.ForBaseModel(model.Config, model.Generation) with { BaseModelPath = modelPath };
            return new OrpoTransformer(mlContext, model, settings, Array.Empty<OrpoStepMetrics>());
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary>Generates a response to one prompt (the prompt template is applied; an empty prompt starts from BOS). With a
    /// <see cref="ChatTemplate"/> the prompt is one user message, or a JSON message list, rendered with the generation prompt.</summary>
    public string Generate(string prompt, GenerationOptions? options = null) => Generate(new[] { prompt }, options)[0];

    /// <summary>Generates responses to several prompts in one left-padded batch.</summary>
    public IReadOnlyList<string> Generate(IReadOnlyList<string> prompts, GenerationOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(prompts);
        return GenerateCore(prompts, options, onToken: null, CancellationToken.None).Select(r => r.Text).ToArray();
    }

    /// <summary>
    /// <see cref="Generate(IReadOnlyList{string}, GenerationOptions?)"/> with what a chat client needs beside the text:
    /// a callback after every token of a row (its generated ids so far), cancellation between tokens, token counts and
    /// whether a row ran out of room (new-token limit or context) rather than stopping. With <c>rendered</c> the prompts
    /// are finished texts (a rendered chat template) and no prompt template is applied.
    /// </summary>
    internal GeneratedText[] GenerateCore(IReadOnlyList<string> prompts, GenerationOptions? options,
        Action<int, IReadOnlyList<int>>? onToken, CancellationToken cancellationToken, bool rendered = false)
    {
        using var lease = Acquire();
        var m = model;
        options ??= settings.Generation;
        options.Validate();
        var encoder = CreateEncoder(m);
        var ids = new List<IReadOnlyList<int>>(prompts.Count);
        for (int i = 0; i < prompts.Count; i++)
        {
            if (prompts[i] is null) throw new ArgumentException($"Prompt {i} is null.", nameof(prompts));
            var promptIds = rendered ? encoder.EncodeText(prompts[i]) : EncodeGenerationPrompt(encoder, prompts[i], i);
            // A prompt that leaves no room in the context keeps its end when the model was set up to truncate.
            if (settings.TruncateLongPrompts && promptIds.Count >= m.Config.MaxPositionEmbeddings)
                promptIds = encoder.KeepEnd(promptIds, settings.MaxPromptLength);
            ids.Add(promptIds);
        }
        var stops = options.StopSequences;
        var matcher = stops.Count == 0 ? null : new StopSequenceMatcher(stops, m.Tokenizer);
        var stopped = new bool[prompts.Count];
        Func<int, IReadOnlyList<int>, bool>? shouldStop = matcher is null && onToken is null && !cancellationToken.CanBeCanceled ? null : (row, generated) =>
        {
            cancellationToken.ThrowIfCancellationRequested();
            onToken?.Invoke(row, generated);
            return matcher is not null && (stopped[row] = matcher.ShouldStop(generated));
        };
        var generatedIds = TextGenerator.Generate(m.Network, ids, options, StopTokenIds(m, encoder.Chat), shouldStop, m.Tokenizer.VocabularySize);
        int room = ids.Count == 0 ? 0 : Math.Min(options.MaxNewTokens, m.Config.MaxPositionEmbeddings - ids.Max(p => p.Count));
        return generatedIds.Select((g, i) => new GeneratedText(StopSequenceMatcher.Cut(m.Tokenizer.Decode(g), stops),
            ids[i].Count, g.Count, OutOfRoom: !stopped[i] && g.Count >= room)).ToArray();
    }

    /// <summary>The exact token ids training uses for a pair (template, BOS/EOS and truncation applied).</summary>
    public EncodedPair Encode(string prompt, string chosen, string rejected)
    {
        ArgumentNullException.ThrowIfNull(prompt);
        ArgumentNullException.ThrowIfNull(chosen);
        ArgumentNullException.ThrowIfNull(rejected);
        using var lease = Acquire();
        EncodedPair? pair;
        PairOutcome outcome;
        try
        {
            pair = CreateEncoder(model).Encode(prompt, chosen, rejected, out outcome);
        }
        catch (FormatException e)
        {
            throw new ArgumentException(e.Message, e);
        }
        return pair ?? throw new ArgumentException(outcome switch
        {
            PairOutcome.SkippedEmptyResponse => "The chosen or rejected response is empty; ORPO skips such pairs.",
            PairOutcome.SkippedIdenticalResponses => "The chosen and rejected responses are identical; ORPO skips such pairs.",
            PairOutcome.SkippedEmptyPrompt => "The prompt is empty and the tokenizer has no BOS token; ORPO skips such pairs.",
            PairOutcome.PromptLongerThanMaxLength => $"The prompt alone is longer than MaxLength ({settings.MaxLength} tokens); training refuses such rows unless OrpoOptions.TruncateLongPrompts is set.",
            _ => "The chosen and rejected responses become identical after truncation to MaxLength; ORPO drops such pairs.",
        });
    }

    /// <summary>Writes a Hugging Face folder (config.json, model.safetensors, tokenizer files) loadable by transformers.</summary>
    public void SaveHuggingFace(string directory)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(directory);
        using var lease = Acquire();
        var m = model;
        var weights = m.ExportWeights();
        try
        {
            HuggingFaceFolder.Save(directory, m.Config, weights, ExportedTokenizerFiles(m), m.Generation);
        }
        finally
        {
            foreach (var t in weights.Values) t.Dispose();
        }
    }

    /// <summary>
    /// Releases the model's native memory; later use throws <see cref="ObjectDisposedException"/>. Calls already
    /// running on other threads finish first: the memory is released when the last of them returns.
    /// </summary>
    public void Dispose()
    {
        lock (lifetime)
        {
            if (disposed != 0) return;
            disposed = 1;
            if (inFlight > 0) return; // the last running call releases it
            released = true;
        }
        model.Dispose();
    }

    /// <summary>Marks a call that uses the native model; Dispose defers the release until every such call has ended.</summary>
    internal Lease Acquire()
    {
        lock (lifetime)
        {
            ObjectDisposedException.ThrowIf(disposed != 0, this);
            inFlight++;
        }
        return new Lease(this);
    }

    private void EndCall()
    {
        lock (lifetime)
        {
            if (--inFlight > 0 || disposed == 0 || released) return;
            released = true;
        }
        model.Dispose();
    }

    /// <summary>One running call on the model (see <see cref="Acquire"/>).</summary>
    internal readonly struct Lease(OrpoTransformer owner) : IDisposable
    {
        /// <summary>Ends the call.</summary>
        public void Dispose() => owner.EndCall();
    }

    private ChatFormat? chatFormat;

    internal PairEncoder CreateEncoder(CausalLanguageModel m) =>
        new(m.Tokenizer, settings.PromptTemplate, settings.MaxLength, settings.MaxPromptLength, settings.TruncateLongPrompts, ChatFormatOf(m));

    /// <summary>The configured chat template bound to the tokenizer, parsed once.</summary>
    private ChatFormat? ChatFormatOf(CausalLanguageModel m) =>
        settings.ChatTemplate is null ? null : chatFormat ??= ChatFormat.Create(settings.ChatTemplate, m.Tokenizer);

    private List<int> EncodeGenerationPrompt(PairEncoder encoder, string prompt, int index)
    {
        try
        {
            return encoder.EncodePrompt(prompt);
        }
        catch (FormatException e)
        {
            throw new ArgumentException($"Prompt {index}: {e.Message}", "prompts", e);
        }
    }

    /// <summary>The model's stop ids, and the chat template's end-of-turn token.</summary>
    private static HashSet<int> StopTokenIds(CausalLanguageModel m, ChatFormat? chat)
    {
        var ids = new HashSet<int>(m.Config.EosTokenIds.Concat(m.Generation.EosTokenIds));
        if (m.Tokenizer.EosId is int eos) ids.Add(eos);
        if (chat?.EndOfTurnId is int endOfTurn) ids.Add(endOfTurn);
        return ids;
    }

    /// <summary>Names, through the ML.NET log, each generation_config.json setting generation does not apply.</summary>
    internal static void WarnNotApplied(IHostEnvironment env, GenerationConfig generation)
    {
        if (generation.NotApplied.Count == 0) return;
        using var channel = env.Register("OrpoTransformer").Start("generation_config.json");
        channel.Warning(MessageSensitivity.None,
            $"generation_config.json: {string.Join(", ", generation.NotApplied)} not applied by Microsoft.ML.Orpo's generation (kept for export).");
    }

    private CausalLanguageModel ThrowIfDisposed()
    {
        ObjectDisposedException.ThrowIf(Volatile.Read(ref disposed) != 0, this);
        return model;
    }
}
