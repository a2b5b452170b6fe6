namespace Microsoft.ML.Orpo.Tests.Infrastructure;

/// <summary>
/// How a test chooses a CPU path: it never assumes that an instruction set means a kernel (the dispatcher also weighs
/// the vendor); it forces the kernel inside a scope where the CPU can run it, or asks the dispatcher what it decided.
/// Both scopes hold whatever the process default says (<c>ORPO_KERNELS=reference</c> in CI's reference leg).
/// </summary>
internal static class KernelScopes
{
    /// <summary>
    /// Until disposed, this thread's products use <see cref="PackedGemm"/> wherever it applies (with the kernels of
    /// <see cref="KernelMode.Auto"/> beside it); the test is reported not applicable where the CPU (or
    /// <c>DOTNET_EnableAVX512=0</c>) cannot run it.
    /// </summary>
    public static IDisposable ForcePackedGemm()
    {
        if (!PackedGemm.IsSupported) Assert.Inconclusive("This CPU has no AVX-512F (or DOTNET_EnableAVX512=0): PackedGemm cannot run here.");
        var current = KernelPolicy.Current;
        return KernelPolicy.Use(current with { Mode = KernelMode.Auto, Disabled = current.Disabled & ~CpuKernels.MatrixProduct, ForcePackedGemm = true });
    }

    /// <summary>
    /// Until disposed, the default policy: every kernel where it applies, the packed GEMM where the dispatcher prefers
    /// it (for tests of a kernel or of the dispatcher's decision).
    /// </summary>
    public static IDisposable DefaultPolicy() => KernelPolicy.Use(new KernelPolicy());
}
