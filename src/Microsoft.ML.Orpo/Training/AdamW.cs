using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Training;

/// <summary>
/// AdamW (Loshchilov &amp; Hutter) with PyTorch's update rule, decoupled weight decay applied to matrices only
/// (norm weights and biases are excluded, as in Hugging Face trainers), and state that can be saved and restored
/// exactly for resumable training.
/// </summary>
internal sealed class AdamW : IDisposable
{
    private readonly IReadOnlyList<(string Name, Parameter Parameter)> parameters;
    private readonly Dictionary<string, (Tensor M, Tensor V)> moments = new(StringComparer.Ordinal);

    public AdamW(IReadOnlyList<(string Name, Parameter Parameter)> parameters, double beta1, double beta2, double epsilon, double weightDecay)
    {
        this.parameters = parameters;
        Beta1 = beta1;
        Beta2 = beta2;
        Epsilon = epsilon;
        WeightDecay = weightDecay;
        foreach (var (name, p) in parameters)
            moments[name] = (zeros_like(p).DetachFromDisposeScope(), zeros_like(p).DetachFromDisposeScope());
    }

    private const long SliceElements = 1 << 20;

    public double Beta1 { get; }
    public double Beta2 { get; }
    public double Epsilon { get; }
    public double WeightDecay { get; }
    /// <summary>Updates taken so far (drives bias correction).</summary>
    public int StepCount { get; private set; }

    public static bool Decays(string name, Tensor parameter) => parameter.dim() >= 2 && !name.EndsWith(".bias", StringComparison.Ordinal);

    public void Step(double learningRate)
    {
        StepCount++;
        double correction1 = 1 - Math.Pow(Beta1, StepCount);
        double correction2 = 1 - Math.Pow(Beta2, StepCount);
        using var noGrad = no_grad();
        foreach (var (name, p) in parameters)
        {
            using var scope = NewDisposeScope();
            var grad = p.grad;
            if (grad is null) continue;
            var (m, v) = moments[name];
            if (WeightDecay != 0 && Decays(name, p)) p.mul_(1 - learningRate * WeightDecay);
            m.mul_(Beta1).add_(grad, alpha: 1 - Beta1);
            v.mul_(Beta2).addcmul_(grad, grad, value: 1 - Beta2);
            void Update(Tensor pp, Tensor mm, Tensor vv)
            {
                using var denominator = (vv / correction2).sqrt_().add_(Epsilon);
                pp.addcdiv_(mm, denominator, value: -learningRate / correction1);
            }
            if (!p.is_contiguous() || !m.is_contiguous() || !v.is_contiguous())
            {
                Update(p, m, v);
                continue;
            }
            // The denominator a slice at a time: a whole-matrix temporary (62.5 MB for a 32000 x 512 embedding) is a
            // fresh mapping faulted in every step. Element-wise, so the update is the same.
            using var flatP = p.view(-1);
            using var flatM = m.view(-1);
            using var flatV = v.view(-1);
            for (long start = 0, n = flatP.numel(); start < n; start += SliceElements)
            {
                long count = Math.Min(SliceElements, n - start);
                Update(flatP.narrow(0, start, count), flatM.narrow(0, start, count), flatV.narrow(0, start, count));
            }
        }
    }

    /// <summary>The moments keyed "exp_avg.NAME" / "exp_avg_sq.NAME" (PyTorch's names), for checkpoints.</summary>
    public Dictionary<string, Tensor> StateTensors() => moments
        .SelectMany(kv => new[] { ("exp_avg." + kv.Key, kv.Value.M), ("exp_avg_sq." + kv.Key, kv.Value.V) })
        .ToDictionary(x => x.Item1, x => x.Item2, StringComparer.Ordinal);

    public void LoadState(IReadOnlyDictionary<string, Tensor> state, int stepCount, string source)
    {
        using var noGrad = no_grad();
        foreach (var (name, (m, v)) in moments)
        {
            if (!state.TryGetValue("exp_avg." + name, out var savedM) || !state.TryGetValue("exp_avg_sq." + name, out var savedV))
                throw new InvalidDataException($"{source}: optimizer state for '{name}' is missing.");
            if (!savedM.shape.SequenceEqual(m.shape) || !savedV.shape.SequenceEqual(v.shape))
                throw new InvalidDataException($"{source}: optimizer state for '{name}' has the wrong shape.");
            m.copy_(savedM);
            v.copy_(savedV);
        }
        StepCount = stepCount;
    }

    public void Dispose()
    {
        foreach (var (m, v) in moments.Values)
        {
            m.Dispose();
            v.Dispose();
        }
    }
}
