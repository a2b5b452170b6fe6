using System.Reflection;
using TorchSharp;

namespace Microsoft.ML.Orpo.Native;

/// <summary>
/// Keeps code that leans on TorchSharp's internals (a native signature typed by hand, private fields reached by
/// reflection) to the TorchSharp versions it was verified on. Nothing checks such code against another version at
/// build time, and a mismatch is undefined behaviour, not an exception; so on any other version, or when the guard's
/// self-test fails, the feature is off for the process, the plain TorchSharp/libtorch path runs instead (same
/// results), and one line says why. The decision is made once per process at first use; tests can have every guard
/// decide afresh under a simulated version or a failing self-test (<see cref="SimulateTorchSharpVersion"/>,
/// <see cref="SimulateFailedSelfTests"/>).
/// </summary>
internal sealed class NativeAbiGuard
{
    /// <summary>The TorchSharp builds the guarded code was verified on, as their AssemblyInformationalVersion.</summary>
    public static readonly IReadOnlyList<string> VerifiedTorchSharpVersions = ["0.107.0"];

    public const string LogPrefix = "Microsoft.ML.Orpo: ";

    /// <summary>The TorchSharp this process loaded: its AssemblyInformationalVersion (assembly version if it has none).</summary>
    public static string TorchSharpVersion { get; } = ReadTorchSharpVersion();

    /// <summary>Where a guard that is off writes its one line (tests capture it).</summary>
    internal static Action<string> Log { get; set; } = line => Console.Error.WriteLine(line);

    private static Simulation? simulation;

    private readonly string feature, fallback;
    private readonly Func<bool, string?> selfTest;
    private readonly Lazy<string?> decision;

    /// <param name="feature">What is guarded, as the log line names it.</param>
    /// <param name="fallback">What runs instead when it is off.</param>
    /// <param name="selfTest">
    /// Run once on a verified version: null when the feature works, else what went wrong. Its argument asks it to
    /// treat what it reads back as wrong (<see cref="SimulateFailedSelfTests"/>).
    /// </param>
    public NativeAbiGuard(string feature, string fallback, Func<bool, string?> selfTest)
    {
        this.feature = feature;
        this.fallback = fallback;
        this.selfTest = selfTest;
        decision = new Lazy<string?>(() => DecideAndLog(TorchSharpVersion, misread: false));
    }

    /// <summary>Null while the feature is on; otherwise why it is off and what runs instead.</summary>
    public string? FallbackReason => Volatile.Read(ref simulation) is { } simulated ? simulated.Decide(this) : decision.Value;

    /// <summary>The guards that are off in this process, as their reasons (none: every feature is on).</summary>
    public static IEnumerable<string> FallbackReasons() =>
        new[] { HostTensors.FallbackReason, CustomBackward.FallbackReason }.OfType<string>();

    /// <summary>The decision for TorchSharp <paramref name="torchSharpVersion"/>; the self-test runs only on a verified one.</summary>
    internal string? Evaluate(string torchSharpVersion, bool misread = false)
    {
        if (!VerifiedTorchSharpVersions.Contains(torchSharpVersion))
            return $"{feature} is off: it was verified on TorchSharp {string.Join(", ", VerifiedTorchSharpVersions)} only, " +
                   $"and this process has TorchSharp {torchSharpVersion}; {fallback}.";
        string? failure;
        try
        {
            failure = selfTest(misread);
        }
        catch (Exception e)
        {
            failure = $"{e.GetType().Name}: {e.Message}";
        }
        return failure is null ? null : $"{feature} is off: its self-test failed on TorchSharp {torchSharpVersion} ({failure}); {fallback}.";
    }

    /// <summary>Until disposed, every guard decides afresh (once) as if TorchSharp were <paramref name="version"/>.</summary>
    internal static IDisposable SimulateTorchSharpVersion(string version) => Simulate(version, misread: false);

    /// <summary>Until disposed, every guard decides afresh (once) with its self-test reading back a wrong value.</summary>
    internal static IDisposable SimulateFailedSelfTests() => Simulate(TorchSharpVersion, misread: true);

    // One simulation at a time in the process: the guarded features are process-wide, so two would contradict.
    private static IDisposable Simulate(string version, bool misread)
    {
        var simulated = new Simulation(version, misread);
        if (Interlocked.CompareExchange(ref simulation, simulated, null) is not null)
            throw new InvalidOperationException("A native-ABI guard simulation is already active in this process.");
        return simulated;
    }

    private string? DecideAndLog(string version, bool misread)
    {
        string? reason = Evaluate(version, misread);
        if (reason is not null) Log(LogPrefix + reason);
        return reason;
    }

    private static string ReadTorchSharpVersion()
    {
        var assembly = typeof(torch).Assembly;
        return assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion
               ?? assembly.GetName().Version?.ToString() ?? "(unknown)";
    }

    private sealed class Simulation(string version, bool misread) : IDisposable
    {
        private readonly Dictionary<NativeAbiGuard, string?> decisions = new();

        public string? Decide(NativeAbiGuard guard)
        {
            lock (decisions)
            {
                if (!decisions.TryGetValue(guard, out string? reason))
                    decisions[guard] = reason = guard.DecideAndLog(version, misread);
                return reason;
            }
        }

        public void Dispose() => Interlocked.CompareExchange(ref simulation, null, this);
    }
}
