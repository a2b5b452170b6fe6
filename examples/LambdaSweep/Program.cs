// Sweeps ORPO's lambda over a grid like the paper's ablation (0.05 to 1.0) on a small stories260K-domain
// preference set, prints the trial table, and writes trials.csv and PNG plots to orpo-sweep/ (or --out DIR).
using System.Diagnostics;
using LambdaSweep;
using Microsoft.ML;
using Microsoft.ML.Orpo;
using Microsoft.ML.Runtime;

string outDirectory = Path.GetFullPath(ArgumentValue(args, "--out") ?? "orpo-sweep");
string modelPath = ArgumentValue(args, "--model") ?? FindBundledModel();
Directory.CreateDirectory(outDirectory);

var ml = new MLContext(seed: 1);
ml.Log += (_, e) =>
{
    if (e.Source == "OrpoSweep" && e.Kind is ChannelMessageKind.Info or ChannelMessageKind.Warning) Console.WriteLine($"  [log] {e.RawMessage}");
};
var (train, validation) = NamePreferencePairs.Create();
Console.WriteLine($"LambdaSweep: {train.Count} training / {validation.Count} validation pairs (prefer 'Sue' over 'Lily'), model {modelPath}");

var clock = Stopwatch.StartNew();
var result = await new OrpoSweepExperiment(ml)
    .SetBaseOptions(new OrpoOptions
    {
        BaseModelPath = modelPath,
        LearningRate = 1e-3,
        LearningRateSchedule = LearningRateSchedule.Constant,
        Epochs = 3,
        BatchSize = 8,
        Seed = 1,
    })
    .SetDataset(ml.Data.LoadFromEnumerable(train), ml.Data.LoadFromEnumerable(validation))
    .SetSearchSpace(new OrpoSearchSpace { Lambda = SweepRange.Choice(0.05, 0.1, 0.25, 0.5, 0.75, 1.0) })
    .SetGridSearchTuner()
    .SetMetric(OrpoSweepMetric.LogOddsRatio)
    .SetTrainingTimeInSeconds(150)
    .RunAsync();
using var best = result.BestModel;

Console.WriteLine();
Console.WriteLine(result.FormatTable());
Console.WriteLine($"{result.Trials.Count} trials, {result.TotalTrainingSteps} training steps, {clock.Elapsed.TotalSeconds:F1} s");
const string prompt = "Once upon a time, there was a little girl named";
Console.WriteLine($"best model (lambda {result.BestTrial.Lambda}), greedy: \"{prompt}\" -> \"{best.Generate(prompt, new GenerationOptions { MaxNewTokens = 16 })}\"");

string csv = Path.Combine(outDirectory, "trials.csv");
result.SaveCsv(csv);
string metricPlot = Path.Combine(outDirectory, "metric-vs-lambda.png");
string logProbPlot = Path.Combine(outDirectory, "logprobs-vs-lambda.png");
string stepPlot = Path.Combine(outDirectory, "logprobs-per-step.png");
SweepPlots.MetricVsLambda(result, metricPlot);
SweepPlots.LogProbabilitiesVsLambda(result, logProbPlot);
SweepPlots.LogProbabilitiesPerStep(result, stepPlot);
foreach (string file in new[] { csv, metricPlot, logProbPlot, stepPlot }) Console.WriteLine($"wrote {file}");

static string? ArgumentValue(string[] args, string name)
{
    int i = Array.IndexOf(args, name);
    return i >= 0 && i + 1 < args.Length ? args[i + 1] : null;
}

static string FindBundledModel()
{
    foreach (string start in new[] { Directory.GetCurrentDirectory(), AppContext.BaseDirectory })
        for (var dir = new DirectoryInfo(start); dir is not null; dir = dir.Parent)
        {
            string candidate = Path.Combine(dir.FullName, "models", "stories260K", "hf");
            if (Directory.Exists(candidate)) return candidate;
        }
    throw new DirectoryNotFoundException("models/stories260K/hf was not found above the current or the program's folder; pass --model PATH.");
}
