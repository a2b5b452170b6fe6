using Microsoft.ML.Orpo.MlNet;
using Microsoft.ML.Orpo.Training;
using Microsoft.ML.Runtime;
using Microsoft.ML.Orpo.Preferences;

namespace Microsoft.ML.Orpo.Sweeping;

/// <summary>
/// Trains one sweep trial: the data is read and encoded once (every trial shares the tokenizer, template and
/// lengths), then each trial is the <see cref="FineTuningRun"/> of <see cref="OrpoEstimator.Fit"/> with the trial's
/// lambda, learning rate and epochs, scored on the validation pairs after its last step.
/// </summary>
internal sealed class SweepTrialRunner
{
    private readonly IHostEnvironment env;
    private readonly OrpoOptions baseOptions;
    private readonly IReadOnlyList<EncodedPair> train;
    private readonly IReadOnlyList<EncodedPair> validation;
    private readonly int seed;

    private SweepTrialRunner(IHostEnvironment env, OrpoOptions baseOptions, IReadOnlyList<EncodedPair> train,
        IReadOnlyList<EncodedPair> validation, int seed)
    {
        this.env = env;
        this.baseOptions = baseOptions;
        this.train = train;
        this.validation = validation;
        this.seed = seed;
    }

    public int TrainingPairs => train.Count;

    public int ValidationPairs => validation.Count;

    /// <summary>Loads the base model once to encode both data sets; warns about skipped or truncated rows.</summary>
    public static SweepTrialRunner Prepare(IHostEnvironment env, OrpoOptions baseOptions, IDataView trainData, IDataView validationData,
        int seed, IChannel channel)
    {
        bool IsCanceled() => MlNetAccess.IsCanceled(env);
        using var run = FineTuningRun.Start(baseOptions, () => seed);
        var trainRead = run.Read(trainData, "training data", IsCanceled);
        var validationRead = run.Read(validationData, "validation set", IsCanceled);
        foreach (string line in trainRead.Describe().Concat(validationRead.Describe().Select(l => "validation: " + l)))
            channel.Warning(MessageSensitivity.None, line);
        if (trainRead.Pairs.Count == 0) throw new InvalidOperationException($"The sweep has nothing to train on: all {trainRead.Rows} training rows were skipped.");
        if (validationRead.Pairs.Count == 0) throw new InvalidOperationException($"The sweep has nothing to score on: all {validationRead.Rows} validation rows were skipped.");
        return new SweepTrialRunner(env, baseOptions, trainRead.Pairs, validationRead.Pairs, seed);
    }

    /// <summary>Trains and scores one trial; <paramref name="afterStep"/> sees every optimiser step, even of a trial that then fails.</summary>
    public OrpoTransformer Run(TrialProposal proposal, CancellationToken cancellationToken, Action<int> afterStep, Action<string>? log)
    {
        var options = baseOptions.Clone();
        options.Lambda = proposal.Lambda;
        options.LearningRate = proposal.LearningRate;
        options.Epochs = proposal.Epochs;
        options.CheckpointDirectory = null;   // trials must never resume each other's checkpoints
        options.ValidationSet = null;
        using var run = FineTuningRun.Start(options, () => seed);
        var history = run.Train(train, validation, log, cancellationToken, () => MlNetAccess.IsCanceled(env), afterStep);
        if (history.Count == 0 || history[^1].Validation is null)
            throw new InvalidOperationException("The trial finished without a validation pass.");
        return OrpoTransformer.From(env, run, history);
    }
}
