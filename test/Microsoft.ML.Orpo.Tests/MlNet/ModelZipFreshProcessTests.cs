using System.Diagnostics;
using System.Runtime.InteropServices;
using static Microsoft.ML.Orpo.Tests.MlNet.ModelZipTestSupport;

namespace Microsoft.ML.Orpo.Tests.MlNet;

/// <summary>
/// Loads a saved model in a separate <c>dotnet</c> process (Microsoft.ML.Orpo.FreshLoad) that has run no Orpo code
/// before <c>Model.Load</c>. It runs with this test assembly's deps.json and runtimeconfig.json so that the test-only
/// <see cref="PayloadEchoTransformer"/> resolves like a library type would in a real application.
/// </summary>
[TestClass]
public sealed class ModelZipFreshProcessTests
{
    [TestMethod]
    public void FreshProcess_WithRegisterOrpo_LoadsAndTransforms()
    {
        var ml = new MLContext(seed: 1);
        var model = new PayloadEchoTransformer(ml, "Prompt", "Response", Prefix, Blob);
        var chain = new Data.TransformerChain<ITransformer>(ml.Transforms.CopyColumns("Prompt", "Question").Fit(
            ml.Data.LoadFromEnumerable(new[] { new { Question = "" } })), model);
        string path = Path.Combine(Infrastructure.TestAssets.NewTempDirectory("modelzip"), "chain.zip");
        ml.Model.Save(chain, ml.Data.LoadFromEnumerable(new[] { new { Question = "" } }).Schema, path);

        (int code, string stdout, string stderr) = RunFresh(path, "register", "Question", "Response", Prompts);
        Assert.AreEqual(0, code, stderr);
        string[] lines = stdout.Split('\n', StringSplitOptions.None).Select(l => l.TrimEnd('\r')).ToArray();
        Assert.AreEqual("TransformerChain`1", lines[0], stdout);
        CollectionAssert.AreEqual(ExpectedResponses(), lines.Skip(1).Take(Prompts.Length).ToArray(), stdout);
    }

    [TestMethod]
    public void FreshProcess_WithoutRegistration_FailsNamingRegisterOrpo()
    {
        string path = SaveEcho(new MLContext(seed: 1));
        (int code, string stdout, string stderr) = RunFresh(path, "plain", "Prompt", "Response", Prompts);
        Assert.AreEqual(3, code, stdout + stderr);
        StringAssert.Contains(stderr, "RegisterOrpo()");
        StringAssert.Contains(stderr, "InvalidOperationException");
    }

    /// <summary>
    /// Loads <paramref name="zip"/> in a fresh process with RegisterOrpo, transforms <paramref name="texts"/> from the
    /// Prompt column, and asserts that it loaded an <see cref="OrpoTransformer"/> that responds <paramref name="expected"/>.
    /// </summary>
    internal static void AssertFreshOrpoResponses(string zip, IReadOnlyList<string> texts, IReadOnlyList<string> expected)
    {
        var (code, stdout, stderr) = RunFresh(zip, "register", "Prompt", "Response", texts);
        Assert.AreEqual(0, code, stderr);
        var lines = stdout.Split('\n').Select(l => l.TrimEnd('\r')).ToArray();
        Assert.AreEqual(nameof(OrpoTransformer), lines[0]);
        CollectionAssert.AreEqual(expected.ToArray(), lines.Skip(1).Take(texts.Count).ToArray(), stdout);
    }

    internal static (int Code, string Stdout, string Stderr) RunFresh(string zip, string mode, string input, string output, IEnumerable<string> texts)
    {
        string dir = AppContext.BaseDirectory;
        string self = Path.GetFileNameWithoutExtension(typeof(ModelZipFreshProcessTests).Assembly.Location);
        var psi = new ProcessStartInfo(DotnetHost())
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            StandardOutputEncoding = System.Text.Encoding.UTF8,
            WorkingDirectory = dir,
        };
        foreach (string arg in new[] { "exec", "--runtimeconfig", Path.Combine(dir, self + ".runtimeconfig.json"),
                     "--depsfile", Path.Combine(dir, self + ".deps.json"), Path.Combine(dir, "Microsoft.ML.Orpo.FreshLoad.dll"),
                     zip, mode, input, output }.Concat(texts))
            psi.ArgumentList.Add(arg);
        psi.Environment["DOTNET_CLI_UI_LANGUAGE"] = "en";

        using var process = Process.Start(psi) ?? throw new InvalidOperationException("Could not start dotnet.");
        Task<string> stdout = process.StandardOutput.ReadToEndAsync();
        Task<string> stderr = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(TimeSpan.FromMinutes(2)))
        {
            process.Kill(entireProcessTree: true);
            Assert.Fail("The fresh-process loader did not finish within 2 minutes.");
        }
        return (process.ExitCode, stdout.Result, stderr.Result);
    }

    /// <summary>The <c>dotnet</c> host running this test (its runtime folder is <c>root/shared/Microsoft.NETCore.App/version/</c>).</summary>
    private static string DotnetHost()
    {
        string exe = OperatingSystem.IsWindows() ? "dotnet.exe" : "dotnet";
        string root = Path.GetFullPath(Path.Combine(RuntimeEnvironment.GetRuntimeDirectory(), "..", "..", ".."));
        string candidate = Path.Combine(root, exe);
        if (File.Exists(candidate))
            return candidate;
        string? fromCli = Environment.GetEnvironmentVariable("DOTNET_HOST_PATH");
        return !string.IsNullOrEmpty(fromCli) && File.Exists(fromCli) ? fromCli : exe;
    }
}
