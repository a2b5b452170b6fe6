using Microsoft.ML.Data;
using Microsoft.ML.Orpo.Modeling;
using Microsoft.ML.Orpo.Tests.Infrastructure;

namespace Microsoft.ML.Orpo.Tests.MlNet;

/// <summary>The public ML.NET surface end to end: fit, transform, save, load (also in a fresh process), engines.</summary>
[TestClass]
public sealed class OrpoPipelineTests
{
    private static readonly string[] Prompts =
    {
        "Once upon a time, there was a little girl named", "The cat", "", "One day, a little girl named",
    };

    public sealed class PairRow
    {
        public string Prompt { get; set; } = "";
        public string Chosen { get; set; } = "";
        public string Rejected { get; set; } = "";
    }

    public sealed class PromptRow
    {
        public string Prompt { get; set; } = "";
    }

    public sealed class QuestionRow
    {
        public string Question { get; set; } = "";
    }

    public sealed class ResponseRow
    {
        public string Prompt { get; set; } = "";
        public string Response { get; set; } = "";
    }

    private static IDataView Pairs(MLContext ml) => ml.Data.LoadFromEnumerable(
        ProtagonistPairs.Create().Train.Select(p => new PairRow { Prompt = p.Prompt, Chosen = p.Chosen, Rejected = p.Rejected }));

    private static OrpoOptions Options() => new()
    {
        BaseModelPath = TestAssets.Stories260KHf,
        Lambda = 0.25, LearningRate = 1e-3, Epochs = 2, BatchSize = 8, LearningRateSchedule = LearningRateSchedule.Constant,
        Generation = new GenerationOptions { MaxNewTokens = 20 },
    };

    private static OrpoTransformer Fit(MLContext ml) => ml.Transforms.OrpoFineTune(Options()).Fit(Pairs(ml));

    private static string[] Responses(MLContext ml, ITransformer model, IDataView input) =>
        model.Transform(input).GetColumn<string>("Response").ToArray();

    [TestMethod]
    public void FitTransformSaveAndLoadInAFreshProcessGiveIdenticalGenerations()
    {
        var ml = new MLContext(seed: 1);
        using var model = Fit(ml);
        Assert.HasCount(10, model.TrainingHistory);
        var prompts = ml.Data.LoadFromEnumerable(Prompts.Select(p => new PromptRow { Prompt = p }));
        string[] expected = Responses(ml, model, prompts);
        CollectionAssert.AreEqual(Prompts.Select(p => model.Generate(p)).ToArray(), expected);
        StringAssert.StartsWith(expected[0].TrimStart(), ProtagonistPairs.Preferred, "the fitted model learned the preference");

        string path = Path.Combine(TestAssets.NewTempDirectory("orpo-zip"), "orpo.zip");
        ml.Model.Save(model, prompts.Schema, path);
        ModelZipFreshProcessTests.AssertFreshOrpoResponses(path, Prompts, expected);
    }

    [TestMethod]
    public void ChainWithCopyColumnsFitsSavesAndLoadsInAFreshProcess()
    {
        var ml = new MLContext(seed: 1);
        var training = ml.Data.LoadFromEnumerable(ProtagonistPairs.Create().Train.Select(p => new { Question = p.Prompt, p.Chosen, p.Rejected }));
        var pipeline = ml.Transforms.CopyColumns("Prompt", "Question").Append(ml.Transforms.OrpoFineTune(Options()));
        var chain = pipeline.Fit(training);
        var questions = ml.Data.LoadFromEnumerable(Prompts.Select(p => new QuestionRow { Question = p }));
        string[] expected = Responses(ml, chain, questions);

        string path = Path.Combine(TestAssets.NewTempDirectory("orpo-zip"), "chain.zip");
        ml.Model.Save(chain, questions.Schema, path);
        var (code, stdout, stderr) = ModelZipFreshProcessTests.RunFresh(path, "register", "Question", "Response", Prompts);
        Assert.AreEqual(0, code, stderr);
        CollectionAssert.AreEqual(expected, stdout.Split('\n').Skip(1).Take(Prompts.Length).Select(l => l.TrimEnd('\r')).ToArray(), stdout);
        chain.LastTransformer.Dispose();
    }

    [TestMethod]
    public void PredictionEngineOnTheLoadedModelMatchesTheSavedOne()
    {
        var ml = new MLContext(seed: 1);
        using var model = Fit(ml);
        var prompts = ml.Data.LoadFromEnumerable(Prompts.Select(p => new PromptRow { Prompt = p }));
        string path = Path.Combine(TestAssets.NewTempDirectory("orpo-zip"), "orpo.zip");
        ml.Model.Save(model, prompts.Schema, path);

        var other = new MLContext(seed: 2).RegisterOrpo();
        var loaded = other.Model.Load(path, out var schema);
        Assert.AreEqual("Prompt", schema[0].Name);
        var engine = other.Model.CreatePredictionEngine<PromptRow, ResponseRow>(loaded);
        foreach (string prompt in Prompts)
            Assert.AreEqual(model.Generate(prompt), engine.Predict(new PromptRow { Prompt = prompt }).Response);
        var loadedOrpo = (OrpoTransformer)loaded;
        Assert.HasCount(model.TrainingHistory.Count, loadedOrpo.TrainingHistory);
        Assert.AreEqual(model.TrainingHistory[^1].Loss, loadedOrpo.TrainingHistory[^1].Loss);
        loadedOrpo.Dispose();
    }

    [TestMethod]
    public void PerThreadPredictionEnginesEqualSequentialResults()
    {
        var ml = new MLContext(seed: 1);
        using var model = OrpoTransformer.FromPretrained(ml, TestAssets.Stories260KHf);
        var prompts = Enumerable.Range(0, 20).Select(i => Prompts[i % Prompts.Length] + (i >= Prompts.Length ? " " + i : "")).ToArray();
        var sequentialEngine = ml.Model.CreatePredictionEngine<PromptRow, ResponseRow>(model);
        var expected = prompts.Select(p => sequentialEngine.Predict(new PromptRow { Prompt = p }).Response).ToArray();

        var results = new string[8][];
        Parallel.For(0, 8, new ParallelOptions { MaxDegreeOfParallelism = 8 }, thread =>
        {
            var engine = ml.Model.CreatePredictionEngine<PromptRow, ResponseRow>(model);
            results[thread] = prompts.Select(p => engine.Predict(new PromptRow { Prompt = p }).Response).ToArray();
        });
        for (int thread = 0; thread < 8; thread++)
            CollectionAssert.AreEqual(expected, results[thread], $"thread {thread}");
    }

    [TestMethod]
    public void WrongSchemasFailEagerlyNamingTheColumn()
    {
        var ml = new MLContext(seed: 1);
        var estimator = ml.Transforms.OrpoFineTune(Options());
        var missing = ml.Data.LoadFromEnumerable(new[] { new { Prompt = "a", Chosen = "b" } });
        var numeric = ml.Data.LoadFromEnumerable(new[] { new { Prompt = "a", Chosen = "b", Rejected = 1f } });
        var vector = ml.Data.LoadFromEnumerable(new[] { new VectorRow { Prompt = "a", Chosen = new[] { "b", "c" }, Rejected = "d" } });
        foreach (var (data, column, expectedType) in new[] { (missing, "Rejected", "not found"), (numeric, "Rejected", "Single"), (vector, "Chosen", "Vector") })
        {
            var atSchema = Assert.Throws<ArgumentException>(() => estimator.GetOutputSchema(ShapeOf(data.Schema)));
            StringAssert.Contains(atSchema.Message, $"'{column}'");
            StringAssert.Contains(atSchema.Message, expectedType);
            var atFit = Assert.Throws<ArgumentException>(() => estimator.Fit(data));
            StringAssert.Contains(atFit.Message, $"'{column}'");
        }
        var shape = estimator.GetOutputSchema(ShapeOf(Pairs(ml).Schema));
        Assert.IsTrue(shape.Any(c => c.Name == "Response" && c.ItemType is TextDataViewType));
    }

    public sealed class VectorRow
    {
        public string Prompt { get; set; } = "";
        [VectorType(2)]
        public string[] Chosen { get; set; } = Array.Empty<string>();
        public string Rejected { get; set; } = "";
    }

    [TestMethod]
    public void FitReportsProgressOnTheLogAndLeavesOptionsUntouched()
    {
        var ml = new MLContext(seed: 1);
        var messages = new List<string>();
        ml.Log += (_, e) => { lock (messages) messages.Add(e.Message); };
        var steps = new List<OrpoStepMetrics>();
        var options = Options();
        options.Progress = new SynchronousProgress<OrpoStepMetrics>(steps.Add);
        string before = System.Text.Json.JsonSerializer.Serialize(options.Generation) + options.Epochs + options.LearningRate;
        using var model = ml.Transforms.OrpoFineTune(options).Fit(Pairs(ml));
        Assert.HasCount(model.TrainingHistory.Count, steps);
        Assert.IsTrue(messages.Any(m => m.Contains("step 10/10", StringComparison.Ordinal) && m.Contains("tok/s", StringComparison.Ordinal)),
            "each step is logged with throughput");
        Assert.AreEqual(before, System.Text.Json.JsonSerializer.Serialize(options.Generation) + options.Epochs + options.LearningRate);
    }

    [TestMethod]
    [DoNotParallelize]
    public void FitWarnsOnTheLogWhenANativeAbiGuardIsOffAndTrainsTheSame()
    {
        using var expected = Fit(new MLContext(seed: 1));
        var ml = new MLContext(seed: 1);
        var warnings = new List<string>();
        ml.Log += (_, e) => { if (e.Kind == Runtime.ChannelMessageKind.Warning) lock (warnings) warnings.Add(e.RawMessage); };
        var sink = NativeAbiGuard.Log;
        NativeAbiGuard.Log = _ => { };
        OrpoTransformer simulated;
        try
        {
            using (NativeAbiGuard.SimulateTorchSharpVersion("0.108.0")) simulated = Fit(ml);
        }
        finally
        {
            NativeAbiGuard.Log = sink;
        }
        using (simulated)
        {
            Assert.AreEqual(1, warnings.Count(w => w.StartsWith("HostTensors is off", StringComparison.Ordinal) && w.Contains("TorchSharp 0.108.0")), string.Join("\n", warnings));
            Assert.AreEqual(1, warnings.Count(w => w.StartsWith("CustomBackward", StringComparison.Ordinal) && w.Contains("TorchSharp 0.108.0")), string.Join("\n", warnings));
            CollectionAssert.AreEqual(expected.TrainingHistory.Select(m => (m.Loss, m.GradNorm)).ToList(),
                simulated.TrainingHistory.Select(m => (m.Loss, m.GradNorm)).ToList(), "the plain path trains identically");
        }
    }

    [TestMethod]
    [DataRow(true)]
    [DataRow(false)]
    public void CancellationStopsFit(bool viaMlContext)
    {
        var ml = new MLContext(seed: 1);
        using var source = new CancellationTokenSource();
        var options = Options();
        options.Epochs = 50;
        options.CancellationToken = source.Token;
        // MLContext.CancelExecution() is internal in ML.NET 5.0.1; ML.NET's own components reach it the same way.
        var cancelExecution = typeof(MLContext).GetMethod("CancelExecution", System.Reflection.BindingFlags.Instance | System.Reflection.BindingFlags.NonPublic)!;
        options.Progress = new SynchronousProgress<OrpoStepMetrics>(m =>
        {
            if (m.Step != 3) return;
            if (viaMlContext) cancelExecution.Invoke(ml, null);
            else source.Cancel();
        });
        var e = Assert.Throws<OperationCanceledException>(() => ml.Transforms.OrpoFineTune(options).Fit(Pairs(ml)));
        StringAssert.Contains(e.Message, "step 4");
    }

    private static SchemaShape ShapeOf(DataViewSchema schema) => (SchemaShape)typeof(SchemaShape)
        .GetMethod("Create", System.Reflection.BindingFlags.Static | System.Reflection.BindingFlags.NonPublic)!.Invoke(null, new object[] { schema })!;

    [TestMethod]
    public void SharedPromptForwardOptionTrainsLikeTheDefaultLayout()
    {
        var ml = new MLContext(seed: 1);
        var plain = Options();
        plain.Seed = 4;
        var shared = Options();
        shared.Seed = 4;
        shared.SharedPromptForward = true;
        using var a = ml.Transforms.OrpoFineTune(plain).Fit(Pairs(ml));
        using var b = ml.Transforms.OrpoFineTune(shared).Fit(Pairs(ml));
        Assert.AreEqual(a.TrainingHistory[0].Loss, b.TrainingHistory[0].Loss, 1e-5);
        Assert.AreEqual(a.TrainingHistory[0].RewardsMargin, b.TrainingHistory[0].RewardsMargin, 1e-6);
        Assert.AreEqual(a.TrainingHistory[^1].Loss, b.TrainingHistory[^1].Loss, 1e-3 * a.TrainingHistory[^1].Loss);
    }

    [TestMethod]
    public void PrecisionOptionReachesTheTrainer()
    {
        var ml = new MLContext(seed: 1);
        var float32 = Options();
        float32.Seed = 4;
        float32.Epochs = 1;
        var bfloat16 = float32.Clone();
        bfloat16.Precision = OrpoPrecision.BFloat16;
        var log = new List<string>();
        ml.Log += (_, e) => { if (e.RawMessage.StartsWith("ORPO:", StringComparison.Ordinal)) lock (log) log.Add(e.RawMessage); };
        using var a = ml.Transforms.OrpoFineTune(float32).Fit(Pairs(ml));
        using var b = ml.Transforms.OrpoFineTune(bfloat16).Fit(Pairs(ml));
        // Same seed and data: only the arithmetic differs, by bfloat16 rounding (MixedPrecisionTests states the tolerance).
        Assert.AreNotEqual(a.TrainingHistory[0].Loss, b.TrainingHistory[0].Loss);
        Assert.AreEqual(a.TrainingHistory[0].Loss, b.TrainingHistory[0].Loss, 1e-2 * a.TrainingHistory[0].Loss);
        Assert.IsTrue(log.Any(l => l.Contains("BFloat16 mixed precision", StringComparison.Ordinal)), string.Join("\n", log));
        Assert.AreEqual(OrpoPrecision.BFloat16, ml.Transforms.OrpoFineTune(bfloat16).Options.Precision);
        Assert.IsTrue(a.Model.Network.NamedWeights().Concat(b.Model.Network.NamedWeights()).All(p => p.Parameter.dtype == TorchSharp.torch.ScalarType.Float32),
            "the fitted weights are float32 either way");
    }

    [TestMethod]
    public void CanceledFitWithoutAnExplicitSeedResumesInAnotherContext()
    {
        string directory = TestAssets.NewTempDirectory("orpo-resume");
        IReadOnlyList<OrpoStepMetrics> Run(MLContext ml, int? stopAfter)
        {
            using var source = new CancellationTokenSource();
            var options = Options();
            options.Seed = null; // drawn from each MLContext: different in the two runs
            options.CheckpointDirectory = directory;
            options.CheckpointInterval = 2;
            options.CancellationToken = source.Token;
            var seen = new List<OrpoStepMetrics>();
            options.Progress = new SynchronousProgress<OrpoStepMetrics>(m => { seen.Add(m); if (m.Step == stopAfter) source.Cancel(); });
            try
            {
                using var model = ml.Transforms.OrpoFineTune(options).Fit(Pairs(ml));
                return model.TrainingHistory;
            }
            catch (OperationCanceledException)
            {
                return seen;
            }
        }
        var interrupted = Run(new MLContext(seed: 11), stopAfter: 5);
        Assert.HasCount(5, interrupted);
        var resumed = Run(new MLContext(seed: 99), stopAfter: null);
        Assert.HasCount(10, resumed);
        for (int i = 0; i < 4; i++)
            Assert.AreEqual(interrupted[i].Loss, resumed[i].Loss, $"step {i + 1} comes from the checkpoint");
        Assert.AreEqual(interrupted[4].Loss, resumed[4].Loss, 1e-12, "step 5 is replayed with the interrupted run's data order");
        Directory.Delete(directory, recursive: true);
    }

    /// <summary>Progress&lt;T&gt; posts to the thread pool; tests want the callback inline.</summary>
    private sealed class SynchronousProgress<T>(Action<T> report) : IProgress<T>
    {
        public void Report(T value) => report(value);
    }
}
