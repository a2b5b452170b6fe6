// Quickstart: ORPO fine-tuning of the bundled stories260K model on the bundled preference set, on the CPU.
// dotnet run --project examples/Quickstart [-- --help]
using System.Diagnostics;
using Microsoft.ML;
using Microsoft.ML.Orpo;
using Quickstart;

QuickstartArguments a;
try
{
    a = QuickstartArguments.Parse(args);
}
catch (Exception e) when (e is ArgumentException or FormatException)
{
    Console.Error.WriteLine(e.Message);
    Console.Error.WriteLine(QuickstartArguments.Usage);
    return 2;
}
if (a.Help)
{
    Console.WriteLine(QuickstartArguments.Usage);
    return 0;
}
if (a.MakeDataDirectory is not null)
{
    var (trainCount, heldOutCount) = PreferenceSetGenerator.Write(a.MakeDataDirectory);
    Console.WriteLine($"Wrote {trainCount} training and {heldOutCount} held-out pairs to {Path.GetFullPath(a.MakeDataDirectory)}");
    return 0;
}

if (a.MakeChatDataDirectory is not null)
{
    var (trainCount, heldOutCount) = PreferenceSetGenerator.WriteChat(a.MakeChatDataDirectory);
    Console.WriteLine($"Wrote {trainCount} training and {heldOutCount} held-out conversational pairs to {Path.GetFullPath(a.MakeChatDataDirectory)}");
    return 0;
}

var clock = Stopwatch.StartNew();
var ml = new MLContext(seed: 1);
string modelPath = a.ModelPath ?? RepositoryPaths.Stories260K;
// A 64-wide model gains nothing from more threads, and extra OpenMP threads spin badly when the CPU is shared
// (measured here on 2 busy cores: 4.8 s with 1 thread vs 30.7 s with 2 for the same 30 steps).
int? threads = a.Threads ?? (a.ModelPath is null ? 1 : null);
if (threads is int n) TorchSharp.torch.set_num_threads(n);
string dataSet = a.Chat ? RepositoryPaths.ChatPreferenceSet : RepositoryPaths.PreferenceSet;
string trainPath = a.DataPath ?? Path.Combine(dataSet, "train.jsonl");
string? heldOutPath = a.HeldOutPath ?? (a.DataPath is null ? Path.Combine(dataSet, "heldout.jsonl") : null);

IDataView train = ml.Data.LoadPreferenceJsonl(trainPath, keepMessages: a.Chat);
IDataView heldOut;
if (heldOutPath is not null)
{
    heldOut = ml.Data.LoadPreferenceJsonl(heldOutPath, keepMessages: a.Chat);
}
else
{
    var split = ml.Data.TrainTestSplit(train, testFraction: 0.2, seed: 1);
    (train, heldOut) = (split.TrainSet, split.TestSet);
}
int trainRows = Rows.Count(ml, train), heldOutRows = Rows.Count(ml, heldOut);
var prompts = Rows.Prompts(ml, heldOut).Distinct().Take(4).ToArray();

var options = new OrpoOptions
{
    BaseModelPath = modelPath,
    PromptTemplate = a.Template,
    ChatTemplate = a.Chat ? ChatMode.Template : null,
    Lambda = a.Lambda,
    LearningRate = a.LearningRate,
    Epochs = a.Epochs,
    BatchSize = a.BatchSize,
    Seed = a.Seed,
    Lora = a.Lora ? new LoraOptions { Rank = a.LoraRank, Alpha = a.LoraAlpha, UseRsLora = a.LoraRsLora, UseDora = a.LoraDora } : null,
    ValidationSet = heldOut,
    ValidationInterval = Math.Max(1, (trainRows + a.BatchSize - 1) / a.BatchSize * a.Epochs / 8),
    Progress = new ConsoleProgress(),
};
Console.WriteLine($"ORPO quickstart: {Path.GetFullPath(modelPath)}");
Console.WriteLine($"  data: {trainRows} training pairs ({trainPath}), {heldOutRows} held-out pairs ({heldOutPath ?? "20% split of the training file"})");
if (a.Chat) Console.WriteLine($"  chat template (plain text: stories260K's tokenizer has no chat tokens, so EOS ends a turn): \"{ChatMode.Template.ReplaceLineEndings("\\n")}\"");
Console.WriteLine($"  lambda {a.Lambda}, learning rate {a.LearningRate}, {a.Epochs} epochs, batch {a.BatchSize}, template {(a.Chat ? "the chat template above" : a.Template is null ? "none" : "\"" + a.Template.ReplaceLineEndings("\\n") + "\"")}, seed {a.Seed}");
Console.WriteLine(options.Lora is { } lora
    ? $"  {(lora.UseDora ? "DoRA" : "LoRA")}: rank {lora.Rank}, alpha {lora.Alpha}{(lora.UseRsLora ? " (rsLoRA)" : "")}, dropout {lora.Dropout} on [{string.Join(", ", lora.TargetModules)}] of every layer; the base weights stay frozen"
    : "  full fine-tuning: every weight trains");

ModelSnapshot before;
var heldOutPrompts = Rows.Prompts(ml, heldOut).Distinct().ToArray();
double stopShareBefore = 0;
using (var baseModel = OrpoTransformer.FromPretrained(ml, options))
{
    before = ModelSnapshot.Take(baseModel, heldOut, prompts);
    if (a.Chat) stopShareBefore = ChatMode.StopShare(baseModel, heldOutPrompts);
}

Console.WriteLine("Training...");
var fitClock = Stopwatch.StartNew();
using OrpoTransformer model = ml.Transforms.OrpoFineTune(options).Fit(train);
fitClock.Stop();
var history = model.TrainingHistory;
Console.WriteLine($"  {history.Count} steps in {fitClock.Elapsed.TotalSeconds:F1} s ({history.Average(m => m.TokensPerSecond):F0} tokens/s on average)");

var after = ModelSnapshot.Take(model, heldOut, prompts);
BeforeAfterReport.Print(before, after, prompts);
if (a.Diversity)
{
    using var baseModel = OrpoTransformer.FromPretrained(ml, options);
    DiversityReport.Print(baseModel, model, Rows.Prompts(ml, heldOut).Distinct().ToArray());
}
if (a.Chat)
{
    double stopShareAfter = ChatMode.StopShare(model, heldOutPrompts);
    Console.WriteLine();
    Console.WriteLine($"Held-out greedy generations (up to {ChatMode.MaxNewTokens} new tokens) that end with the stop token (EOS), {heldOutPrompts.Length} distinct prompts:");
    Console.WriteLine($"  before {stopShareBefore:P0}   after {stopShareAfter:P0}");
}

string output = Path.GetFullPath(a.OutputDirectory);
Directory.CreateDirectory(output);
ml.Model.Save(model, train.Schema, Path.Combine(output, "orpo-model.zip"));
model.SaveHuggingFace(Path.Combine(output, "hf")); // with LoRA, the adapter merged into the weights (W + alpha/r B A)
if (model.HasAdapter) model.SaveAdapter(Path.Combine(output, "adapter"));
MetricsCsv.Write(Path.Combine(output, "metrics.csv"), history);
TrainingCurves.Save(Path.Combine(output, "training-curves.png"), history, a.Lambda, before.HeldOut);

// Parameter counts from the written files' headers: the whole model, and (LoRA) the adapters, the only weights that trained.
long modelParameters = SafetensorsParameters.Count(Path.Combine(output, "hf", "model.safetensors"));
long? adapterParameters = model.HasAdapter ? SafetensorsParameters.Count(Path.Combine(output, "adapter", "adapter_model.safetensors")) : null;
Console.WriteLine();
Console.WriteLine(adapterParameters is long trained
    ? $"Trained {trained:N0} adapter parameters ({(a.LoraDora ? "DoRA" : "LoRA")} rank {a.LoraRank}), {100.0 * trained / modelParameters:F1}% of the model's {modelParameters:N0}, in {fitClock.Elapsed.TotalSeconds:F1} s"
    : $"Trained all {modelParameters:N0} parameters of the model in {fitClock.Elapsed.TotalSeconds:F1} s");
Console.WriteLine($"Wrote to {output}:");
Console.WriteLine("  orpo-model.zip        ML.NET model (mlContext.RegisterOrpo(); mlContext.Model.Load(...))");
Console.WriteLine($"  hf/                   Hugging Face folder (config.json, model.safetensors, tokenizer){(model.HasAdapter ? ", the adapter merged in" : "")}");
if (model.HasAdapter)
    Console.WriteLine("  adapter/              PEFT LoRA adapter (adapter_config.json, adapter_model.safetensors): PeftModel.from_pretrained, or OrpoTransformer.FromPretrained(ml, model, adapterPath: ...)");
Console.WriteLine($"  metrics.csv           {history.Count} rows, one per optimiser step (TRL metric names)");
Console.WriteLine("  training-curves.png   loss, NLL, odds-ratio loss, rewards, accuracy and margin vs step");
Console.WriteLine($"Done in {clock.Elapsed.TotalSeconds:F1} s.");
return 0;
