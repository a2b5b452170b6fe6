using System.Reflection;
using Microsoft.ML.Runtime;

namespace Microsoft.ML.Orpo.MlNet;

/// <summary>
/// Which Microsoft.ML this process runs on, and whether the model-zip bridge was verified on it. The bridge rests on
/// non-public members; binding them by shape is necessary but not sufficient (a member can keep its signature and
/// change its meaning), so a model zip is written or read only on a release whose round trip was tested.
/// </summary>
internal static class MlNetVersion
{
    /// <summary>Releases whose model-zip round trip (save, fresh-process load, PredictionEngine) was verified.</summary>
    internal static readonly IReadOnlyList<string> Verified = ["5.0.1", "6.0.0"];

    private static readonly Lazy<string> s_loaded = new(() => Read(typeof(ComponentCatalog).Assembly));
    private static string? s_simulated;

    /// <summary>The Microsoft.ML release loaded in this process (its informational version without the commit).</summary>
    internal static string Loaded => Volatile.Read(ref s_simulated) ?? s_loaded.Value;

    /// <summary>Whether <see cref="Loaded"/> is a verified release.</summary>
    internal static bool IsVerified => Verified.Contains(Loaded);

    /// <summary>Throws a clear error unless the loaded Microsoft.ML is a verified release.</summary>
    /// <param name="action">What was attempted, for the message (e.g. "save a model zip").</param>
    internal static void EnsureVerified(string action)
    {
        string loaded = Loaded;
        if (Verified.Contains(loaded)) return;
        throw new InvalidOperationException(
            $"Microsoft.ML.Orpo cannot {action}: model zips are written and read through members of Microsoft.ML that are not public, " +
            $"verified on Microsoft.ML {string.Join(" and ", Verified)}, but this process loaded Microsoft.ML {loaded}. " +
            $"Reference Microsoft.ML {Verified[^1]} (or {string.Join(", ", Verified.Take(Verified.Count - 1))}), or a Microsoft.ML.Orpo built and tested " +
            "against the newer release. Generation, training and Hugging Face export do not need the model zip and work on any version.");
    }

    /// <summary>Until disposed, the process reports <paramref name="version"/> as its Microsoft.ML release (tests).</summary>
    internal static IDisposable Simulate(string version)
    {
        ArgumentException.ThrowIfNullOrEmpty(version);
        if (Interlocked.CompareExchange(ref s_simulated, version, null) is not null)
            throw new InvalidOperationException("A Microsoft.ML version is already being simulated.");
        return new EndSimulation();
    }

    private sealed class EndSimulation : IDisposable
    {
        private int done;

        public void Dispose()
        {
            if (Interlocked.Exchange(ref done, 1) == 0) Volatile.Write(ref s_simulated, null);
        }
    }

    private static string Read(Assembly assembly) =>
        assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion.Split('+')[0] ?? "unknown";
}
