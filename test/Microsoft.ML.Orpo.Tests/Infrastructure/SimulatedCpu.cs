
namespace Microsoft.ML.Orpo.Tests.Infrastructure;

/// <summary>
/// <c>ORPO_TEST_CPU_VENDOR=GenuineIntel</c> runs the whole suite as the dispatcher would decide on an Intel CPU with
/// this machine's instruction sets (.ci/run's Intel leg), so that a test assuming "AVX-512 means our kernel" fails
/// on every machine, not only on the CPUs CI happens to get.
/// </summary>
internal static class SimulatedCpu
{
    private static IDisposable? simulation;

    public static void Start()
    {
        string? vendor = Environment.GetEnvironmentVariable("ORPO_TEST_CPU_VENDOR");
        if (!string.IsNullOrEmpty(vendor)) simulation = PackedGemm.SimulateVendor(vendor);
    }

    public static void Stop() => simulation?.Dispose();
}
