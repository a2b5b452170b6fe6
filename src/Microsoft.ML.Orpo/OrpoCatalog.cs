using Microsoft.ML.Orpo.MlNet;

namespace Microsoft.ML.Orpo;

/// <summary>ORPO fine-tuning on <c>mlContext.Transforms</c>.</summary>
public static class OrpoCatalog
{
    /// <summary>
    /// Fine-tunes a causal language model on (prompt, chosen, rejected) text with ORPO. The fitted
    /// <see cref="OrpoTransformer"/> adds a generated <see cref="OrpoOptions.OutputColumnName"/> column.
    /// </summary>
    /// <param name="catalog">The transforms catalog of an <see cref="MLContext"/>.</param>
    /// <param name="options">All settings; copied, never modified.</param>
    public static OrpoEstimator OrpoFineTune(this TransformsCatalog catalog, OrpoOptions options) =>
        new(MlNetAccess.GetEnvironment(catalog), options);

    /// <summary>Fine-tunes with ORPO using the common settings; everything else keeps its <see cref="OrpoOptions"/> default.</summary>
    /// <param name="catalog">The transforms catalog of an <see cref="MLContext"/>.</param>
    /// <param name="baseModelPath">A Hugging Face model folder or a llama2.c .bin file.</param>
    /// <param name="promptColumnName">Text column with the prompts.</param>
    /// <param name="chosenColumnName">Text column with the preferred responses.</param>
    /// <param name="rejectedColumnName">Text column with the dispreferred responses.</param>
    /// <param name="outputColumnName">Text column the fitted transformer adds.</param>
    /// <param name="lambda">Weight of the odds-ratio term.</param>
    /// <param name="epochs">Passes over the data.</param>
    /// <param name="learningRate">Peak AdamW learning rate.</param>
    public static OrpoEstimator OrpoFineTune(this TransformsCatalog catalog, string baseModelPath,
        string promptColumnName = OrpoOptions.DefaultPromptColumnName, string chosenColumnName = OrpoOptions.DefaultChosenColumnName,
        string rejectedColumnName = OrpoOptions.DefaultRejectedColumnName, string outputColumnName = OrpoOptions.DefaultOutputColumnName,
        double lambda = OrpoOptions.DefaultLambda, int epochs = OrpoOptions.DefaultEpochs, double learningRate = OrpoOptions.DefaultLearningRate) =>
        catalog.OrpoFineTune(new OrpoOptions
        {
            BaseModelPath = baseModelPath,
            PromptColumnName = promptColumnName,
            ChosenColumnName = chosenColumnName,
            RejectedColumnName = rejectedColumnName,
            OutputColumnName = outputColumnName,
            Lambda = lambda,
            Epochs = epochs,
            LearningRate = learningRate,
        });
}
