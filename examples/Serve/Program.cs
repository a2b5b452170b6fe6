// Serves a saved ORPO model: loads the ML.NET model zip in a fresh process and answers prompts through a
// PredictionEngine, the way an application would after training.
//
//   dotnet run --project examples/Serve -- [--model orpo-output/orpo-model.zip] [prompt ...]
//
// With no prompts on the command line it reads one prompt per line from standard input until EOF.
using Microsoft.ML;
using Microsoft.ML.Orpo;

string modelPath = Path.Combine("orpo-output", "orpo-model.zip");
var prompts = new List<string>();
for (int i = 0; i < args.Length; i++)
{
    if (args[i] == "--model" && i + 1 < args.Length) modelPath = args[++i];
    else prompts.Add(args[i]);
}
if (!File.Exists(modelPath))
{
    Console.Error.WriteLine($"No model at '{modelPath}'. Run `dotnet run --project examples/Quickstart` first, or pass --model PATH.");
    return 1;
}

// A process that has not used Microsoft.ML.Orpo yet needs this one call before Model.Load.
var ml = new MLContext().RegisterOrpo();
ITransformer model = ml.Model.Load(modelPath, out _);
using var engine = ml.Model.CreatePredictionEngine<PromptRow, ResponseRow>(model);
Console.Error.WriteLine($"Loaded {modelPath}; greedy decoding with the generation settings saved in the model.");

IEnumerable<string> Lines()
{
    for (string? line; (line = Console.In.ReadLine()) is not null;) yield return line;
}

foreach (string prompt in prompts.Count > 0 ? prompts : Lines())
    Console.WriteLine($"{prompt} | {engine.Predict(new PromptRow { Prompt = prompt }).Response}");
return 0;

/// <summary>The model's input: its prompt column.</summary>
internal sealed class PromptRow
{
    public string Prompt { get; set; } = "";
}

/// <summary>The model's output column.</summary>
internal sealed class ResponseRow
{
    public string Response { get; set; } = "";
}
