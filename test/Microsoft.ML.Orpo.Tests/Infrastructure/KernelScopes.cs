namespace Microsoft.ML.Orpo.Tests.Infrastructure;

/// <summary>
/// How a test chooses a CPU path: it never assumes that an instruction set means a kernel (the dispatcher also weighs
/// the vendor); it forces the kernel inside a scope where the CPU can run it, or asks the dispatcher what it decided.
/// </summary>
internal static class KernelScopes
{
    /// <summary>
    /// Until disposed, every kernel is on (whatever <c>ORPO_KERNELS</c> says for the CI leg) and this thread's products
    /// use <see cref="PackedGemm"/> wherever it applies; the test is reported not applicable where the CPU (or
    /// <c>DOTNET_EnableAVX512=0</c>) cannot run it.
    /// </summary>
    public static IDisposable ForcePackedGemm()
    {
        if (!PackedGemm.IsSupported) Assert.Inconclusive("This CPU has no AVX-512F (or DOTNET_EnableAVX512=0): PackedGemm cannot run here.");
        return KernelPolicy.Use(new KernelPolicy { ForcePackedGemm = true });
    }

    /// <summary>Until disposed, the dispatcher decides as it does by default (every kernel allowed, the vendor preference for the GEMM).</summary>
    public static IDisposable Auto() => KernelPolicy.Use(new KernelPolicy());
}
