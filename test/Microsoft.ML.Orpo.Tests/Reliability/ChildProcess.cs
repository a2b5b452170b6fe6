using System.Collections.Concurrent;
using System.Diagnostics;
using System.Runtime.InteropServices;

namespace Microsoft.ML.Orpo.Tests.Reliability;

/// <summary>
/// Runs a helper console app of this solution (its dll copied next to the tests) with <c>dotnet exec</c> and this test
/// assembly's deps.json and runtimeconfig.json, as the model-zip fresh-process tests do, reading its output line by line.
/// </summary>
internal sealed class ChildProcess : IDisposable
{
    private readonly Process process;
    private readonly BlockingCollection<string> lines = new();
    private readonly System.Text.StringBuilder stderr = new();
    private readonly List<string> all = new();

    public ChildProcess(string dll, params string[] args)
    {
        string dir = AppContext.BaseDirectory;
        string self = Path.GetFileNameWithoutExtension(typeof(ChildProcess).Assembly.Location);
        var psi = new ProcessStartInfo(DotnetHost())
        {
            RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false, WorkingDirectory = dir,
        };
        foreach (string arg in new[] { "exec", "--runtimeconfig", Path.Combine(dir, self + ".runtimeconfig.json"),
                     "--depsfile", Path.Combine(dir, self + ".deps.json"), Path.Combine(dir, dll) }.Concat(args))
            psi.ArgumentList.Add(arg);
        psi.Environment["DOTNET_CLI_UI_LANGUAGE"] = "en";
        process = Process.Start(psi) ?? throw new InvalidOperationException("Could not start dotnet.");
        process.OutputDataReceived += (_, e) =>
        {
            if (e.Data is null) { lines.CompleteAdding(); return; }
            lock (all) all.Add(e.Data);
            lines.Add(e.Data);
        };
        process.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (stderr) stderr.AppendLine(e.Data); };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
    }

    public int Id => process.Id;
    public string Stderr { get { lock (stderr) return stderr.ToString(); } }
    public IReadOnlyList<string> Output { get { lock (all) return all.ToList(); } }

    /// <summary>The next stdout line, or null when the output ended or <paramref name="timeout"/> passed.</summary>
    public string? NextLine(TimeSpan timeout) => lines.TryTake(out string? line, timeout) ? line : null;

    /// <summary>SIGKILL on Linux: no handler, no finally block, no flush runs in the child.</summary>
    public void Kill()
    {
        process.Kill(entireProcessTree: false);
        process.WaitForExit();
    }

    public int WaitForExit(TimeSpan timeout)
    {
        if (!process.WaitForExit(timeout))
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"child process {process.Id} did not finish within {timeout.TotalSeconds:F0} s; stderr: {Stderr}");
        }
        process.WaitForExit(); // drain the asynchronous readers
        return process.ExitCode;
    }

    public void Dispose()
    {
        if (!process.HasExited) process.Kill(entireProcessTree: true);
        process.Dispose();
        lines.Dispose();
    }

    /// <summary>The <c>dotnet</c> host running this test (its runtime folder is <c>root/shared/Microsoft.NETCore.App/version/</c>).</summary>
    private static string DotnetHost()
    {
        string exe = OperatingSystem.IsWindows() ? "dotnet.exe" : "dotnet";
        string root = Path.GetFullPath(Path.Combine(RuntimeEnvironment.GetRuntimeDirectory(), "..", "..", ".."));
        string candidate = Path.Combine(root, exe);
        if (File.Exists(candidate)) return candidate;
        string? fromCli = Environment.GetEnvironmentVariable("DOTNET_HOST_PATH");
        return !string.IsNullOrEmpty(fromCli) && File.Exists(fromCli) ? fromCli : exe;
    }
}
