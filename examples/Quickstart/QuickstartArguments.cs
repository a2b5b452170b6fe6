using System.Globalization;
using Microsoft.ML.Orpo;

namespace Quickstart;

/// <summary>Command-line options of the Quickstart; every one has a default that works on a fresh clone.</summary>
internal sealed class QuickstartArguments
{
    /// <summary>
    /// The default peak learning rates of full fine-tuning and of LoRA (<c>--lora</c>): LoRA's update is a low-rank
    /// product started at zero and wants about ten times the rate (on this set: held-out accuracy 1.00 either way).
    /// </summary>
    public const double FullLearningRate = 1e-3, LoraLearningRate = 1e-2;
    private static readonly LoraOptions LoraDefaults = new();

    private double? learningRate;

    public int Epochs { get; private set; } = 3;
    public double Lambda { get; private set; } = 0.25;
    public double LearningRate => learningRate ?? (Lora ? LoraLearningRate : FullLearningRate);
    public int BatchSize { get; private set; } = 8;
    public string? DataPath { get; private set; }
    public string? HeldOutPath { get; private set; }
    public string? ModelPath { get; private set; }
    public string OutputDirectory { get; private set; } = "orpo-output";
    public string? Template { get; private set; }
    public string? MakeDataDirectory { get; private set; }
    public string? MakeChatDataDirectory { get; private set; }
    public bool Chat { get; private set; }
    public bool Help { get; private set; }
    public bool Diversity { get; private set; }

    /// <summary>LoRA instead of full fine-tuning: <see cref="OrpoOptions.Lora"/> with this rank, alpha and factor.</summary>
    public bool Lora { get; private set; }
    public int LoraRank { get; private set; } = LoraDefaults.Rank;
    public double LoraAlpha { get; private set; } = LoraDefaults.Alpha;
    public bool LoraRsLora { get; private set; } = LoraDefaults.UseRsLora;
    public bool LoraDora { get; private set; } = LoraDefaults.UseDora;

    /// <summary>The training seed (data order, LoRA's initial A); the same seed gives the same run.</summary>
    public int Seed { get; private set; } = 1;

    /// <summary>CPU threads for libtorch; null: 1 for the bundled tiny model (fastest, and robust on a busy machine), else libtorch's default.</summary>
    public int? Threads { get; private set; }

    public static readonly string Usage = $$"""
        Usage: dotnet run --project examples/Quickstart -- [options]
          --epochs N          passes over the training pairs (default 3)
          --lambda X          weight of the odds-ratio term (default 0.25; the paper recommends 0.1 to 0.25)
          --lr X              peak learning rate (default {{Invariant(FullLearningRate)}}, right for this tiny model; ~8e-6 for 7B models;
                              with --lora {{Invariant(LoraLearningRate)}})
          --batch-size N      pairs per step (default 8)
          --data FILE         training pairs, .jsonl or .jsonl.gz (default data/stories-preferences/train.jsonl)
          --heldout FILE      held-out pairs (default: heldout.jsonl beside the bundled data, or 20% of --data)
          --model DIR         Hugging Face model folder or llama2.c .bin (default models/stories260K/hf)
          --template TEXT     prompt template with a {prompt} placeholder (default: none)
          --out DIR           output folder (default orpo-output under the current directory)
          --threads N         CPU threads for libtorch (default 1 for the bundled tiny model, else libtorch's default)
          --diversity         also print PID/AID of the base and tuned model (all-MiniLM-L6-v2 and hidden-state embeddings)
          --chat              chat mode: the conversational set (data/stories-chat-preferences) trained with a plain-text
                              chat template; prints the share of held-out greedy generations that stop before and after
          --lora              LoRA instead of full fine-tuning: frozen base, rank-r adapters on every projection
                              (q/k/v/o/gate/up/down); also writes the PEFT adapter to adapter/ (hf/ has it merged)
          --lora-rank N       LoRA rank r (default {{LoraDefaults.Rank}}; implies --lora)
          --lora-alpha X      LoRA alpha: the update is scaled by alpha / r (default {{Invariant(LoraDefaults.Alpha)}}; implies --lora)
          --lora-rslora       rank-stabilised LoRA: scale by alpha / sqrt(r) instead (PEFT's use_rslora; implies --lora);
                              at rank 16 that is 4x the update, so lower --lr too (2.5e-3 here)
          --lora-dora         weight-decomposed LoRA: also train a magnitude per output row (PEFT's use_dora; implies --lora)
          --seed N            training seed: data order and LoRA's initial weights (default 1)
          --make-data DIR     regenerate the bundled preference set into DIR and exit
          --make-chat-data DIR  regenerate the conversational preference set into DIR and exit
        """;

    private static string Invariant(double value) => value.ToString(CultureInfo.InvariantCulture);

    public static QuickstartArguments Parse(string[] args)
    {
        var a = new QuickstartArguments();
        for (int i = 0; i < args.Length; i++)
        {
            string name = args[i];
            string Value() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{name} needs a value.");
            switch (name)
            {
                case "--epochs": a.Epochs = int.Parse(Value(), CultureInfo.InvariantCulture); break;
                case "--lambda": a.Lambda = double.Parse(Value(), CultureInfo.InvariantCulture); break;
                case "--lr": case "--learning-rate": a.learningRate = double.Parse(Value(), CultureInfo.InvariantCulture); break;
                case "--batch-size": a.BatchSize = int.Parse(Value(), CultureInfo.InvariantCulture); break;
                case "--data": a.DataPath = Value(); break;
                case "--heldout": a.HeldOutPath = Value(); break;
                case "--model": a.ModelPath = Value(); break;
                case "--template": a.Template = Value(); break;
                case "--out": a.OutputDirectory = Value(); break;
                case "--threads": a.Threads = int.Parse(Value(), CultureInfo.InvariantCulture); break;
                case "--diversity": a.Diversity = true; break;
                case "--make-data": a.MakeDataDirectory = Value(); break;
                case "--make-chat-data": a.MakeChatDataDirectory = Value(); break;
                case "--chat": a.Chat = true; break;
                case "--seed": a.Seed = int.Parse(Value(), CultureInfo.InvariantCulture); break;
                case "--lora": a.Lora = true; break;
                case "--lora-rank": a.LoraRank = int.Parse(Value(), CultureInfo.InvariantCulture); a.Lora = true; break;
                case "--lora-alpha": a.LoraAlpha = double.Parse(Value(), CultureInfo.InvariantCulture); a.Lora = true; break;
                case "--lora-rslora": a.LoraRsLora = true; a.Lora = true; break;
                case "--lora-dora": a.LoraDora = true; a.Lora = true; break;
                case "-h": case "--help": a.Help = true; break;
                default: throw new ArgumentException($"Unknown option '{name}'.");
            }
        }
        return a;
    }
}
