namespace Microsoft.ML.Orpo.Kernels;

/// <summary>
/// Every size at which a CPU kernel starts or stops paying for itself, in one place. Each was measured against
/// libtorch on the benchmark shapes (benchmarks/README.md, "Measurements behind the code: KernelThresholds"); what a
/// kernel cannot handle at all (types, devices, layouts, buffer limits) stays with the kernel's own <c>Supports</c>.
/// </summary>
internal static class KernelThresholds
{
    /// <summary>
    /// Linear layers with smaller weights stay with libtorch without a look at the input: their decoding is per-call
    /// overhead, and reading a TorchSharp shape costs about as much as a small product. 256 x 256 admits the key/value
    /// projections of grouped-query models (256 x 512 in a 512-wide model with 4 key/value heads).
    /// </summary>
    public const long PackedLinearMinWeightElements = 256 * 256;

    /// <summary>Inputs of at most this many rows are decoding's: the streamed few-rows product, not the packed GEMM.</summary>
    public const int FewRowsMaxRows = 16;

    /// <summary>
    /// Weights below this stay in cache from one decoding step to the next, where libtorch's GEMM is as fast; from
    /// 512 x 512 up they stream from memory, which the few-rows product reads once per step.
    /// </summary>
    public const long FewRowsMinWeightElements = 512 * 512;

    /// <summary>Below this many multiply-adds, packing and the call cost more than libtorch's small-matrix paths.</summary>
    public const long PackedGemmMinMultiplyAdds = 1L << 22;

    /// <summary>
    /// Heads up to this width use the fused small-head attention kernel; wider ones the blocked kernel, whose
    /// per-head matrix products become efficient there.
    /// </summary>
    public const int SmallHeadMaxDim = 16;
}
