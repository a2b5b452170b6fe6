using System.Diagnostics;
using Microsoft.ML.Orpo.Tests.Infrastructure;
using Microsoft.ML.Orpo.Tests.Training;
using Microsoft.ML.Orpo.Training;

namespace Microsoft.ML.Orpo.Tests.Reliability;

/// <summary>
/// A checkpoint that cannot be written fails training with a clear message and leaves the previous checkpoint intact
/// (resuming from it ends bit-identical to an uninterrupted run).
/// </summary>
/// <remarks>
/// Tests here run as root, and root ignores permission bits, so <c>chmod a-w</c> cannot make a folder read-only.
/// Two faults root cannot bypass are used instead: the ext4/xfs <b>immutable</b> attribute (<c>chattr +i</c>: no entry
/// can be created in the folder, whoever asks) for "read-only", and a <b>tmpfs mounted with a size smaller than two
/// checkpoints</b> for "disk full" (needs CAP_SYS_ADMIN). Where the file system or the container does not allow them,
/// the test is reported inconclusive, naming why.
/// </remarks>
[TestClass]
public sealed class CheckpointFaultTests
{
    private static TrainingSettings Settings(string directory) => TrainingFixtures.Plain(batchSize: 2, epochs: 1) with
    {
        Shuffle = true, GroupByLength = true, Seed = 11, CheckpointDirectory = directory, CheckpointInterval = 2, CheckpointsToKeep = 3,
    };

    [TestMethod]
    public void ReadOnlyCheckpointDirectoryFailsClearlyAndKeepsThePreviousCheckpoint()
    {
        string directory = TestAssets.NewTempDirectory("orpo-readonly");
        if (Run("chattr", "+i", directory) != 0)
            Assert.Inconclusive($"chattr +i is not supported on the file system of {directory}; root ignores chmod, so no read-only folder can be made.");
        Run("chattr", "-i", directory);
        try
        {
            // The immutable flag goes on after checkpoint-000002 is complete, so the save at step 4 is refused.
            FailAfterFirstCheckpoint(directory, "read-only", step => { if (step == 2) Run("chattr", "+i", directory); });
        }
        finally
        {
            Run("chattr", "-i", directory);
        }
        AssertPreviousCheckpointResumesBitIdentical(directory);
        Directory.Delete(directory, recursive: true);
    }

    [TestMethod]
    public void FullDiskFailsClearlyAndKeepsThePreviousCheckpoint()
    {
        string directory = TestAssets.NewTempDirectory("orpo-diskfull");
        // stories260K's checkpoint (weights + two AdamW moments) is about 3.1 MB: 5 MB holds one, not two.
        if (Run("mount", "-t", "tmpfs", "-o", "size=5m", "orpo-test-tmpfs", directory) != 0)
            Assert.Inconclusive("mounting a small tmpfs needs CAP_SYS_ADMIN, which this environment does not grant.");
        try
        {
            FailAfterFirstCheckpoint(directory, "disk full", _ => { });
            // Copy what is left to a normal folder before unmounting, then resume from it.
            string copy = TestAssets.NewTempDirectory("orpo-diskfull-copy");
            foreach (string folder in Directory.GetDirectories(directory))
            {
                string target = Path.Combine(copy, Path.GetFileName(folder));
                Directory.CreateDirectory(target);
                foreach (string file in Directory.GetFiles(folder)) File.Copy(file, Path.Combine(target, Path.GetFileName(file)));
            }
            Run("umount", directory);
            AssertPreviousCheckpointResumesBitIdentical(copy);
            Directory.Delete(copy, recursive: true);
        }
        finally
        {
            Run("umount", directory);
        }
        Directory.Delete(directory, recursive: true);
    }

    private static void FailAfterFirstCheckpoint(string directory, string fault, Action<int> afterStep)
    {
        using var model = TrainingFixtures.LoadModel();
        var pairs = TrainingFixtures.TrainPairs(model, 12);
        var callbacks = new TrainingCallbacks { AfterStep = afterStep };
        var e = Assert.ThrowsExactly<InvalidOperationException>(() => new OrpoTrainer(model, Settings(directory), callbacks).Train(pairs));
        Console.WriteLine($"{fault}: {e.Message}");
        StringAssert.Contains(e.Message, "Could not write the checkpoint for step 4");
        StringAssert.Contains(e.Message, directory);
        StringAssert.Contains(e.Message, "Earlier checkpoints are intact");
        Assert.IsTrue(e.InnerException is IOException or UnauthorizedAccessException, $"the cause is kept: {e.InnerException}");
        CollectionAssert.AreEqual(new[] { "checkpoint-000002" }, Directory.GetDirectories(directory).Select(Path.GetFileName).ToArray(),
            "only the complete earlier checkpoint may remain (no partial or temporary folder)");
    }

    private static void AssertPreviousCheckpointResumesBitIdentical(string directory)
    {
        Dictionary<string, float[]> expected;
        using (var model = TrainingFixtures.LoadModel())
        {
            new OrpoTrainer(model, Settings(directory) with { CheckpointDirectory = null }).Train(TrainingFixtures.TrainPairs(model, 12));
            expected = TrainingFixtures.Snapshot(model);
        }
        var log = new List<string>();
        using (var model = TrainingFixtures.LoadModel())
        {
            new OrpoTrainer(model, Settings(directory), new TrainingCallbacks { Log = log.Add }).Train(TrainingFixtures.TrainPairs(model, 12));
            Assert.IsTrue(TrainingFixtures.BitIdentical(expected, TrainingFixtures.Snapshot(model)), "resuming from the kept checkpoint must end bit-identical");
        }
        Assert.IsTrue(log.Any(l => l.StartsWith("Resumed from checkpoint at step 2 ", StringComparison.Ordinal)), string.Join("\n", log));
    }

    private static int Run(string tool, params string[] args)
    {
        try
        {
            var psi = new ProcessStartInfo(tool) { RedirectStandardError = true, RedirectStandardOutput = true, UseShellExecute = false };
            foreach (string a in args) psi.ArgumentList.Add(a);
            using var p = Process.Start(psi)!;
            p.WaitForExit(30_000);
            return p.HasExited ? p.ExitCode : -1;
        }
        catch (System.ComponentModel.Win32Exception)
        {
            return -1; // the tool is not installed
        }
    }
}
