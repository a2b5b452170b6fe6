using Microsoft.ML.Orpo.Evaluation;
using Microsoft.ML.Orpo.MlNet;
using Microsoft.ML.Orpo.Training;
using Microsoft.ML.Orpo.Preferences;

namespace Microsoft.ML.Orpo;

/// <summary>
/// Evaluation of a fitted <see cref="OrpoTransformer"/>, in the style of ML.NET's <c>BinaryClassificationCatalog.Evaluate</c>:
/// the ORPO objective's metrics on held-out preference pairs, and the ORPO paper's diversity metrics (section 6.4).
/// </summary>
public static class OrpoEvaluation
{
    /// <summary>
    /// The objective's metrics (loss, NLL, odds-ratio loss, log odds, rewards, accuracy, margin, log-probabilities,
    /// chosen-response perplexity) of <paramref name="model"/> on the (prompt, chosen, rejected) rows of
    /// <paramref name="data"/>, computed without gradients exactly as training computes them: pairs are encoded and
    /// truncated with the model's own template and lengths, and skipped under the same rules.
    /// </summary>
    /// <param name="model">The fitted (or pretrained) model; not modified.</param>
    /// <param name="data">Preference pairs with three text columns.</param>
    /// <param name="promptColumnName">Text column with the prompts.</param>
    /// <param name="chosenColumnName">Text column with the preferred responses.</param>
    /// <param name="rejectedColumnName">Text column with the dispreferred responses.</param>
    /// <param name="lambda">Weight of the odds-ratio term in <c>Loss</c> and the rewards; null: the lambda the model was trained with (0.1 for a base model).</param>
    /// <param name="batchSize">Pairs per forward pass (affects speed and memory only).</param>
    /// <returns>The metrics over every pair that could be scored.</returns>
    /// <exception cref="InvalidOperationException">No row of <paramref name="data"/> gives a scorable pair.</exception>
    public static OrpoPreferenceMetrics Evaluate(this OrpoTransformer model, IDataView data,
        string promptColumnName = OrpoOptions.DefaultPromptColumnName, string chosenColumnName = OrpoOptions.DefaultChosenColumnName,
        string rejectedColumnName = OrpoOptions.DefaultRejectedColumnName,
        double? lambda = null, int batchSize = 8)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(data);
        if (lambda is double l && !(double.IsFinite(l) && l >= 0))
            throw new ArgumentOutOfRangeException(nameof(lambda), lambda, "lambda must be a finite number >= 0.");
        ArgumentOutOfRangeException.ThrowIfLessThan(batchSize, 1);
        var columns = new OrpoOptions
        {
            PromptColumnName = promptColumnName, ChosenColumnName = chosenColumnName, RejectedColumnName = rejectedColumnName,
        };
        var network = model.Model;
        var read = PreferenceDataReader.Read(data, columns, model.CreateEncoder(network), "evaluation data",
            () => MlNetAccess.IsCanceled(model.Environment));
        if (read.Pairs.Count == 0)
            throw new InvalidOperationException(
                $"Nothing to evaluate: all {read.Rows} rows of the evaluation data were skipped or dropped. " + string.Join("; ", read.Describe()));
        return PreferenceEvaluator.Evaluate(network.Network, read.Pairs, EvaluationSettings(model.Settings, lambda, batchSize));
    }

    /// <summary>The settings a model is scored with: its own lambda (unless overridden) and NLL definition.</summary>
    internal static TrainingSettings EvaluationSettings(TransformerSettings settings, double? lambda, int batchSize) => new()
    {
        Lambda = lambda ?? settings.Lambda,
        IncludePromptInNll = settings.IncludePromptInNll,
        BatchSize = batchSize,
        MaxLength = settings.MaxLength,
        MaxPromptLength = settings.MaxPromptLength,
        PromptTemplate = settings.PromptTemplate,
        ChatTemplate = settings.ChatTemplate,
    };

    /// <summary>
    /// The ORPO paper's diversity metrics (section 6.4): <see cref="OrpoDiversityMetrics.PerInputDiversity"/>, the mean
    /// pairwise cosine similarity of <see cref="OrpoDiversityOptions.SamplesPerPrompt"/> samples for the same prompt
    /// (averaged over prompts), and <see cref="OrpoDiversityMetrics.AcrossInputDiversity"/>, the mean pairwise cosine
    /// similarity of the first sample of every prompt. Lower values mean more diverse text.
    /// </summary>
    /// <param name="model">The model that generates the samples.</param>
    /// <param name="prompts">At least two prompts.</param>
    /// <param name="options">Sampling, seed and embedding; null uses the defaults (temperature 1, the model's own mean-pooled hidden states).</param>
    /// <returns>Both metrics and the samples they were computed from.</returns>
    public static OrpoDiversityMetrics EvaluateDiversity(this OrpoTransformer model, IReadOnlyList<string> prompts,
        OrpoDiversityOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        return DiversityEvaluator.Evaluate(model, prompts, options ?? new OrpoDiversityOptions());
    }

    /// <summary>
    /// The default embedding of <see cref="EvaluateDiversity"/>: each text is tokenised alone (with BOS) and its
    /// final-layer hidden states are averaged over the text's tokens (BOS excluded unless the text is empty).
    /// </summary>
    /// <param name="model">The model whose hidden states embed the text; it must outlive the returned function.</param>
    /// <returns>A function from texts to one vector per text, of the model's hidden size.</returns>
    public static Func<IReadOnlyList<string>, float[][]> HiddenStateEmbedding(this OrpoTransformer model)
    {
        ArgumentNullException.ThrowIfNull(model);
        return texts => HiddenStateEmbedder.Embed(model.Model, texts);
    }
}
