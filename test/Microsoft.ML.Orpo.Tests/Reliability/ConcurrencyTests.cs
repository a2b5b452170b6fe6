using Microsoft.ML.Orpo.Modeling;
using Microsoft.ML.Orpo.Tests.Infrastructure;
using Microsoft.ML.Orpo.ModelFiles;
using Microsoft.ML.Orpo.Training;

namespace Microsoft.ML.Orpo.Tests.Reliability;

/// <summary>
/// The transformer documents that generation keeps all state per call, so one instance serves several threads: check
/// that 8 threads x 20 generations (greedy and seeded sampling) give exactly the sequential results, and that
/// Transform through one PredictionEngine per thread does too.
/// </summary>
[TestClass]
[DoNotParallelize]
public sealed class ConcurrencyTests
{
    private const int Threads = 8, PerThread = 20;
    private static readonly string[] Prompts = ["Once upon a time", "Lily wanted", "The dog", "One day, a girl named", "", "Tom and Sue"];

    public sealed class PromptRow
    {
        public string Prompt { get; set; } = "";
    }

    public sealed class ResponseRow
    {
        public string Response { get; set; } = "";
    }

    private static OrpoTransformer Load(MLContext ml)
    {
        var model = CausalLanguageModel.Load(TestAssets.Stories260KHf, null, "cpu");
        var settings = TransformerSettings.ForBaseModel(model.Config) with { Generation = new GenerationOptions { MaxNewTokens = 8 } };
        return new OrpoTransformer(ml, model, settings, []);
    }

    private static GenerationOptions Options(int i) => i % 2 == 0
        ? new GenerationOptions { MaxNewTokens = 8 }
        : new GenerationOptions { MaxNewTokens = 8, Temperature = 0.9, TopK = 40, TopP = 0.95, Seed = i };

    [TestMethod]
    public void ManyThreadsOnOneTransformerGenerateExactlyTheSequentialResults()
    {
        using var model = Load(new MLContext(seed: 1));
        string Work(int thread, int i) => model.Generate(Prompts[(thread + i) % Prompts.Length], Options(thread * PerThread + i));
        var expected = new string[Threads, PerThread];
        for (int t = 0; t < Threads; t++)
            for (int i = 0; i < PerThread; i++) expected[t, i] = Work(t, i);

        var actual = new string[Threads, PerThread];
        using var start = new Barrier(Threads);
        var workers = Enumerable.Range(0, Threads).Select(t => new Thread(() =>
        {
            start.SignalAndWait();
            for (int i = 0; i < PerThread; i++) actual[t, i] = Work(t, i);
        })).ToList();
        workers.ForEach(w => w.Start());
        workers.ForEach(w => w.Join());

        int different = 0;
        for (int t = 0; t < Threads; t++)
            for (int i = 0; i < PerThread; i++)
                if (expected[t, i] != actual[t, i]) different++;
        Console.WriteLine($"concurrency: {Threads} threads x {PerThread} generations on one transformer: {Threads * PerThread - different} equal to sequential, {different} different");
        Assert.AreEqual(0, different, "concurrent generation must equal sequential generation");
    }

    [TestMethod]
    public void PredictionEnginePerThreadTransformsExactlyTheSequentialResults()
    {
        var ml = new MLContext(seed: 1);
        using var model = Load(ml);
        var defaults = model.GenerationDefaults;
        var expected = Prompts.Select(p => model.Generate(p, defaults)).ToArray();
        var actual = new string[Threads, PerThread];
        using var start = new Barrier(Threads);
        var workers = Enumerable.Range(0, Threads).Select(t => new Thread(() =>
        {
            // Not disposed: an ML.NET PredictionEngine owns its transformer and would dispose the shared one with it.
            var engine = ml.Model.CreatePredictionEngine<PromptRow, ResponseRow>(model);
            start.SignalAndWait();
            try
            {
                for (int i = 0; i < PerThread; i++) actual[t, i] = engine.Predict(new PromptRow { Prompt = Prompts[(t + i) % Prompts.Length] }).Response;
            }
            catch (Exception e)
            {
                actual[t, 0] = "failed: " + e.Message;
            }
        })).ToList();
        workers.ForEach(w => w.Start());
        workers.ForEach(w => w.Join());
        int different = 0;
        for (int t = 0; t < Threads; t++)
            for (int i = 0; i < PerThread; i++)
                if (actual[t, i] != expected[(t + i) % Prompts.Length]) different++;
        Console.WriteLine($"concurrency: {Threads} threads x {PerThread} PredictionEngine rows: {Threads * PerThread - different} equal to sequential, {different} different");
        Assert.AreEqual(0, different);
    }

    [TestMethod]
    public void DisposeDuringConcurrentGenerationNeverCrashes()
    {
        var model = Load(new MLContext(seed: 1));
        int succeeded = 0, refused = 0;
        var failures = new List<Exception>();
        using var start = new Barrier(Threads + 1);
        var workers = Enumerable.Range(0, Threads).Select(t => new Thread(() =>
        {
            start.SignalAndWait();
            for (int i = 0; i < PerThread; i++)
            {
                try
                {
                    model.Generate(Prompts[(t + i) % Prompts.Length], Options(i));
                    Interlocked.Increment(ref succeeded);
                }
                catch (ObjectDisposedException)
                {
                    Interlocked.Increment(ref refused);
                }
                catch (Exception e)
                {
                    lock (failures) failures.Add(e);
                }
            }
        })).ToList();
        workers.ForEach(w => w.Start());
        start.SignalAndWait();
        Thread.Sleep(300);
        model.Dispose();
        workers.ForEach(w => w.Join());
        Console.WriteLine($"concurrency: dispose during generation: {succeeded} generations finished, {refused} refused with ObjectDisposedException, {failures.Count} other errors");
        Assert.IsEmpty(failures, string.Join("\n", failures.Take(3)));
        Assert.AreEqual(Threads * PerThread, succeeded + refused);
    }
}
