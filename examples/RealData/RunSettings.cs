using System.Globalization;

namespace RealData;

/// <summary>The few knobs of the real-data run.</summary>
internal sealed record RunSettings(int Epochs, int MaxLength, double Lambda, double LearningRate)
{
    public static RunSettings Parse(string[] args)
    {
        var s = new RunSettings(Epochs: 2, MaxLength: 192, Lambda: 0.25, LearningRate: 1e-3);
        for (int i = 0; i + 1 < args.Length; i += 2)
        {
            string v = args[i + 1];
            s = args[i] switch
            {
                "--epochs" => s with { Epochs = int.Parse(v, CultureInfo.InvariantCulture) },
                "--max-length" => s with { MaxLength = int.Parse(v, CultureInfo.InvariantCulture) },
                "--lambda" => s with { Lambda = double.Parse(v, CultureInfo.InvariantCulture) },
                "--lr" => s with { LearningRate = double.Parse(v, CultureInfo.InvariantCulture) },
                _ => throw new ArgumentException($"Unknown option {args[i]} (use --epochs, --max-length, --lambda, --lr)."),
            };
        }
        return s;
    }
}

/// <summary>Finds the repository root (the folder with Microsoft.ML.Orpo.sln) above the current folder or the app.</summary>
internal static class RepoRoot
{
    public static string Find()
    {
        foreach (string start in new[] { Directory.GetCurrentDirectory(), AppContext.BaseDirectory })
            for (var dir = new DirectoryInfo(start); dir is not null; dir = dir.Parent)
                if (File.Exists(Path.Combine(dir.FullName, "Microsoft.ML.Orpo.sln"))) return dir.FullName;
        throw new DirectoryNotFoundException("Run this from inside the Microsoft.ML.Orpo repository.");
    }
}
