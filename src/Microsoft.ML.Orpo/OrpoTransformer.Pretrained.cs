using Microsoft.ML.Orpo.Modeling;
using Microsoft.ML.Orpo.Training;

namespace Microsoft.ML.Orpo;

public sealed partial class OrpoTransformer
{
    /// <summary>
    /// The base model exactly as <c>Fit</c> with these options starts from it: same prompt template, lambda, lengths,
    /// column names, generation defaults and device. Use it for before/after comparisons with
    /// <see cref="OrpoEvaluation.Evaluate"/> and <see cref="Generate(string, GenerationOptions?)"/>.
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
            var training = TrainingSettings.Resolve(options, model.Config, fallbackSeed: 0, model.Tokenizer);
            WarnNotApplied(mlContext, model.Generation);
            return new OrpoTransformer(mlContext, model, TransformerSettings.From(options, training, model.Generation), Array.Empty<OrpoStepMetrics>());
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }
}
