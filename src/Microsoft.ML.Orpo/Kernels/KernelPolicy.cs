namespace Microsoft.ML.Orpo.Kernels;

/// <summary>Whether the operations may use the hand-written CPU kernels at all.</summary>
internal enum KernelMode
{
    /// <summary>Each operation uses its CPU kernel where the kernel applies and pays off (see <see cref="KernelThresholds"/>).</summary>
    Auto,
    /// <summary>
    /// Every operation runs its reference implementation (device-agnostic libtorch calls): on a CPU, the code path a
    /// GPU user gets. CI runs the whole suite this way.
    /// </summary>
    ReferenceOnly,
}

/// <summary>The CPU kernels that can be switched off one by one (<see cref="KernelPolicy.Without"/>).</summary>
[Flags]
internal enum CpuKernels
{
    None = 0,
    /// <summary>The packed AVX-512 GEMM: linear layers with many rows, their backward products, the LM head's chunks and blocked attention.</summary>
    MatrixProduct = 1,
    /// <summary>The streamed product of a few rows against a large weight (decoding's projections and LM head).</summary>
    FewRowsProduct = 2,
    /// <summary>One-pass RMSNorm, forward and backward.</summary>
    RmsNorm = 4,
    /// <summary>Causal attention with rotary embedding fused (small heads), and the blocked kernel for wider heads.</summary>
    Attention = 8,
    /// <summary>The SwiGLU tail that keeps only gate and up for the backward pass.</summary>
    SwiGlu = 16,
    /// <summary>Row-wise log-sum-exp and the softmax gradient of the fused LM head.</summary>
    Softmax = 32,
    /// <summary>A frozen projection with its LoRA adapter as one node (no input-sized temporaries), and the hashed dropout mask.</summary>
    Lora = 64,
    All = MatrixProduct | FewRowsProduct | RmsNorm | Attention | SwiGlu | Softmax | Lora,
}

/// <summary>
/// The one switch over the CPU kernels: <see cref="KernelMode.Auto"/> or <see cref="KernelMode.ReferenceOnly"/>, a
/// set of kernels switched off, and whether the packed GEMM follows the CPU vendor preference
/// (<see cref="PackedGemm.Preferred"/>) or is forced on. The process default comes from the environment
/// variable <c>ORPO_KERNELS</c> (<c>auto</c>, <c>reference</c>, or a comma list of <see cref="CpuKernels"/> names to
/// switch off, e.g. <c>-Attention,-SwiGlu</c>); tests and benchmarks override it for a scope, which covers the calling
/// thread and the work it starts (an <see cref="AsyncLocal{T}"/>). The operations read it at every call, so a
/// backward pass follows the policy in force when it runs.
/// </summary>
internal sealed record KernelPolicy
{
    public const string EnvironmentVariable = "ORPO_KERNELS";

    public KernelMode Mode { get; init; }

    /// <summary>Kernels switched off in <see cref="KernelMode.Auto"/>.</summary>
    public CpuKernels Disabled { get; init; }

    /// <summary>
    /// Use the packed GEMM wherever the CPU can run it, whatever <see cref="Mode"/>, <see cref="Disabled"/> and the
    /// vendor preference (its tests run on every AVX-512 CPU this way, in every CI leg).
    /// </summary>
    public bool ForcePackedGemm { get; init; }

    private static readonly AsyncLocal<KernelPolicy?> scoped = new();
    private static KernelPolicy? processDefault;

    /// <summary>
    /// The policy in force here: the innermost scope's, else the process default from <c>ORPO_KERNELS</c> (read at
    /// first use; a value it cannot parse fails every operation with the message saying why, not silently Auto).
    /// </summary>
    public static KernelPolicy Current => scoped.Value ?? (processDefault ??= Parse(Environment.GetEnvironmentVariable(EnvironmentVariable)));

    /// <summary>Whether <paramref name="kernel"/> may run under the current policy.</summary>
    public static bool Allows(CpuKernels kernel)
    {
        var policy = Current;
        return policy.Mode == KernelMode.Auto && (policy.Disabled & kernel) == 0;
    }

    /// <summary>Until disposed, <paramref name="policy"/> is in force for this thread and the work it starts.</summary>
    public static IDisposable Use(KernelPolicy policy)
    {
        ArgumentNullException.ThrowIfNull(policy);
        var outer = scoped.Value;
        scoped.Value = policy;
        return new KernelScope(() => scoped.Value = outer);
    }

    /// <summary>Until disposed, every operation runs its reference implementation.</summary>
    public static IDisposable ReferenceOnly() => Use(Current with { Mode = KernelMode.ReferenceOnly, ForcePackedGemm = false });

    /// <summary>Until disposed, the current policy without <paramref name="kernels"/> (a forced GEMM included).</summary>
    public static IDisposable Without(CpuKernels kernels) => Use(Current with
    {
        Disabled = Current.Disabled | kernels,
        ForcePackedGemm = Current.ForcePackedGemm && (kernels & CpuKernels.MatrixProduct) == 0,
    });

    /// <summary>
    /// Until disposed, the packed GEMM runs wherever it applies, whatever the mode, the switched-off set or the vendor
    /// preference (the other kernels as the current policy says); throws where the CPU cannot run it. Its tests pin it so.
    /// </summary>
    public static IDisposable ForcingPackedGemm()
    {
        if (!PackedGemm.IsSupported)
            throw new PlatformNotSupportedException("PackedGemm needs AVX-512F, which this CPU (or DOTNET_EnableAVX512=0) does not offer.");
        return Use(Current with { ForcePackedGemm = true });
    }

    /// <summary>The policy an <c>ORPO_KERNELS</c> value names; null or empty is <see cref="KernelMode.Auto"/>.</summary>
    public static KernelPolicy Parse(string? value)
    {
        var policy = new KernelPolicy();
        if (string.IsNullOrWhiteSpace(value)) return policy;
        foreach (string part in value.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            if (part.Equals("auto", StringComparison.OrdinalIgnoreCase)) continue;
            if (part.Equals("reference", StringComparison.OrdinalIgnoreCase) || part.Equals(nameof(KernelMode.ReferenceOnly), StringComparison.OrdinalIgnoreCase))
                policy = policy with { Mode = KernelMode.ReferenceOnly };
            else if (part.StartsWith('-') && Enum.TryParse<CpuKernels>(part[1..], ignoreCase: true, out var off))
                policy = policy with { Disabled = policy.Disabled | off };
            else
                throw new ArgumentException(
                    $"{EnvironmentVariable}='{value}': '{part}' is not 'auto', 'reference' or '-' followed by one of {string.Join(", ", Enum.GetNames<CpuKernels>())}.");
        }
        return policy;
    }
}

/// <summary>Runs an action once, at the first Dispose: the end of a policy or simulation scope.</summary>
internal sealed class KernelScope(Action end) : IDisposable
{
    private bool done;

    public void Dispose()
    {
        if (done) return;
        done = true;
        end();
    }
}
