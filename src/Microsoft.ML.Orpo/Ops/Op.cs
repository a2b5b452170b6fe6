namespace Microsoft.ML.Orpo.Ops;

/// <summary>
/// The operations the model is written in: linear (with mixed precision), RMSNorm, rotary embedding, causal attention
/// in its three layouts, SwiGLU, the LM head and token log-probabilities, and the fused ORPO head. Each has a plain
/// reference implementation in device-agnostic libtorch calls (<c>Ops/Reference</c>: what a GPU runs, and the
/// definition) and, where one was measured to pay off, a CPU kernel with the same signature (<c>Kernels</c>). Each
/// operation makes its one choice between the two here, under <see cref="Kernels.KernelPolicy"/>; the kernel's own
/// <c>Supports</c> says whether it can take the inputs (float32, CPU, shapes), <see cref="Kernels.KernelThresholds"/>
/// whether it pays.
/// </summary>
internal static partial class Op
{
}
