using Microsoft.ML.Data;
using Microsoft.ML.Orpo.MlNet;
using Microsoft.ML.Orpo.Modeling;
using Microsoft.ML.Orpo.Native;
using Microsoft.ML.Orpo.Training;
using Microsoft.ML.Runtime;
using Microsoft.ML.Orpo.Preferences;

namespace Microsoft.ML.Orpo;

/// <summary>
/// Fits a causal language model to preference pairs with ORPO (Hong, Lee &amp; Thorne 2024). Created by
/// <see cref="OrpoCatalog.OrpoFineTune(TransformsCatalog, OrpoOptions)"/>.
/// </summary>
public sealed class OrpoEstimator : IEstimator<OrpoTransformer>
{
    private readonly IHostEnvironment env;
    private readonly OrpoOptions options;

    internal OrpoEstimator(IHostEnvironment env, OrpoOptions options)
    {
        ArgumentNullException.ThrowIfNull(env);
        ArgumentNullException.ThrowIfNull(options);
        TrainingSettings.Validate(options);
        this.env = env;
        this.options = options.Clone();
    }

    /// <summary>A copy of the options this estimator fits with.</summary>
    public OrpoOptions Options => options.Clone();

    /// <summary>Checks the prompt/chosen/rejected text columns and adds the output text column.</summary>
    public SchemaShape GetOutputSchema(SchemaShape inputSchema)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        PreferenceColumns.Check(inputSchema, options);
        var columns = inputSchema.Where(c => c.Name != options.OutputColumnName).ToList();
        columns.Add(MlNetAccess.ScalarColumn(options.OutputColumnName, TextDataViewType.Instance));
        return new SchemaShape(columns);
    }

    /// <summary>Loads the base model, reads and encodes the pairs, trains, and returns the fitted transformer.</summary>
    public OrpoTransformer Fit(IDataView input)
    {
        ArgumentNullException.ThrowIfNull(input);
        PreferenceColumns.Check(input.Schema, options);
        if (options.ValidationSet is not null) PreferenceColumns.Check(options.ValidationSet.Schema, options, "validation set");
        var host = env.Register("OrpoFineTune");
        using var channel = host.Start("OrpoFineTune");
        bool IsCanceled() => options.CancellationToken.IsCancellationRequested || MlNetAccess.IsCanceled(env);
        foreach (string reason in NativeAbiGuard.FallbackReasons()) channel.Warning(MessageSensitivity.None, reason);

        using var run = FineTuningRun.Start(options, () => host.Rand.Next(), model => OrpoTransformer.WarnNotApplied(env, model.Generation));
        var train = run.Read(input, "training data", IsCanceled);
        foreach (string line in train.Describe()) channel.Warning(MessageSensitivity.None, line);
        if (train.Pairs.Count == 0)
            throw new InvalidOperationException(
                $"OrpoFineTune has nothing to train on: all {train.Rows} rows of the training data were skipped or dropped. " +
                string.Join("; ", train.Describe()));
        IReadOnlyList<EncodedPair>? validation = null;
        if (options.ValidationSet is not null)
        {
            var read = run.Read(options.ValidationSet, "validation set", IsCanceled);
            foreach (string line in read.Describe()) channel.Warning(MessageSensitivity.None, "validation set: " + line);
            if (read.Pairs.Count == 0)
                channel.Warning(MessageSensitivity.None, $"validation set: none of its {read.Rows} rows can be scored; validation is off.");
            validation = read.Pairs;
        }
        var history = run.Train(train.Pairs, validation, message => channel.Info(MessageSensitivity.None, message),
            options.CancellationToken, IsCanceled);
        return OrpoTransformer.From(env, run, history);
    }
}
