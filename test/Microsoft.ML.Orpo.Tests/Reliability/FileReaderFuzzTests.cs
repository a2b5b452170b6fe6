using System.Globalization;
using System.IO.Compression;
using System.Text;
using Microsoft.ML.Data;
using Microsoft.ML.Orpo.ModelFiles;
using Microsoft.ML.Orpo.MlNet;
using Microsoft.ML.Orpo.Modeling;
using Microsoft.ML.Orpo.Tests.Infrastructure;
using Microsoft.ML.Orpo.Tests.Tokenization;
using Microsoft.ML.Orpo.Tokenization;
using Microsoft.ML.Orpo.Training;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Tests.Reliability;

/// <summary>
/// Deterministic mutation fuzzing of every file reader. Each format gets <c>ORPO_FUZZ_ITERATIONS</c> inputs (default
/// 400; <c>eng/fuzz.sh</c> runs more, with other seeds through <c>ORPO_FUZZ_SEED</c>). Every input must load or fail with
/// a clear exception (<see cref="InvalidDataException"/>, <see cref="NotSupportedException"/>, or an argument check of
/// this library); a hang, a bug-signalling exception (NullReference, IndexOutOfRange, OutOfMemory, raw JSON or native
/// errors...) or a managed allocation out of proportion to the input fails the test. What loads must also work: a
/// tokenizer encodes and decodes with ids inside its vocabulary, tensors and models are usable and disposed.
/// </summary>
[TestClass]
public sealed class FileReaderFuzzTests
{
    private static readonly LlamaConfig TinyConfig = new LlamaConfig
    {
        HiddenSize = 8, IntermediateSize = 16, NumHiddenLayers = 1, NumAttentionHeads = 2, NumKeyValueHeads = 1, HeadDim = 4,
        VocabSize = 512, MaxPositionEmbeddings = 64, RmsNormEps = 1e-5, TieWordEmbeddings = true, BosTokenId = 1, EosTokenId = 2,
        EosTokenIds = [2],
    }.Validate();

    public static int Iterations =>
        int.TryParse(Environment.GetEnvironmentVariable("ORPO_FUZZ_ITERATIONS"), NumberStyles.None, CultureInfo.InvariantCulture, out int n) && n > 0 ? n : 400;

    private static int FuzzSeed =>
        int.TryParse(Environment.GetEnvironmentVariable("ORPO_FUZZ_SEED"), NumberStyles.None, CultureInfo.InvariantCulture, out int s) ? s : 20240807;

    public static IEnumerable<object[]> Formats =>
    [
        ["safetensors-header"], ["safetensors-body"], ["llama2c-bin"], ["config-json"], ["tokenizer-json"],
        ["sentencepiece-model"], ["model-zip-payload"], ["model-zip-file"], ["model-zip-entry"],
    ];

    [TestMethod]
    [DynamicData(nameof(Formats))]
    public void EveryMutatedInputLoadsOrFailsClearly(string format)
    {
        var (seed, target, region, text, zipLevel) = Target(format);
        Func<Exception, bool> clear = zipLevel ? IsClearZipError : IsClearReaderError;
        // Readers may hold a few copies of the input plus fixed costs; nothing may scale with a number inside it.
        Func<int, long> bound = length => (4L << 20) + 256L * length;
        string? saveTo = Environment.GetEnvironmentVariable("ORPO_FUZZ_FAILURES");
        var report = MutationFuzzer.Run(format, seed, Iterations, FuzzSeed + format.Sum(c => c * 31),
            target, clear, bound, region, text, saveFailuresTo: saveTo);
        // The line CI greps: inputs per format.
        Console.WriteLine($"fuzz {format}: {report.Inputs} inputs ({report.Successes} loaded, {report.Inputs - report.Successes} rejected: " +
                          $"{string.Join(", ", report.Exceptions.Select(e => $"{e.Key} {e.Value}"))}); seed {seed.Length} bytes; " +
                          $"max managed allocation {report.MaxAllocatedBytes / 1024.0 / 1024.0:F1} MiB; {report.Elapsed.TotalSeconds:F1} s");
        if (report.Failures.Count > 0)
            Assert.Fail($"{report.Failures.Count} of {report.Inputs} {format} inputs failed badly:\n" + string.Join("\n\n", report.Failures.Take(5)));
        Assert.IsGreaterThan(0, report.Inputs - report.Successes, "the mutations must reach the checks");
    }

    /// <summary>The readers' own contract: a clear, typed error.</summary>
    private static bool IsClearReaderError(Exception e) => !MutationFuzzer.IsBugSignal(e)
        && (e is InvalidDataException or NotSupportedException || MutationFuzzer.IsOwnArgumentCheck(e));

    /// <summary>
    /// A whole zip goes through ML.NET's own zip and schema readers first. Their corrupt-file errors are
    /// InvalidOperation/Format exceptions, and a truncated schema stream inside the zip surfaces from ML.NET's
    /// BinaryLoader as a bare EndOfStreamException, which this library cannot intercept (it is ML.NET's code, before ours).
    /// </summary>
    private static bool IsClearZipError(Exception e) => IsClearReaderError(e)
        || (!MutationFuzzer.IsBugSignal(e) && e is InvalidOperationException or FormatException && e is not ObjectDisposedException)
        || (e is EndOfStreamException && FirstNonSystemFrame(e).StartsWith("at Microsoft.ML.Data.", StringComparison.Ordinal));

    private static string FirstNonSystemFrame(Exception e) =>
        (e.StackTrace ?? "").Split('\n').Select(l => l.Trim()).FirstOrDefault(l => !l.StartsWith("at System.", StringComparison.Ordinal)) ?? "";

    private static (byte[] Seed, Action<byte[]> Target, MutationFuzzer.Region? Region, bool Text, bool ZipLevel) Target(string format)
    {
        switch (format)
        {
            case "safetensors-header":
            case "safetensors-body":
            {
                byte[] seed = SafeTensorsSeed(out int dataStart);
                var region = format == "safetensors-header" ? new MutationFuzzer.Region(0, dataStart) : new MutationFuzzer.Region(dataStart, seed.Length);
                return (seed, bytes => DisposeAll(SafeTensorsReader.Read(bytes, "fuzz.safetensors")), region, format == "safetensors-header", false);
            }
            case "llama2c-bin":
            {
                string path = Path.Combine(TestAssets.NewTempDirectory("fuzz-llama2c"), "model.bin");
                return (Llama2cSeed(), bytes =>
                {
                    File.WriteAllBytes(path, bytes);
                    DisposeAll(Llama2cFile.Load(path).Weights);
                }, new MutationFuzzer.Region(0, 64), false, false);
            }
            case "config-json":
                return (File.ReadAllBytes(Path.Combine(TestAssets.Stories260KHf, "config.json")),
                    bytes => LlamaConfig.FromJson(Encoding.UTF8.GetString(bytes), "fuzz/config.json"), null, true, false);
            case "tokenizer-json":
                return (Encoding.UTF8.GetBytes(TinyBpe.Json().ToJsonString()),
                    bytes => Exercise(OrpoTokenizer.FromFiles(new Dictionary<string, byte[]> { ["tokenizer.json"] = bytes })), null, true, false);
            case "sentencepiece-model":
                return (File.ReadAllBytes(TestAssets.Stories260KTokenizer),
                    bytes => Exercise(OrpoTokenizer.FromFiles(new Dictionary<string, byte[]> { ["tokenizer.model"] = bytes })), null, false, false);
            case "model-zip-payload":
                return (PayloadSeed(), bytes =>
                {
                    using var stream = new MemoryStream(bytes, writable: false);
                    OrpoModelPayload.Read(stream, CPU).Model.Dispose();
                }, null, false, false);
            case "model-zip-file":
                return (ZipSeed(), LoadZip, null, false, true);
            case "model-zip-entry":
            {
                byte[] zip = ZipSeed();
                byte[] entry = ReadPayloadEntry(zip);
                return (entry, bytes => LoadZip(ReplacePayloadEntry(zip, bytes)), null, false, true);
            }
            default:
                throw new ArgumentOutOfRangeException(nameof(format), format, "unknown format");
        }
    }

    /// <summary>A tokenizer that loads must work: ids inside its vocabulary, decoding them succeeds.</summary>
    private static void Exercise(OrpoTokenizer tokenizer)
    {
        if (tokenizer.VocabularySize <= 0) throw new InvalidProgramException($"loaded with vocabulary size {tokenizer.VocabularySize}");
        foreach (string text in new[] { "Once upon a time, hello world 123.", "héllo wörld ✓ <|end|> <s>", "\t\u0001 \U0001F600" })
        {
            var ids = tokenizer.Encode(text);
            int bad = ids.FirstOrDefault(i => i < 0 || i >= tokenizer.VocabularySize, -1);
            if (ids.Any(i => i < 0 || i >= tokenizer.VocabularySize))
                throw new InvalidProgramException($"encoded an id {bad} outside the vocabulary of {tokenizer.VocabularySize}");
            _ = tokenizer.Decode(ids);
        }
    }

    private static void LoadZip(byte[] bytes)
    {
        var ml = new MLContext(seed: 1).RegisterOrpo();
        using var stream = new MemoryStream(bytes, writable: false);
        var model = ml.Model.Load(stream, out _);
        (model as IDisposable)?.Dispose();
    }

    private static void DisposeAll(Dictionary<string, Tensor> tensors)
    {
        foreach (var t in tensors.Values) t.Dispose();
    }

    private static byte[] SafeTensorsSeed(out int dataStart)
    {
        using var a = arange(6, dtype: ScalarType.Float32).reshape(2, 3);
        using var b = tensor(new float[] { 1.5f, -2, 3, 4e-3f, 5 });
        using var stream = new MemoryStream();
        SafeTensorsWriter.Write(stream, new Dictionary<string, Tensor> { ["layer.a"] = a, ["b"] = b });
        byte[] bytes = stream.ToArray();
        dataStart = 8 + (int)BitConverter.ToUInt64(bytes, 0);
        return bytes;
    }

    /// <summary>A tiny llama2.c v0 file: the 7-int header then fp32 arrays of the exact implied size.</summary>
    private static byte[] Llama2cSeed()
    {
        int[] header = [8, 16, 2, 2, 1, 32, 16];
        var raw = new byte[28];
        for (int i = 0; i < 7; i++) BitConverter.TryWriteBytes(raw.AsSpan(i * 4), header[i]);
        long length = Llama2cFile.ExpectedFileLength(Llama2cFile.ParseHeader(raw, "seed"), "seed");
        var bytes = new byte[length];
        raw.CopyTo(bytes, 0);
        var random = new Random(7);
        for (int i = 28; i + 4 <= bytes.Length; i += 4) BitConverter.TryWriteBytes(bytes.AsSpan(i), (float)(random.NextDouble() - 0.5));
        return bytes;
    }

    private static CausalLanguageModel TinyModel()
    {
        var weights = ModelFiles.ModelFileTestData.RandomWeights(TinyConfig, 3);
        try
        {
            var tokenizer = OrpoTokenizer.Load(TestAssets.Stories260KTokenizer, TinyConfig);
            return CausalLanguageModel.Create(TinyConfig, weights, tokenizer, CPU, "tiny");
        }
        finally
        {
            DisposeAll(weights);
        }
    }

    private static byte[] PayloadSeed()
    {
        using var model = TinyModel();
        using var stream = new MemoryStream();
        OrpoModelPayload.Write(stream, TransformerSettings.ForBaseModel(TinyConfig), model, []);
        return stream.ToArray();
    }

    private static byte[] ZipSeed()
    {
        var ml = new MLContext(seed: 1);
        using var transformer = new OrpoTransformer(ml, TinyModel(), TransformerSettings.ForBaseModel(TinyConfig), []);
        var schema = ml.Data.LoadFromEnumerable(new[] { new { Prompt = "" } }).Schema;
        using var stream = new MemoryStream();
        ml.Model.Save(transformer, schema, stream);
        return stream.ToArray();
    }

    private static ZipArchiveEntry PayloadEntry(ZipArchive archive) =>
        archive.Entries.Single(e => e.FullName.EndsWith(ModelZipBridge.PayloadEntryName, StringComparison.Ordinal));

    private static byte[] ReadPayloadEntry(byte[] zip)
    {
        using var archive = new ZipArchive(new MemoryStream(zip), ZipArchiveMode.Read);
        using var entry = PayloadEntry(archive).Open();
        using var copy = new MemoryStream();
        entry.CopyTo(copy);
        return copy.ToArray();
    }

    /// <summary>The zip with its payload entry's bytes replaced (its Model.key checksum then no longer matches, which the loader must also report).</summary>
    private static byte[] ReplacePayloadEntry(byte[] zip, byte[] payload)
    {
        var buffer = new MemoryStream();
        buffer.Write(zip);
        using (var archive = new ZipArchive(buffer, ZipArchiveMode.Update, leaveOpen: true))
        {
            var old = PayloadEntry(archive);
            string name = old.FullName;
            old.Delete();
            using var entry = archive.CreateEntry(name).Open();
            entry.Write(payload);
        }
        return buffer.ToArray();
    }
}
