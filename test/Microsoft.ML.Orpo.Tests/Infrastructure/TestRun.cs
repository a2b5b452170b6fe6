namespace Microsoft.ML.Orpo.Tests.Infrastructure;

/// <summary>What the whole test run sets up first and tears down last (MSTest allows one of each per assembly).</summary>
[TestClass]
public static class TestRun
{
    [AssemblyInitialize]
    public static void Start(TestContext _)
    {
        TempFolders.RemoveAbandoned();
        SimulatedCpu.Start();
    }

    [AssemblyCleanup]
    public static void Stop()
    {
        SimulatedCpu.Stop();
        TempFolders.RemoveOwn();
    }
}
