using System.Globalization;
using Microsoft.ML.Orpo.Tests.Infrastructure;

namespace Microsoft.ML.Orpo.Tests.Reliability;

/// <summary>
/// A training process (Microsoft.ML.Orpo.TrainChild, checkpointing after every step) is SIGKILLed at random moments —
/// right after a random step is reported (so often while the next checkpoint is being written) or after a random
/// delay (possibly during start-up or loading) — and restarted, several times; the final weights must be bit-identical
/// to those of an uninterrupted run. <c>ORPO_KILL_SEED</c> replays a run.
/// </summary>
[TestClass]
public sealed class KillAndResumeTests
{
    private const string Child = "Microsoft.ML.Orpo.TrainChild.dll";
    private const int TotalSteps = 16;
    private static readonly TimeSpan ChildTimeout = TimeSpan.FromMinutes(3);

    [TestMethod]
    [Timeout(600_000, CooperativeCancellation = true)]
    public void SigkilledTrainingResumesToBitIdenticalWeights() => KillAndResume(lora: false, targetKills: 5);

    /// <summary>
    /// The same with a LoRA adapter (dropout 0.05): the checkpoints hold only the adapters and their AdamW state, and the
    /// dropout masks must be redrawn identically after a resume. One kill, right after a random step from the second
    /// on (so a checkpoint exists to resume from), keeps it to three child runs.
    /// </summary>
    [TestMethod]
    [Timeout(300_000, CooperativeCancellation = true)]
    public void SigkilledLoraTrainingWithDropoutResumesToBitIdenticalAdapterWeights() => KillAndResume(lora: true, targetKills: 1);

    private static void KillAndResume(bool lora, int targetKills)
    {
        int seed = int.TryParse(Environment.GetEnvironmentVariable("ORPO_KILL_SEED"), NumberStyles.None, CultureInfo.InvariantCulture, out int s)
            ? s : Random.Shared.Next(1, 1_000_000);
        var random = new Random(seed);
        string root = TestAssets.NewTempDirectory("orpo-kill");

        // A small random-weight model keeps each child run to a few seconds; the mechanics are the same as stories260K's.
        string model = ReliabilityFixtures.TinyModelFolder(vocabulary: 512, hidden: 32, layers: 2);
        var clock = System.Diagnostics.Stopwatch.StartNew();
        string[] mode = lora ? ["lora"] : [];
        string expected = RunToEnd(model, Path.Combine(root, "reference-checkpoints"), Path.Combine(root, "reference-out"), mode, out _);
        var uninterrupted = clock.Elapsed;

        string checkpoints = Path.Combine(root, "checkpoints");
        int kills = 0, restarts = 0, lastStepSeen = 0, completed = 0;
        var resumedFrom = new List<int>();
        var log = new List<string>();
        while (kills < targetKills && restarts < 3 * targetKills)
        {
            restarts++;
            using var child = new ChildProcess(Child, [model, checkpoints, Path.Combine(root, "out-" + restarts), .. mode]);
            bool byStep = lora || random.Next(3) != 0;
            int killAfterStep = lora ? 2 + random.Next(TotalSteps - 3) : Math.Min(TotalSteps - 1, lastStepSeen + 1 + random.Next(4));
            var delay = uninterrupted * (0.15 + 0.8 * random.NextDouble()); // start-up, loading or training
            var started = DateTime.UtcNow;
            bool killed = false;
            while (true)
            {
                var wait = byStep ? ChildTimeout : delay - (DateTime.UtcNow - started);
                string? line = wait > TimeSpan.Zero ? child.NextLine(wait) : null;
                if (line is null)
                {
                    if (byStep) break; // the output ended: the child finished or failed
                    if (child.Output.Any(l => l.StartsWith("done ", StringComparison.Ordinal))) break;
                    child.Kill();
                    killed = true;
                    log.Add($"run {restarts}: killed after {delay.TotalMilliseconds:F0} ms (last step seen {lastStepSeen})");
                    break;
                }
                if (line.StartsWith("resumed ", StringComparison.Ordinal)) resumedFrom.Add(int.Parse(line[8..], CultureInfo.InvariantCulture));
                if (line.StartsWith("step ", StringComparison.Ordinal))
                {
                    lastStepSeen = int.Parse(line[5..], CultureInfo.InvariantCulture);
                    if (byStep && lastStepSeen >= killAfterStep)
                    {
                        child.Kill();
                        killed = true;
                        log.Add($"run {restarts}: killed right after step {lastStepSeen} was reported");
                        break;
                    }
                }
            }
            if (killed)
            {
                kills++;
                continue;
            }
            // It finished before the kill came: its weights must already match; then start over to kill more.
            int code = child.WaitForExit(ChildTimeout);
            Assert.AreEqual(0, code, $"run {restarts} failed: {child.Stderr}");
            string done = child.Output.Single(l => l.StartsWith("done ", StringComparison.Ordinal))[5..];
            Assert.AreEqual(expected, done, $"run {restarts} completed after {kills} kills with other weights (seed {seed})");
            completed++;
            log.Add($"run {restarts}: completed (bit-identical), starting over");
            Directory.Delete(checkpoints, recursive: true);
            lastStepSeen = 0;
        }

        if (lora)
        {
            // What was resumed from: the adapters' A and B and their moments, nothing of the frozen base.
            string newest = Directory.GetDirectories(checkpoints, "checkpoint-*").Order(StringComparer.Ordinal).Last();
            var header = Microsoft.ML.Orpo.ModelFiles.SafeTensorsReader.ReadHeader(Path.Combine(newest, "model.safetensors"));
            Assert.IsTrue(header.Entries.All(e => e.Name.EndsWith(".lora_A.weight", StringComparison.Ordinal) || e.Name.EndsWith(".lora_B.weight", StringComparison.Ordinal)),
                string.Join(", ", header.Entries.Select(e => e.Name)));
            Assert.HasCount(2 * 7 * 2, header.Entries);
        }
        string actual = RunToEnd(model, checkpoints, Path.Combine(root, "out-final"), mode, out var finalOutput);
        resumedFrom.AddRange(finalOutput.Where(l => l.StartsWith("resumed ", StringComparison.Ordinal)).Select(l => int.Parse(l[8..], CultureInfo.InvariantCulture)));
        Console.WriteLine($"kill-and-resume{(lora ? " (LoRA)" : "")} (seed {seed}): {kills} SIGKILLs survived over {restarts + 1} runs ({completed + 1} completed bit-identical); resumed from steps [{string.Join(", ", resumedFrom)}]; " +
                          $"uninterrupted run {uninterrupted.TotalSeconds:F1} s");
        foreach (string line in log) Console.WriteLine("  " + line);
        Console.WriteLine($"  final weights SHA-256 {actual[..16]}..., uninterrupted {expected[..16]}...");

        Assert.IsGreaterThanOrEqualTo(Math.Min(3, targetKills), kills, "the child must have been killed several times");
        Assert.IsNotEmpty(resumedFrom, "at least one restart must resume from a checkpoint");
        Assert.AreEqual(expected, actual, $"weights after {kills} kills must be bit-identical to an uninterrupted run (seed {seed})");
        Assert.IsEmpty(Directory.GetDirectories(checkpoints, ".tmp-*"), "no temporary checkpoint folder may be left once a run completes");
        Directory.Delete(root, recursive: true);
        Directory.Delete(model, recursive: true);
    }

    private static string RunToEnd(string model, string checkpoints, string output, string[] mode, out IReadOnlyList<string> lines)
    {
        using var child = new ChildProcess(Child, [model, checkpoints, output, .. mode]);
        int code = child.WaitForExit(ChildTimeout);
        lines = child.Output;
        Assert.AreEqual(0, code, child.Stderr);
        string done = lines.Single(l => l.StartsWith("done ", StringComparison.Ordinal));
        Assert.AreEqual(TotalSteps, lines.Count(l => l.StartsWith("step ", StringComparison.Ordinal)) + ResumedStep(lines), string.Join("\n", lines));
        return done[5..];
    }

    private static int ResumedStep(IReadOnlyList<string> lines) =>
        lines.Where(l => l.StartsWith("resumed ", StringComparison.Ordinal)).Select(l => int.Parse(l[8..], CultureInfo.InvariantCulture)).DefaultIfEmpty(0).Last();
}
