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
        using var run = FineTuningRun.Start(options, () => 0);
        WarnNotApplied(mlContext, run.Model.Generation);
        return From(mlContext, run, Array.Empty<OrpoStepMetrics>());
    }
}
