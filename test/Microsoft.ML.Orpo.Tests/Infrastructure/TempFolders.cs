using System.Diagnostics;
using System.Globalization;

namespace Microsoft.ML.Orpo.Tests.Infrastructure;

/// <summary>
/// Where the tests write files: one folder per test process, <c>{temp}/orpo-tests/{pid}</c>, deleted when the run ends,
/// and the folders of earlier runs whose process is gone (killed, crashed) deleted when the next run starts. Left in
/// /tmp, every run's folders piled up on the machine CI shares with development until its disk was full (67 GB in
/// ~38,000 folders) and tests failed with "No space left on device".
/// </summary>
internal static class TempFolders
{
    private static readonly string Parent = Path.Combine(Path.GetTempPath(), "orpo-tests");

    public static string Root { get; } = Path.Combine(Parent, Environment.ProcessId.ToString(CultureInfo.InvariantCulture));

    /// <summary>Deletes the folders of test processes that no longer run.</summary>
    public static void RemoveAbandoned()
    {
        if (!Directory.Exists(Parent)) return;
        foreach (string dir in Directory.GetDirectories(Parent))
            if (int.TryParse(Path.GetFileName(dir), NumberStyles.None, CultureInfo.InvariantCulture, out int pid)
                && pid != Environment.ProcessId && !IsRunning(pid))
                TryDelete(dir);
    }

    /// <summary>Deletes this run's folder.</summary>
    public static void RemoveOwn() => TryDelete(Root);

    private static bool IsRunning(int pid)
    {
        try
        {
            using var process = Process.GetProcessById(pid);
            return !process.HasExited;
        }
        catch (ArgumentException)
        {
            return false;
        }
        catch (InvalidOperationException)
        {
            return false;
        }
    }

    private static void TryDelete(string dir)
    {
        try
        {
            Directory.Delete(dir, recursive: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // Another run's files in use, or not ours to delete: left for a later run.
        }
    }
}
