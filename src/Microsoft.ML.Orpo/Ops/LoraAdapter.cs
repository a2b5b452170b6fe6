using TorchSharp.Modules;
using Microsoft.ML.Orpo.Kernels;
using Microsoft.ML.Orpo.Ops.Reference;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Ops;

/// <summary>
/// The low-rank update of one frozen projection (PEFT's LoRA layer): <c>Scale * B (A dropout(x))</c>, added to the
/// projection's output by <see cref="Op.Linear(Tensor, Linear, ScalarType?, LoraAdapter?)"/>. A is (r, in), B is
/// (out, r), Scale is alpha / r. Dropout is drawn by <see cref="LoraDropout"/>, which is off outside training steps.
/// With DoRA (PEFT's <c>use_dora</c>) a magnitude vector m (out) rescales each output row by
/// <see cref="DoraFactor"/>, m / ||W + Scale B A||, the norm treated as a constant (<see cref="Op.Linear"/> applies it).
/// </summary>
internal sealed class LoraAdapter : IDisposable
{
    private Tensor? heldFactor;
    private readonly Tensor? baseSquaredNorms;

    /// <param name="a">(r, in), trained.</param>
    /// <param name="b">(out, r), trained.</param>
    /// <param name="scale">alpha / r.</param>
    /// <param name="dropout">Where the dropout masks come from and with what probability.</param>
    /// <param name="index">This adapter's place among the model's adapters: its masks' stream.</param>
    /// <param name="magnitude">DoRA's magnitude vector (out), trained; null for plain LoRA.</param>
    /// <param name="baseSquaredNorms">With a magnitude: ||W||^2 of each row of the frozen projection (out), in A's type (<see cref="SquaredRowNorms"/>); owned.</param>
    public LoraAdapter(Parameter a, Parameter b, double scale, LoraDropout dropout, int index, Parameter? magnitude = null, Tensor? baseSquaredNorms = null)
    {
        if (a.dim() != 2 || b.dim() != 2 || a.shape[0] != b.shape[1])
            throw new ArgumentException($"LoRA A [{string.Join(", ", a.shape)}] and B [{string.Join(", ", b.shape)}] do not share a rank.");
        if (magnitude is not null && (magnitude.dim() != 1 || magnitude.shape[0] != b.shape[0]))
            throw new ArgumentException($"DoRA magnitude [{string.Join(", ", magnitude.shape)}] does not match B [{string.Join(", ", b.shape)}]'s {b.shape[0]} output rows.");
        if ((magnitude is null) != (baseSquaredNorms is null) || (baseSquaredNorms is not null && !baseSquaredNorms.shape.SequenceEqual(magnitude!.shape)))
            throw new ArgumentException("A DoRA adapter needs its magnitude and its base's squared row norms, of one shape.");
        A = a;
        B = b;
        Magnitude = magnitude;
        this.baseSquaredNorms = baseSquaredNorms;
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

    /// <summary>DoRA's magnitude vector (out), or null: plain LoRA.</summary>
    public Parameter? Magnitude { get; }

    /// <summary>
    /// (..., in) x -> (..., out) <c>Scale * B (A dropout(x))</c>, multiplied in <paramref name="matmulType"/> when given:
    /// the definition, in libtorch ops (<see cref="Op.Linear"/> runs the projection and its adapter as one CPU kernel
    /// where it can, <see cref="LoraLinear"/>).
    /// </summary>
    public Tensor Update(Tensor x, ScalarType? matmulType)
    {
        using var input = Dropout.Apply(x, Index);
        return UpdateOfDropped(input, matmulType);
    }

    /// <summary>(..., in) x, already dropped -> (..., out) <c>Scale * B (A x)</c>.</summary>
    public Tensor UpdateOfDropped(Tensor x, ScalarType? matmulType)
    {
        using var scope = NewDisposeScope();
        var down = ReferenceLinear.Forward(x, A, null, matmulType);                // (..., r)
        return ReferenceLinear.Forward(down, B, null, matmulType).mul_(Scale).MoveToOuterDisposeScope(); // (..., out)
    }

    /// <summary>The factor <see cref="HoldFactor"/> keeps, or null.</summary>
    public Tensor? HeldFactor => heldFactor;

    /// <summary>
    /// DoRA's (out) factor m / ||W + Scale B A|| from <paramref name="weightTimesAT"/>, <c>W A^T</c> (out, r), in the
    /// adapters' type (<see cref="Op.DoraFactor"/> computes that product with the projection's kernels). Only m gets a
    /// gradient through it: the norm is a constant (DoRA's section 4.3, PEFT's <c>weight_norm.detach()</c>).
    /// </summary>
    public Tensor DoraFactor(Tensor weightTimesAT)
    {
        var magnitude = Magnitude ?? throw new InvalidOperationException("This adapter is plain LoRA: it has no DoRA magnitude.");
        using var norms = RowNorms(baseSquaredNorms!, weightTimesAT, A, B, Scale);
        return magnitude / norms;
    }

    /// <summary>
    /// Keeps <paramref name="factor"/> as this adapter's factor until the handle is disposed: for a generation call, whose
    /// forward passes (one a token) all see the same A, B and m. Takes ownership of the tensor. Inside an outer hold
    /// (a generation nested in another) the outer factor stays and the handle does nothing.
    /// </summary>
    public IDisposable HoldFactor(Tensor factor)
    {
        if (heldFactor is not null)
        {
            factor.Dispose();
            return new Held(null);
        }
        heldFactor = factor.DetachFromDisposeScope();
        return new Held(this);
    }

    /// <summary>
    /// (out) ||W + scale B A|| over each row, without gradient and without an (out, in) temporary (benchmarks/README.md,
    /// "DoRA": forming <c>W + scale B A</c> grew the 0.5B shape's RSS by 1.9 GB): <c>||W||^2 + 2 scale (B * W A^T) 1
    /// + scale^2 (B (A A^T) * B) 1</c>, from the fixed <paramref name="baseSquaredNorms"/> ||W||^2 (<see cref="SquaredRowNorms"/>)
    /// and <paramref name="weightTimesAT"/>, <c>W A^T</c> (out, r). Both terms are exactly 0 while B is, so a new DoRA
    /// adapter, whose magnitude is this with B = 0, starts at a factor of exactly 1.
    /// </summary>
    public static Tensor RowNorms(Tensor baseSquaredNorms, Tensor weightTimesAT, Tensor a, Tensor b, double scale)
    {
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        var cross = (b * weightTimesAT).sum(1);                                       // (out)
        var update = (b.matmul(a.matmul(a.t())) * b).sum(1);                          // (out)
        var squared = baseSquaredNorms + cross * (2 * scale) + update * (scale * scale);
        return squared.clamp_min_(0).sqrt_().MoveToOuterDisposeScope();
    }

    /// <summary>(out) ||W||^2 of each row of the frozen <paramref name="weight"/> (any floating type) in <paramref name="type"/>, a block of rows at a time.</summary>
    public static Tensor SquaredRowNorms(Tensor weight, ScalarType type)
    {
        using var noGrad = no_grad();
        const long BlockRows = 256;
        long rows = weight.shape[0];
        var result = empty(new[] { rows }, type, weight.device);
        for (long start = 0; start < rows; start += BlockRows)
        {
            using var scope = NewDisposeScope();
            long count = Math.Min(BlockRows, rows - start);
            var block = weight.narrow(0, start, count).to_type(type);
            result.narrow(0, start, count).copy_(block.square().sum(1));
        }
        return result;
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

    /// <summary>
    /// The merged weight (out, in) of <paramref name="weight"/> with this adapter: <c>W + Scale B A</c>, and for DoRA
    /// <c>(m / ||W + Scale B A||) (W + Scale B A)</c> row by row (PEFT's merge), in the adapters' type.
    /// </summary>
    public Tensor Merged(Tensor weight)
    {
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        var w = weight.to(A.dtype, A.device);
        var merged = w.add(Dense());
        if (Magnitude is not null) merged.mul_(DoraFactor(w.matmul(A.t())).unsqueeze(1));
        return merged.MoveToOuterDisposeScope();
    }

    public void Dispose()
    {
        heldFactor?.Dispose();
        A.Dispose();
        B.Dispose();
        Magnitude?.Dispose();
        baseSquaredNorms?.Dispose();
    }

    private sealed class Held(LoraAdapter? owner) : IDisposable
    {
        public void Dispose()
        {
            if (owner is null) return;
            owner.heldFactor?.Dispose();
            owner.heldFactor = null;
        }
    }

}
