using Microsoft.ML.Data;
using Microsoft.ML.Orpo.ModelFiles;
using Microsoft.ML.Orpo.Modeling;
using Microsoft.ML.Orpo.Tests.Infrastructure;

namespace Microsoft.ML.Orpo.Tests.Reliability;

/// <summary>
/// One row per kind of bad input, each expecting a specific exception type and a message that names the column,
/// row, file or option at fault. Rows that expect no exception document a decision: skipped pairs are counted in
/// the log, control characters train like any other character, a model vocabulary larger than the tokenizer's is fine.
/// </summary>
[TestClass]
public sealed class BadInputMatrixTests
{
    /// <summary>One row: what to do, what must be thrown (null: nothing) and what its message (or the log) must contain.</summary>
    public sealed record Case(string Name, Func<MLContext, object?> Act, Type? Expected, params string[] MessageParts);

    private sealed class Pair
    {
        public string? Prompt { get; set; }
        public string? Chosen { get; set; }
        public string? Rejected { get; set; }
    }

    private sealed class NumericChosen
    {
        public string Prompt { get; set; } = "p";
        public float Chosen { get; set; }
        public string Rejected { get; set; } = "r";
    }

    private sealed class VectorRejected
    {
        public string Prompt { get; set; } = "p";
        public string Chosen { get; set; } = "c";
        [VectorType(2)]
        public string[] Rejected { get; set; } = ["a", "b"];
    }

    private sealed class NoPrompt
    {
        public string Chosen { get; set; } = "c";
        public string Rejected { get; set; } = "r";
    }

    private static readonly Lazy<string> SmallVocabularyModel = new(() => ReliabilityFixtures.TinyModelFolder(vocabulary: 256));
    private static readonly Lazy<string> LargeVocabularyModel = new(() => ReliabilityFixtures.TinyModelFolder(vocabulary: 600));

    private static readonly Pair Good = new() { Prompt = "Once upon a time", Chosen = " there was a girl named Sue.", Rejected = " there was a girl named Lily." };

    private static OrpoOptions Options(Action<OrpoOptions>? change = null)
    {
        var o = new OrpoOptions
        {
            BaseModelPath = TestAssets.Stories260KHf, BatchSize = 2, Epochs = 1, LearningRate = 1e-3, Seed = 1, MaxLength = 64,
            CheckpointInterval = 0,
        };
        change?.Invoke(o);
        return o;
    }

    private static IDataView Data<T>(MLContext ml, params T[] rows) where T : class => ml.Data.LoadFromEnumerable(rows);

    private static OrpoTransformer Fit(MLContext ml, IDataView data, Action<OrpoOptions>? change = null) =>
        ml.Transforms.OrpoFineTune(Options(change)).Fit(data);

    private static Pair P(string? prompt, string? chosen, string? rejected) => new() { Prompt = prompt, Chosen = chosen, Rejected = rejected };

    private static object? FitAndGenerate(MLContext ml, IDataView data, Action<OrpoOptions>? change = null)
    {
        using var model = Fit(ml, data, change);
        Assert.IsNotEmpty(model.TrainingHistory);
        return model.Generate("Once upon a time", new GenerationOptions { MaxNewTokens = 4 });
    }

    private static Case Option(string name, Action<OrpoOptions> change, Type expected, params string[] parts) =>
        new(name, ml => ml.Transforms.OrpoFineTune(Options(change)), expected, parts);

    public static IReadOnlyList<Case> Cases { get; } =
    [
        // Columns.
        new("missing prompt column", ml => Fit(ml, Data(ml, new NoPrompt())), typeof(ArgumentOutOfRangeException), "Column 'Prompt'", "not found", "PromptColumnName"),
        new("missing column at GetOutputSchema", ml => ml.Transforms.OrpoFineTune(Options(o => o.ChosenColumnName = "Better"))
            .GetOutputSchema(new SchemaShape(
            new[] { "Prompt", "Chosen", "Rejected" }.Select(n => Microsoft.ML.Orpo.MlNet.MlNetAccess.ScalarColumn(n, TextDataViewType.Instance)))), typeof(ArgumentOutOfRangeException), "Column 'Better'", "ChosenColumnName"),
        new("numeric chosen column", ml => Fit(ml, Data(ml, new NumericChosen())), typeof(ArgumentOutOfRangeException), "Column 'Chosen'", "Single", "scalar text"),
        new("vector rejected column", ml => Fit(ml, Data(ml, new VectorRejected())), typeof(ArgumentOutOfRangeException), "Column 'Rejected'", "Vector", "scalar text"),
        new("validation set without the rejected column", ml => Fit(ml, Data(ml, Good), o => o.ValidationSet = Data(ml, new NumericChosen())),
            typeof(ArgumentOutOfRangeException), "validation set", "Column 'Chosen'"),
        // Cells: skipped and counted; nothing left is an error naming the cause.
        new("null chosen cells only", ml => Fit(ml, Data(ml, P("a", null, "x"), P("b", null, "y"))), typeof(InvalidOperationException),
            "nothing to train on", "all 2 rows", "empty chosen or rejected", "first at row 0"),
        new("empty rejected cells only", ml => Fit(ml, Data(ml, P("a", "x", ""), P("b", "y", ""))), typeof(InvalidOperationException),
            "nothing to train on", "empty chosen or rejected"),
        new("chosen equals rejected only", ml => Fit(ml, Data(ml, P("a", "same", "same"), P("b", "also", "also"))), typeof(InvalidOperationException),
            "nothing to train on", "chosen and rejected are identical", "first at row 0"),
        new("no rows at all", ml => Fit(ml, Data(ml, Array.Empty<Pair>())), typeof(InvalidOperationException), "nothing to train on", "all 0 rows"),
        new("bad cells skipped and counted among good ones", ml => FitAndGenerate(ml, Data(ml, Good, P("p", null, "x"), P("p", "same", "same"), P(null, " a", " b"))),
            null, "1 of 4 pairs skipped: empty chosen or rejected response (first at row 1)", "1 of 4 pairs skipped: chosen and rejected are identical (first at row 2)"),
        // Lengths.
        new("prompt alone longer than MaxLength", ml => Fit(ml, Data(ml, Good, P(string.Join(" ", Enumerable.Repeat("Once upon a time", 40)), " yes.", " no."))),
            typeof(ArgumentException), "Row 1", "prompt alone is longer than MaxLength (64 tokens)"),
        new("every pair dropped by truncation", ml => Fit(ml, Data(ml,
                P("Once", string.Concat(Enumerable.Repeat(" the cat sat", 30)) + " Sue.", string.Concat(Enumerable.Repeat(" the cat sat", 30)) + " Lily."),
                P("Then", string.Concat(Enumerable.Repeat(" a dog ran", 30)) + " home.", string.Concat(Enumerable.Repeat(" a dog ran", 30)) + " away."))),
            typeof(InvalidOperationException), "nothing to train on", "identical after truncation"),
        new("MaxLength beyond the model context", ml => Fit(ml, Data(ml, Good), o => { o.MaxLength = 4096; o.MaxPromptLength = 16; }),
            typeof(ArgumentOutOfRangeException), "MaxLength = 4096", "512 positions"),
        // Options, refused when the estimator is created.
        Option("negative lambda", o => o.Lambda = -0.5, typeof(ArgumentOutOfRangeException), "OrpoOptions.Lambda = -0.5"),
        Option("NaN lambda", o => o.Lambda = double.NaN, typeof(ArgumentOutOfRangeException), "OrpoOptions.Lambda = NaN"),
        Option("negative learning rate", o => o.LearningRate = -1e-3, typeof(ArgumentOutOfRangeException), "OrpoOptions.LearningRate"),
        Option("NaN learning rate", o => o.LearningRate = double.NaN, typeof(ArgumentOutOfRangeException), "OrpoOptions.LearningRate = NaN"),
        Option("infinite learning rate", o => o.LearningRate = double.PositiveInfinity, typeof(ArgumentOutOfRangeException), "OrpoOptions.LearningRate"),
        Option("batch size 0", o => o.BatchSize = 0, typeof(ArgumentOutOfRangeException), "OrpoOptions.BatchSize = 0"),
        Option("gradient accumulation 0", o => o.GradientAccumulationSteps = 0, typeof(ArgumentOutOfRangeException), "OrpoOptions.GradientAccumulationSteps = 0"),
        Option("MaxPromptLength equal to MaxLength", o => { o.MaxLength = 32; o.MaxPromptLength = 32; }, typeof(ArgumentOutOfRangeException),
            "OrpoOptions.MaxPromptLength = 32", "smaller than MaxLength (32)"),
        Option("MaxPromptLength above MaxLength", o => { o.MaxLength = 32; o.MaxPromptLength = 100; }, typeof(ArgumentOutOfRangeException),
            "OrpoOptions.MaxPromptLength = 100"),
        Option("undefined precision", o => o.Precision = (OrpoPrecision)7, typeof(ArgumentOutOfRangeException), "OrpoOptions.Precision = 7", "Float32 or BFloat16"),
        Option("unknown device", o => o.Device = "tpu:0", typeof(ArgumentException), "Device 'tpu:0'", "\"cpu\""),
        Option("template without {prompt}", o => o.PromptTemplate = "<|user|>\n<|assistant|>\n", typeof(ArgumentException), "PromptTemplate", "{prompt}"),
        Option("empty model path", o => o.BaseModelPath = " ", typeof(ArgumentException), "BaseModelPath"),
        Option("negative generation temperature", o => o.Generation = new GenerationOptions { Temperature = -1 }, typeof(ArgumentOutOfRangeException), "Temperature"),
        // Text.
        new("lone high surrogate in chosen", ml => Fit(ml, Data(ml, Good, P("p", "ok \uD800 broken", "fine"))), typeof(ArgumentException),
            "Row 1, column 'Chosen'", "unpaired UTF-16 surrogate at character 3"),
        new("lone low surrogate in prompt", ml => Fit(ml, Data(ml, P("\uDC00", " a", " b"))), typeof(ArgumentException), "Row 0, column 'Prompt'", "surrogate"),
        // Decision: control characters are ordinary text (the tokenizer maps them to byte/unknown pieces) and train.
        new("control characters train", ml => FitAndGenerate(ml, Data(ml, Good, P("bell\a\0 nul", " esc\u001b[0m and\ttab", " del\u007f and \u0085next"))), null),
        // Model files.
        new("missing model path", ml => Fit(ml, Data(ml, Good), o => o.BaseModelPath = "/nonexistent/orpo-model"), typeof(FileNotFoundException),
            "'/nonexistent/orpo-model'"),
        new("model file that is not a checkpoint", ml => Fit(ml, Data(ml, Good), o => o.BaseModelPath = GarbageFile()), typeof(InvalidDataException),
            "garbage.bin", "invalid llama2.c checkpoint"),
        new("model folder without weights", ml => Fit(ml, Data(ml, Good), o => o.BaseModelPath = FolderWithConfigOnly()), typeof(FileNotFoundException),
            "model.safetensors"),
        new("unreadable tokenizer path", ml => Fit(ml, Data(ml, Good), o => o.TokenizerPath = "/nonexistent/tokenizer.model"), typeof(FileNotFoundException),
            "'/nonexistent/tokenizer.model'"),
        new("tokenizer ids beyond the model vocabulary", ml => Fit(ml, Data(ml, Good), o => o.BaseModelPath = SmallVocabularyModel.Value), typeof(InvalidDataException),
            "ids up to 511", "only 256 entries"),
        new("model vocabulary larger than the tokenizer's", ml => FitAndGenerate(ml, Data(ml, Good), o => o.BaseModelPath = LargeVocabularyModel.Value), null),
    ];

    public static IEnumerable<object[]> CaseNames => Cases.Select(c => new object[] { c.Name });

    [TestMethod]
    [DynamicData(nameof(CaseNames))]
    public void BadInputFailsClearly(string name)
    {
        var c = Cases.Single(x => x.Name == name);
        int index = Cases.ToList().IndexOf(c) + 1;
        var ml = new MLContext(seed: 1);
        var log = new List<string>();
        ml.Log += (_, e) => { lock (log) log.Add(e.Message); };
        Exception? thrown = null;
        try
        {
            (c.Act(ml) as IDisposable)?.Dispose();
        }
        catch (Exception e)
        {
            thrown = e;
        }
        Console.WriteLine($"bad-input case {index} of {Cases.Count}: {name} -> {(thrown is null ? "no exception" : $"{thrown.GetType().Name}: {thrown.Message}")}");
        if (c.Expected is null)
        {
            Assert.IsNull(thrown, $"{name}: expected success, got {thrown}");
            string text;
            lock (log) text = string.Join("\n", log);
            foreach (string part in c.MessageParts) StringAssert.Contains(text, part, $"{name}: the log must report it");
            return;
        }
        Assert.IsNotNull(thrown, $"{name}: expected {c.Expected.Name}");
        Assert.AreEqual(c.Expected, thrown.GetType(), $"{name}: {thrown}");
        foreach (string part in c.MessageParts) StringAssert.Contains(thrown.Message, part, $"{name}: the message must name the cause");
    }

    [TestMethod]
    public void MatrixCountsItsCases()
    {
        Console.WriteLine($"bad-input matrix: {Cases.Count} cases ({Cases.Count(c => c.Expected is not null)} expect a specific exception, " +
                          $"{Cases.Count(c => c.Expected is null)} expect success with the decision checked)");
        Assert.IsGreaterThanOrEqualTo(30, Cases.Count);
        Assert.AreEqual(Cases.Count, Cases.Select(c => c.Name).Distinct().Count());
    }

    private static string GarbageFile()
    {
        string path = Path.Combine(TestAssets.NewTempDirectory("orpo-bad"), "garbage.bin");
        File.WriteAllBytes(path, Enumerable.Range(0, 1000).Select(i => (byte)(i * 37)).ToArray());
        return path;
    }

    private static string FolderWithConfigOnly()
    {
        string dir = TestAssets.NewTempDirectory("orpo-bad");
        File.Copy(Path.Combine(TestAssets.Stories260KHf, "config.json"), Path.Combine(dir, "config.json"));
        return dir;
    }
}
