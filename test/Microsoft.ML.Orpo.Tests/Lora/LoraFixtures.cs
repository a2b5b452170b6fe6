using Microsoft.ML.Orpo.ModelFiles;
using Microsoft.ML.Orpo.Modeling;
using Microsoft.ML.Orpo.Preferences;
using Microsoft.ML.Orpo.Tests.Infrastructure;
using Microsoft.ML.Orpo.Tests.Training;
using Microsoft.ML.Orpo.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Tests.Lora;

/// <summary>Shared set-up of the LoRA tests: configs, non-zero adapters, snapshots of A and B, logits.</summary>
internal static class LoraFixtures
{
    public static LoraConfig Config(int rank = 4, double alpha = 8, double dropout = 0, bool bf16 = false, bool dora = false, params string[] targets) =>
        new(rank, alpha, dropout, targets.Length == 0 ? LoraOptions.AllLinear.ToList() : targets, bf16, UseDora: dora);

    /// <summary>
    /// <paramref name="count"/> protagonist pairs truncated to 40 tokens each (prompt up to 20): different lengths, and
    /// short enough that the float64 references stay fast.
    /// </summary>
    public static List<EncodedPair> ShortPairs(CausalLanguageModel model, int count) =>
        TrainingFixtures.Encode(model, ProtagonistPairs.Create().Train.Take(count), maxLength: 40);

    /// <summary>
    /// The ORPO loss (lambda 0.5, unchunked head) of two <see cref="ShortPairs"/> through <paramref name="model"/>: its
    /// value without gradients, for central differences, and one backward pass, accumulating the adapters' gradients.
    /// </summary>
    public static (Func<double> Value, Action Backward) ShortPairsLoss(CausalLanguageModel model)
    {
        var pairs = ShortPairs(model, 2);
        double nllTokens = pairs.Sum(p => (double)p.NllTokenCount(false));
        var settings = new TrainingSettings { Lambda = 0.5, LogitsChunkRows = 0 };
        Tensor Loss() => PreferenceForward.Loss(model.Network, pairs, settings, CPU, nllTokens, pairs.Count).Terms.Loss;
        return (() =>
        {
            using var scope = NewDisposeScope();
            using var noGrad = no_grad();
            return Loss().ToDouble();
        }, () =>
        {
            using var scope = NewDisposeScope();
            Loss().backward();
        });
    }

    /// <summary>Gives every B a seeded normal value times <paramref name="scale"/> (a fresh adapter's B is zero: no signal).</summary>
    public static void RandomizeB(LoraAdapters adapters, int seed, double scale = 0.05)
    {
        using var generator = new Generator((ulong)seed, CPU);
        using var noGrad = no_grad();
        foreach (var (_, adapter) in adapters.ByPath)
            using (var value = randn(adapter.B.shape, generator: generator).mul_(scale))
                adapter.B.copy_(value);
    }

    /// <summary>A and B of every adapter as float64 values, by PEFT key.</summary>
    public static Dictionary<string, double[]> Snapshot(LoraAdapters adapters)
    {
        using var noGrad = no_grad();
        return adapters.NamedParameters().ToDictionary(p => p.Name, p =>
        {
            using var values = p.Parameter.to_type(ScalarType.Float64);
            return values.data<double>().ToArray();
        });
    }

    public static double MaxDifference(Dictionary<string, double[]> a, Dictionary<string, double[]> b) =>
        a.Keys.Max(k => a[k].Zip(b[k], (x, y) => Math.Abs(x - y)).Max());

    public static bool BitIdentical(Dictionary<string, double[]> a, Dictionary<string, double[]> b) =>
        a.Count == b.Count && a.Keys.All(k => b.ContainsKey(k) && a[k].AsSpan().SequenceEqual(b[k]));

    public static readonly long[] Ids = { 1, 403, 407, 261, 378, 425, 306, 275, 260, 301, 449 };

    /// <summary>The network's logits over <see cref="Ids"/> as float64 values (whatever the network's type).</summary>
    public static double[] Logits(CausalLanguageModel model)
    {
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        using var input = tensor(Ids).unsqueeze(0);
        return model.Network.Forward(input).to_type(ScalarType.Float64).data<double>().ToArray();
    }

    /// <summary>max |a - b| over max |a|.</summary>
    public static double RelativeMaxError(double[] expected, double[] actual) =>
        expected.Zip(actual, (x, y) => Math.Abs(x - y)).Max() / expected.Max(Math.Abs);
}
