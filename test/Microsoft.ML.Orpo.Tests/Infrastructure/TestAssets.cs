namespace Microsoft.ML.Orpo.Tests.Infrastructure;

/// <summary>Paths of the assets vendored in the repository (found by walking up to the solution file).</summary>
internal static class TestAssets
{
    public static string RepoRoot { get; } = FindRepoRoot();

    public static string Stories260K => Path.Combine(RepoRoot, "models", "stories260K");
    public static string Stories260KHf => Path.Combine(Stories260K, "hf");
    public static string Stories260KBin => Path.Combine(Stories260K, "stories260K.bin");
    public static string Stories260KTokenizer => Path.Combine(Stories260K, "tok512.model");

    /// <summary>A fresh, empty temporary folder for one test, under this run's <see cref="TempFolders.Root"/>.</summary>
    public static string NewTempDirectory(string prefix = "orpo-test")
    {
        string dir = Path.Combine(TempFolders.Root, $"{prefix}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(dir);
        return dir;
    }

    private static string FindRepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "Microsoft.ML.Orpo.sln")))
                return dir.FullName;
        throw new InvalidOperationException("Could not find Microsoft.ML.Orpo.sln above " + AppContext.BaseDirectory);
    }
}
