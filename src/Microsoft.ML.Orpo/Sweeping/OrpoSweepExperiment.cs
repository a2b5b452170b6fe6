using Microsoft.ML.Orpo.Sweeping;

namespace Microsoft.ML.Orpo;

/// <summary>
/// A hyperparameter sweep of ORPO fine-tuning (lambda on a log scale by default, optionally the learning rate),
/// shaped like ML.NET AutoML's <c>AutoMLExperiment</c>: configure with the <c>Set*</c> methods, then
/// <see cref="RunAsync"/>. Trials run one after another; each is a full ORPO fit from the base model, scored on the
/// validation set after its last step. A failing trial (e.g. a diverging learning rate) is recorded and the sweep
/// goes on. Progress is written per trial to the context's log (<c>MLContext.Log</c>, source "OrpoSweep").
/// </summary>
/// <example>
/// <code>
/// var result = await new OrpoSweepExperiment(mlContext)
///     .SetBaseOptions(new OrpoOptions { BaseModelPath = "models/stories260K/hf", LearningRate = 1e-3, Epochs = 3 })
///     .SetDataset(train, validation)
///     .SetSearchSpace(new OrpoSearchSpace { Lambda = SweepRange.LogScale(0.05, 1.0, 6) })
///     .SetSuccessiveHalvingTuner()
///     .SetMetric(OrpoSweepMetric.LogOddsRatio)
///     .SetTrainingTimeInSeconds(600)
///     .RunAsync();
/// using OrpoTransformer best = result.BestModel;
/// </code>
/// </example>
public sealed class OrpoSweepExperiment
{
    private readonly MLContext mlContext;
    private OrpoOptions? baseOptions;
    private IDataView? trainData;
    private IDataView? validationData;
    private OrpoSearchSpace searchSpace = new();
    private OrpoSweepTuner tuner = OrpoSweepTuner.Grid();
    private OrpoSweepMetric metric = OrpoSweepMetric.LogOddsRatio;
    private bool maximize = true;
    private int? maxTrials;
    private TimeSpan? timeBudget;
    private IProgress<OrpoSweepTrial>? monitor;
    private int running;

    /// <summary>Creates an empty experiment on <paramref name="mlContext"/> (its seed seeds the trials when the base options have none).</summary>
    public OrpoSweepExperiment(MLContext mlContext)
    {
        ArgumentNullException.ThrowIfNull(mlContext);
        this.mlContext = mlContext;
    }

    /// <summary>The options every trial starts from (copied); the search space overrides lambda and the learning rate, tuners the epochs.</summary>
    public OrpoSweepExperiment SetBaseOptions(OrpoOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        Training.TrainingSettings.Validate(options);
        baseOptions = options.Clone();
        return this;
    }

    /// <summary>The training pairs and the validation pairs every trial is scored on (same column names as the base options).</summary>
    public OrpoSweepExperiment SetDataset(IDataView train, IDataView validation)
    {
        ArgumentNullException.ThrowIfNull(train);
        ArgumentNullException.ThrowIfNull(validation);
        trainData = train;
        validationData = validation;
        return this;
    }

    /// <summary>What to search; default: lambda on a log scale from 0.01 to 1 (5 grid points), the base learning rate.</summary>
    public OrpoSweepExperiment SetSearchSpace(OrpoSearchSpace space)
    {
        ArgumentNullException.ThrowIfNull(space);
        space.Validate();
        searchSpace = space;
        return this;
    }

    /// <summary>How trials are chosen; default <see cref="OrpoSweepTuner.Grid"/>.</summary>
    public OrpoSweepExperiment SetTuner(OrpoSweepTuner sweepTuner)
    {
        ArgumentNullException.ThrowIfNull(sweepTuner);
        tuner = sweepTuner;
        return this;
    }

    /// <summary>Grid search (<see cref="OrpoSweepTuner.Grid"/>).</summary>
    public OrpoSweepExperiment SetGridSearchTuner() => SetTuner(OrpoSweepTuner.Grid());

    /// <summary>Random search (<see cref="OrpoSweepTuner.Random"/>).</summary>
    /// <param name="seed">Seed of the draws; null: the experiment's seed.</param>
    public OrpoSweepExperiment SetRandomSearchTuner(int? seed = null) => SetTuner(OrpoSweepTuner.Random(seed));

    /// <summary>Successive halving (<see cref="OrpoSweepTuner.SuccessiveHalving"/>).</summary>
    /// <param name="reductionFactor">Kept fraction 1/eta and budget growth eta per rung. Default 3.</param>
    /// <param name="minEpochs">The smallest budget. Default 1.</param>
    public OrpoSweepExperiment SetSuccessiveHalvingTuner(int reductionFactor = 3, int minEpochs = 1) =>
        SetTuner(OrpoSweepTuner.SuccessiveHalving(reductionFactor, minEpochs));

    /// <summary>The validation metric to optimise; default <see cref="OrpoSweepMetric.LogOddsRatio"/>, maximised.</summary>
    /// <param name="sweepMetric">The metric.</param>
    /// <param name="maximize">Direction; null: the metric's natural one (losses and perplexity are minimised).</param>
    public OrpoSweepExperiment SetMetric(OrpoSweepMetric sweepMetric, bool? maximize = null)
    {
        if (!Enum.IsDefined(sweepMetric)) throw new ArgumentOutOfRangeException(nameof(sweepMetric), sweepMetric, "Unknown sweep metric.");
        metric = sweepMetric;
        this.maximize = maximize ?? sweepMetric.MaximizedByDefault();
        return this;
    }

    /// <summary>The most trials to run, all rungs counted (AutoML's <c>SetMaxModelToExplore</c>).</summary>
    public OrpoSweepExperiment SetMaxTrials(int trials)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(trials, 1);
        maxTrials = trials;
        return this;
    }

    /// <summary>
    /// The time budget: no trial starts after it has passed. The trial running when it passes completes, so the
    /// sweep ends within one trial of the budget. The first trial always runs.
    /// </summary>
    public OrpoSweepExperiment SetTrainingTimeInSeconds(uint seconds)
    {
        ArgumentOutOfRangeException.ThrowIfZero(seconds);
        timeBudget = TimeSpan.FromSeconds(seconds);
        return this;
    }

    /// <summary>Called (on the sweep's thread) with every finished trial, including failed and canceled ones.</summary>
    public OrpoSweepExperiment SetMonitor(IProgress<OrpoSweepTrial> trialMonitor)
    {
        ArgumentNullException.ThrowIfNull(trialMonitor);
        monitor = trialMonitor;
        return this;
    }

    /// <summary>
    /// Runs the sweep on a background thread and returns the trial table with the best trial's fitted model (the
    /// other trials' models are disposed). The best trial is the best completed trial among those with the most
    /// epochs (the last successive-halving rung reached). On cancellation the running trial stops, is recorded as
    /// canceled, and the result so far is returned; if no trial had completed, <see cref="OperationCanceledException"/> is thrown.
    /// </summary>
    /// <exception cref="InvalidOperationException">The experiment is incomplete or already running, or no trial completed.</exception>
    public Task<OrpoSweepResult> RunAsync(CancellationToken cancellationToken = default)
    {
        if (baseOptions is null) throw new InvalidOperationException("Call SetBaseOptions before RunAsync.");
        if (trainData is null || validationData is null) throw new InvalidOperationException("Call SetDataset before RunAsync.");
        if (Interlocked.Exchange(ref running, 1) == 1) throw new InvalidOperationException("This experiment is already running.");
        var run = new SweepRun(mlContext, baseOptions.Clone(), trainData, validationData, searchSpace, tuner, metric, maximize,
            maxTrials, timeBudget, monitor);
        return Task.Run(() =>
        {
            try
            {
                return run.Execute(cancellationToken);
            }
            finally
            {
                Volatile.Write(ref running, 0);
            }
        }, CancellationToken.None);
    }
}
