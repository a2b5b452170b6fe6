using System.Security.Cryptography;
using Microsoft.ML;
using Microsoft.ML.Orpo;

// Usage: Microsoft.ML.Orpo.TrainChild <modelFolder> <checkpointDirectory> <outputFolder> [lora]
// Trains 16 optimiser steps (a checkpoint after each) through the public OrpoFineTune API. Prints "resumed <step>"
// when it continues an earlier run, "step <k>" after each step, then "done <SHA-256 of the final model.safetensors>".
// With "lora" it trains a rank-4 all-linear LoRA adapter (default dropout 0.05) instead, and the hash is that of the
// adapter_model.safetensors SaveAdapter writes. On failure prints the exception to stderr and exits 3.
if (args.Length is not (3 or 4) || (args.Length == 4 && args[3] != "lora"))
{
    Console.Error.WriteLine("usage: <modelFolder> <checkpointDirectory> <outputFolder> [lora]");
    return 2;
}

try
{
    var ml = new MLContext(seed: 1);
    ml.Log += (_, e) =>
    {
        const string marker = "Resumed from checkpoint at step ";
        int at = e.Message.IndexOf(marker, StringComparison.Ordinal);
        if (at >= 0) Console.WriteLine("resumed " + e.Message[(at + marker.Length)..].Split(' ')[0]);
    };
    string[] names = ["Sue", "Lily", "Tom", "Max"];
    string[] openings = ["Once upon a time, there was a little girl named", "One day, a boy named", "There was a cat named", "In a big house lived a dog named"];
    var rows = new List<PairRow>();
    for (int i = 0; i < 32; i++)
    {
        string opening = openings[i % openings.Length];
        string ending = $" liked to play in the park number {i}.";
        rows.Add(new PairRow { Prompt = opening, Chosen = $" {names[i % 2]}. {names[i % 2]}{ending}", Rejected = $" {names[2 + i % 2]}. {names[2 + i % 2]}{ending}" });
    }
    var options = new OrpoOptions
    {
        BaseModelPath = args[0], CheckpointDirectory = args[1], CheckpointInterval = 1, CheckpointsToKeep = 2,
        BatchSize = 2, Epochs = 1, LearningRate = 1e-3, Seed = 7, MaxLength = 64, Shuffle = true, WarmupRatio = 0.1,
        Progress = new ConsoleProgress(),
        Lora = args.Length == 4 ? new LoraOptions { Rank = 4, Alpha = 8 } : null,
    };
    using OrpoTransformer model = ml.Transforms.OrpoFineTune(options).Fit(ml.Data.LoadFromEnumerable(rows));
    if (options.Lora is null) model.SaveHuggingFace(args[2]);
    else model.SaveAdapter(args[2]);
    using var weights = File.OpenRead(Path.Combine(args[2], options.Lora is null ? "model.safetensors" : "adapter_model.safetensors"));
    Console.WriteLine("done " + Convert.ToHexString(SHA256.HashData(weights)));
    return 0;
}
catch (Exception ex)
{
    Console.Error.WriteLine(ex.ToString());
    return 3;
}

/// <summary>Prints each optimiser step as it completes (synchronously, so the parent sees it before the next step).</summary>
internal sealed class ConsoleProgress : IProgress<OrpoStepMetrics>
{
    /// <summary>Writes "step k".</summary>
    public void Report(OrpoStepMetrics value)
    {
        Console.WriteLine($"step {value.Step}");
        Console.Out.Flush();
    }
}

/// <summary>One preference pair.</summary>
internal sealed class PairRow
{
    /// <summary>The prompt.</summary>
    public string Prompt { get; set; } = "";
    /// <summary>The preferred response.</summary>
    public string Chosen { get; set; } = "";
    /// <summary>The other response.</summary>
    public string Rejected { get; set; } = "";
}
