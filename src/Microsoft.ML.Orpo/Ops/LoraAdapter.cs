using TorchSharp.Modules;
using Microsoft.ML.Orpo.Kernels;
using Microsoft.ML.Orpo.Ops.Reference;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Ops;

/// <summary>
/// The low-rank update of one frozen projection (PEFT's LoRA layer): <c>Scale * B (A dropout(x))</c>, added to the
/// projection's output by <see cref="Op.Linear(Tensor, Linear, ScalarType?, LoraAdapter?)"/>. A is (r, in), B is
/// (out, r), Scale is alpha / r. Dropout is drawn by <see cref="LoraDropout"/>, which is off outside training steps.
/// </summary>
internal sealed class LoraAdapter : IDisposable
{
    /// <param name="a">(r, in), trained.</param>
    /// <param name="b">(out, r), trained.</param>
    /// <param name="scale">alpha / r.</param>
    /// <param name="dropout">Where the dropout masks come from and with what probability.</param>
    /// <param name="index">This adapter's place among the model's adapters: its masks' stream.</param>
    public LoraAdapter(Parameter a, Parameter b, double scale, LoraDropout dropout, int index)
    {
        if (a.dim() != 2 || b.dim() != 2 || a.shape[0] != b.shape[1])
            throw new ArgumentException($"LoRA A [{string.Join(", ", a.shape)}] and B [{string.Join(", ", b.shape)}] do not share a rank.");
        A = a;
        B = b;
        Scale = scale;
        Dropout = dropout;
        Index = index;
        Rank = (int)a.shape[0];
    }

    public Parameter A { get; }
    public Parameter B { get; }
    public double Scale { get; }
    public LoraDropout Dropout { get; }
    public int Index { get; }
    public int Rank { get; }

    /// <summary>
    /// (..., in) x -> (..., out) <c>Scale * B (A dropout(x))</c>, multiplied in <paramref name="matmulType"/> when given:
    /// the definition, in libtorch ops (<see cref="Op.Linear"/> runs the projection and its adapter as one CPU kernel
    /// where it can, <see cref="LoraLinear"/>).
    /// </summary>
    public Tensor Update(Tensor x, ScalarType? matmulType)
    {
        using var scope = NewDisposeScope();
        var input = Dropout.Apply(x, Index);
        var down = ReferenceLinear.Forward(input, A, null, matmulType);            // (..., r)
        return ReferenceLinear.Forward(down, B, null, matmulType).mul_(Scale).MoveToOuterDisposeScope(); // (..., out)
    }

    /// <summary>
    /// The dense update <c>Scale * B A</c> (out, in), for merging, in the adapters' type (float32, or float64 in
    /// exactness tests: a float32 product would round a float64 merge).
    /// </summary>
    public Tensor Dense()
    {
        using var noGrad = no_grad();
        return B.matmul(A).mul_(Scale);
    }

    public void Dispose()
    {
        A.Dispose();
        B.Dispose();
    }
}
