using Microsoft.ML.Orpo.MlNet;
using Microsoft.ML.Orpo.Modeling;
using Microsoft.ML.Orpo.Training;

namespace Microsoft.ML.Orpo;

public sealed partial class OrpoTransformer
{
    /// <summary>
    /// The base model exactly as <c>Fit</c> with these options starts from it: same prompt template, lambda, lengths,
    /// column names, generation defaults and device. Use it for before/after comparisons with
    /// <see cref="EvaluatePreferences"/> and <see cref="Generate(string, GenerationOptions?)"/>.
    /// </summary>
    /// <param name="mlContext">The context that owns the transformer.</param>
    /// <param name="options">Fine-tuning options; only the model, tokenizer, text and length settings are used.</param>
    public static OrpoTransformer FromPretrained(MLContext mlContext, OrpoOptions options)
    {
        ArgumentNullException.ThrowIfNull(mlContext);
        TrainingSettings.Validate(options);
        var model = CausalLanguageModel.Load(options.BaseModelPath, options.TokenizerPath, options.Device);
        try
        {
            var training = TrainingSettings.Resolve(options, model.Config, fallbackSeed: 0);
            return new OrpoTransformer(mlContext, model, TransformerSettings.From(options, training), Array.Empty<OrpoStepMetrics>());
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary>
    /// The ORPO objective's metrics (loss, NLL, odds ratio, rewards, accuracy, margin) of this model on preference
    /// pairs, without training; pairs are encoded as in training (template, lengths, skips). Computed exactly as the
    /// validation metrics of <see cref="OrpoOptions.ValidationSet"/>.
    /// </summary>
    /// <param name="pairs">Text columns with the prompts and the preferred and dispreferred responses.</param>
    /// <param name="promptColumnName">Prompt column; default <see cref="PromptColumnName"/>.</param>
    /// <param name="chosenColumnName">Preferred-response column.</param>
    /// <param name="rejectedColumnName">Dispreferred-response column.</param>
    public OrpoPreferenceMetrics EvaluatePreferences(IDataView pairs, string? promptColumnName = null,
        string chosenColumnName = "Chosen", string rejectedColumnName = "Rejected")
    {
        ArgumentNullException.ThrowIfNull(pairs);
        var m = ThrowIfDisposed();
        var columns = new OrpoOptions
        {
            PromptColumnName = promptColumnName ?? settings.PromptColumnName,
            ChosenColumnName = chosenColumnName,
            RejectedColumnName = rejectedColumnName,
        };
        var data = PreferenceDataReader.Read(pairs, columns, CreateEncoder(m), "evaluation data", () => ModelZipBridge.IsCanceled(env));
        if (data.Pairs.Count == 0)
            throw new InvalidOperationException($"None of the {data.Rows} rows of the evaluation data can be scored. " + string.Join("; ", data.Describe()));
        var evaluation = new TrainingSettings { Lambda = settings.Lambda, IncludePromptInNll = settings.IncludePromptInNll, BatchSize = 8 };
        return PreferenceEvaluator.Evaluate(m.Network, data.Pairs, evaluation);
    }
}
