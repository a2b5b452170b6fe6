namespace Quickstart;

/// <summary>Finds the bundled model and data, whether the example runs from the repository root or elsewhere.</summary>
internal static class RepositoryPaths
{
    /// <summary>The repository root: the first folder holding Microsoft.ML.Orpo.sln above the current folder or the app.</summary>
    public static string Root { get; } = Find();

    public static string Stories260K => Path.Combine(Root, "models", "stories260K", "hf");
    public static string PreferenceSet => Path.Combine(Root, "data", "stories-preferences");
    public static string ChatPreferenceSet => Path.Combine(Root, "data", "stories-chat-preferences");

    private static string Find()
    {
        foreach (string start in new[] { Directory.GetCurrentDirectory(), AppContext.BaseDirectory })
            for (var dir = new DirectoryInfo(start); dir is not null; dir = dir.Parent)
                if (File.Exists(Path.Combine(dir.FullName, "Microsoft.ML.Orpo.sln")))
                    return dir.FullName;
        return Directory.GetCurrentDirectory();
    }
}
