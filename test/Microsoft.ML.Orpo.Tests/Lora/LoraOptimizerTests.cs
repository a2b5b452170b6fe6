using TorchSharp;
using Microsoft.ML.Orpo.ModelFiles;
using Microsoft.ML.Orpo.Modeling;
using Microsoft.ML.Orpo.Tests.Infrastructure;
using Microsoft.ML.Orpo.Tests.Training;
using Microsoft.ML.Orpo.Training;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Tests.Lora;

/// <summary>AdamW on the adapters: the trajectory from a PEFT folder against a float64 reference, and accumulation.</summary>
[TestClass]
public sealed class LoraOptimizerTests
{
    private const int Rank = 4;
    private const double Alpha = 8;

    /// <summary>A PEFT adapter folder written by hand (non-zero A and B); returns its float32 tensors by PEFT key (caller disposes).</summary>
    private static Dictionary<string, Tensor> WritePeftFolder(string folder, CausalLanguageModel model, string[] targets)
    {
        using var generator = new Generator(17, CPU);
        var tensors = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (var (path, _, module, _) in model.Network.Projections().Where(p => targets.Contains(p.Name)))
        {
            tensors[LoraAdapters.KeyOfA(path)] = randn(new long[] { Rank, module.in_features }, generator: generator).mul_(0.1);
            tensors[LoraAdapters.KeyOfB(path)] = randn(new long[] { module.out_features, Rank }, generator: generator).mul_(0.05);
        }
        SafeTensorsWriter.Write(Path.Combine(folder, PeftAdapterFolder.WeightsFileName), tensors);
        File.WriteAllText(Path.Combine(folder, PeftAdapterFolder.ConfigFileName), $$"""
            {
              "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": {{Rank}}, "lora_alpha": {{Alpha}}, "lora_dropout": 0.0,
              "target_modules": [{{string.Join(", ", targets.Select(t => $"\"{t}\""))}}], "bias": "none",
              "use_dora": false, "use_rslora": false, "fan_in_fan_out": false
            }
            """);
        return tensors;
    }

    [TestMethod]
    public void FiveAdamWStepsFromAPeftFolderFollowTheFloat64Reference()
    {
        using var model = TrainingFixtures.LoadModel();
        var pairs = LoraFixtures.ShortPairs(model, 2);
        string[] targets = ["q_proj", "v_proj", "o_proj", "up_proj", "down_proj"];
        string folder = TestAssets.NewTempDirectory("orpo-lora-peft");
        var initial = WritePeftFolder(folder, model, targets);
        try
        {
            using (var contents = PeftAdapterFolder.Read(folder, model.Network.Projections().Select(p => (p.Path, p.Name)).ToList()))
                LoraAdapters.Load(model.Network, contents.Config, contents.Tensors, folder);
            var adapters = model.Network.Adapters!;
            Assert.AreEqual(LoraFixtures.Config(Rank, Alpha, targets: targets), adapters.Config);
            var trajectory = new List<Dictionary<string, double[]>>();
            var settings = TrainingFixtures.Plain(batchSize: 2, epochs: 5) with { Lora = adapters.Config };
            var history = new OrpoTrainer(model, settings, new TrainingCallbacks { AfterStep = _ => trajectory.Add(LoraFixtures.Snapshot(adapters)) })
                .Train(pairs);
            Assert.HasCount(5, trajectory);

            // The reference: the float64 model with effective weights W + (alpha / r) B A, and AdamW in plain doubles.
            var (config, weights) = HuggingFaceFolder.Load(TestAssets.Stories260KHf);
            using var reference = new ReferenceLlama(config, weights);
            foreach (var w in weights.Values) w.Dispose();
            var state = initial.ToDictionary(kv => kv.Key, kv => kv.Value.to_type(ScalarType.Float64).data<double>().ToArray());
            var start = state.ToDictionary(kv => kv.Key, kv => (double[])kv.Value.Clone());
            var m = state.ToDictionary(kv => kv.Key, kv => new double[kv.Value.Length]);
            var v = state.ToDictionary(kv => kv.Key, kv => new double[kv.Value.Length]);
            const double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, epsilon = 1e-8;
            double worstWeights = 0, worstUpdates = 0;
            for (int step = 1; step <= 5; step++)
            {
                using var scope = NewDisposeScope();
                var leaves = state.ToDictionary(kv => kv.Key, kv => tensor(kv.Value, initial[kv.Key].shape).requires_grad_(true));
                foreach (var (path, _, _, _) in model.Network.Projections().Where(p => targets.Contains(p.Name)))
                    reference.Lora[path] = (leaves[LoraAdapters.KeyOfA(path)], leaves[LoraAdapters.KeyOfB(path)], Alpha / Rank);
                var loss = ReferenceOrpo.Compute(reference, pairs, settings.Lambda).Loss;
                Assert.AreEqual(loss.ToDouble(), history[step - 1].Loss, 1e-5 * Math.Abs(loss.ToDouble()), $"loss at step {step}");
                var names = leaves.Keys.ToArray();
                var gradients = autograd.grad([loss], names.Select(n => leaves[n]).ToArray());
                for (int i = 0; i < names.Length; i++)
                {
                    var (w, g, mi, vi) = (state[names[i]], gradients[i].data<double>().ToArray(), m[names[i]], v[names[i]]);
                    for (int j = 0; j < w.Length; j++)
                    {
                        mi[j] = beta1 * mi[j] + (1 - beta1) * g[j];
                        vi[j] = beta2 * vi[j] + (1 - beta2) * g[j] * g[j];
                        double mHat = mi[j] / (1 - Math.Pow(beta1, step)), vHat = vi[j] / (1 - Math.Pow(beta2, step));
                        w[j] -= lr * mHat / (Math.Sqrt(vHat) + epsilon);
                    }
                }
                // After this step, tensor by tensor: the weights, and their displacement from the start (the updates alone).
                foreach (var name in names)
                {
                    var (ours, expected, origin) = (trajectory[step - 1][name], state[name], start[name]);
                    double weightError = Distance(ours, expected) / Norm(expected);
                    double updateError = Distance(ours.Zip(origin, (a, b) => a - b), expected.Zip(origin, (a, b) => a - b)) / Distance(expected, origin);
                    worstWeights = Math.Max(worstWeights, weightError);
                    worstUpdates = Math.Max(worstUpdates, updateError);
                    Assert.IsLessThan(1e-4, weightError, $"{name} after step {step}: relative L2 distance {weightError:E2}");
                    Assert.IsLessThan(1e-2, updateError, $"{name} after step {step}: its updates' relative L2 distance {updateError:E2}");
                }
            }
            Console.WriteLine($"five AdamW steps from a PEFT folder: worst relative L2 distance of the adapters {worstWeights:E2}, of their updates {worstUpdates:E2}");
            Assert.IsLessThan(history[0].Loss, history[4].Loss, "the loss decreases on a fixed batch");
        }
        finally
        {
            foreach (var t in initial.Values) t.Dispose();
            Directory.Delete(folder, recursive: true);
        }
    }

    private static double Norm(IEnumerable<double> x) => Math.Sqrt(x.Sum(a => a * a));

    private static double Distance(IEnumerable<double> x, IEnumerable<double> y) => Norm(x.Zip(y, (a, b) => a - b));

    // float32: AdamW's first steps move every element by about the learning rate times the sign of its gradient, so
    // an element whose gradient is near zero turns summation-order rounding (the LoRA kernel's row blocks differ between
    // batch sizes) into a difference of up to ~10% of its 1e-3 step. In float32 the updates are therefore compared as a
    // whole (relative L2 distance), with the loss and gradient norm per step to 1e-6 / 1e-5 below; float64 checks the
    // accumulation element by element.
    [TestMethod]
    [DataRow(true, 1e-12)]
    [DataRow(false, 1e-2)]
    public void AccumulationOverMicroBatchesEqualsOneLargeBatch(bool float64, double tolerance)
    {
        CausalLanguageModel Adapted()
        {
            var model = TrainingFixtures.LoadModel();
            if (float64) model.Network.to(ScalarType.Float64);
            LoraFixtures.RandomizeB(LoraAdapters.Create(model.Network, LoraFixtures.Config(), seed: 5), seed: 7);
            return model;
        }
        using var large = Adapted();
        using var accumulated = Adapted();
        var start = LoraFixtures.Snapshot(large.Network.Adapters!);
        var pairs = LoraFixtures.ShortPairs(large, 4);
        // Two optimiser steps over 4 pairs of different lengths: as one batch of 4, and as 2 micro-batches of 2.
        var settings = TrainingFixtures.Plain(batchSize: 4, epochs: 2) with { Lora = large.Network.Adapters!.Config };
        var largeHistory = new OrpoTrainer(large, settings).Train(pairs);
        var accumulatedHistory = new OrpoTrainer(accumulated, settings with { BatchSize = 2, GradientAccumulationSteps = 2 }).Train(pairs);

        var ours = LoraFixtures.Snapshot(accumulated.Network.Adapters!);
        var theirs = LoraFixtures.Snapshot(large.Network.Adapters!);
        double moved = LoraFixtures.MaxDifference(start, ours);
        var keys = start.Keys.ToList();
        IEnumerable<double> Update(Dictionary<string, double[]> end) => keys.SelectMany(k => end[k].Zip(start[k], (e, s) => e - s));
        double difference = float64 ? LoraFixtures.MaxDifference(theirs, ours) : Distance(Update(ours), Update(theirs)) / Norm(Update(theirs));
        Console.WriteLine($"LoRA accumulation ({(float64 ? "float64" : "float32")}): adapter difference after 2 steps " +
            $"{difference:E2} ({(float64 ? "max element" : "relative L2 of the updates")}; max element {LoraFixtures.MaxDifference(theirs, ours):E2}), adapters moved up to {moved:E2}");
        Assert.IsLessThan(tolerance, difference);
        Assert.IsGreaterThan(1e-3, moved, "the adapters trained (two steps of about the learning rate)");
        Assert.HasCount(2, accumulatedHistory);
        for (int i = 0; i < 2; i++)
        {
            // Step 2 starts from the slightly different adapters of step 1: float32 rounding, ~1e-6 relative.
            Assert.AreEqual(largeHistory[i].Loss, accumulatedHistory[i].Loss, (i == 0 ? 1e-6 : 1e-5) * Math.Abs(largeHistory[i].Loss));
            Assert.AreEqual(largeHistory[i].GradNorm, accumulatedHistory[i].GradNorm, 1e-5 * largeHistory[i].GradNorm);
        }
    }
}
