using System.IO.Compression;
using Microsoft.ML.Data;
using Microsoft.ML.Orpo.MlNet;
using static Microsoft.ML.Orpo.Tests.MlNet.ModelZipTestSupport;

namespace Microsoft.ML.Orpo.Tests.MlNet;

[TestClass]
public sealed class ModelZipBridgeTests
{
    [TestMethod]
    public void Transform_AddsMappedColumn_Lazily()
    {
        var ml = new MLContext(seed: 1);
        var model = new PayloadEchoTransformer(ml, "Prompt", "Response", Prefix, Blob);
        IDataView scored = model.Transform(PromptData(ml));
        Assert.AreEqual(0, model.MapCalls, "Transform must not map any row.");
        Assert.AreEqual(TextDataViewType.Instance, scored.Schema["Response"].Type);

        _ = scored.GetColumn<string>("Prompt").ToArray();
        Assert.AreEqual(0, model.MapCalls, "Reading only input columns must not map.");

        using (DataViewRowCursor cursor = scored.GetRowCursor(scored.Schema))
        {
            var getter = cursor.GetGetter<ReadOnlyMemory<char>>(scored.Schema["Response"]);
            Assert.IsTrue(cursor.MoveNext());
            ReadOnlyMemory<char> a = default, b = default;
            getter(ref a);
            getter(ref b);
            Assert.AreEqual(1, model.MapCalls, "One row read twice maps once.");
            Assert.AreEqual(ExpectedResponses()[0], a.ToString());
            Assert.AreEqual(a.ToString(), b.ToString());
        }
        CollectionAssert.AreEqual(ExpectedResponses(), Responses(model, PromptData(ml)));
    }

    [TestMethod]
    public void Save_Load_RoundTrip_SameContext()
    {
        var ml = new MLContext(seed: 1);
        string path = SaveEcho(ml);
        using (var zip = ZipFile.OpenRead(path))
            Assert.IsTrue(zip.Entries.Any(e => e.FullName.EndsWith("/" + ModelZipBridge.PayloadEntryName, StringComparison.Ordinal)),
                string.Join(", ", zip.Entries.Select(e => e.FullName)));

        ITransformer loaded = ml.Model.Load(path, out DataViewSchema schema);
        var echo = loaded as PayloadEchoTransformer ?? throw new AssertFailedException($"Loaded {loaded.GetType()}");
        Assert.AreEqual(Prefix, echo.Prefix);
        CollectionAssert.AreEqual(Blob, echo.Blob);
        Assert.AreEqual("Prompt", echo.InputColumn);
        Assert.AreEqual("Prompt", schema[0].Name);
        CollectionAssert.AreEqual(ExpectedResponses(), Responses(loaded, PromptData(ml)));
    }

    [TestMethod]
    public void Load_NewContext_AfterRegisterOrpo()
    {
        string path = SaveEcho(new MLContext(seed: 1));
        var ml = new MLContext().RegisterOrpo();
        ml.RegisterOrpo(); // idempotent
        ITransformer loaded = ml.Model.Load(path, out _);
        Assert.IsInstanceOfType<PayloadEchoTransformer>(loaded);
        CollectionAssert.AreEqual(ExpectedResponses(), Responses(loaded, PromptData(ml)));
    }

    [TestMethod]
    public void Load_NewContext_WithoutRegistration_ErrorNamesTheCall()
    {
        string path = SaveEcho(new MLContext(seed: 1));
        var ml = new MLContext();
        Exception ex = Assert.Throws<Exception>(() => ml.Model.Load(path, out _));
        string messages = AllMessages(ex);
        Assert.IsNotNull(Find<InvalidOperationException>(ex), messages);
        StringAssert.Contains(messages, ModelZipBridge.RegistrationCall);

        // Registering afterwards on the same context makes the same file load.
        ml.RegisterOrpo();
        CollectionAssert.AreEqual(ExpectedResponses(), Responses(ml.Model.Load(path, out _), PromptData(ml)));
    }

    [TestMethod]
    public void Save_Load_InsideTransformerChain_AfterCopyColumns()
    {
        var ml = new MLContext(seed: 1);
        IDataView data = PromptData(ml);
        ITransformer copy = ml.Transforms.CopyColumns("Text", "Prompt").Fit(data);
        var chain = new TransformerChain<ITransformer>(copy, new PayloadEchoTransformer(ml, "Text", "Response", Prefix, Blob));
        string[] before = Responses(chain, data);
        CollectionAssert.AreEqual(ExpectedResponses(), before);

        string path = Path.Combine(Infrastructure.TestAssets.NewTempDirectory("modelzip"), "chain.zip");
        ml.Model.Save(chain, data.Schema, path);
        var ml2 = new MLContext().RegisterOrpo();
        ITransformer loaded = ml2.Model.Load(path, out _);
        var loadedChain = loaded as TransformerChain<ITransformer> ?? throw new AssertFailedException($"Loaded {loaded.GetType()}");
        Assert.IsInstanceOfType<PayloadEchoTransformer>(loadedChain.LastTransformer);
        CollectionAssert.AreEqual(before, Responses(loaded, PromptData(ml2)));

        using var engine = ml2.Model.CreatePredictionEngine<PromptRow, ResponseRow>(loaded);
        foreach (string prompt in Prompts)
            Assert.AreEqual(PayloadEchoTransformer.Expected(Prefix, Blob, prompt), engine.Predict(new PromptRow { Prompt = prompt }).Response);
    }

    [TestMethod]
    public void PredictionEngine_OnLoadedModel_SeveralEnginesInParallel()
    {
        var ml = new MLContext(seed: 1);
        ITransformer loaded = ml.Model.Load(SaveEcho(ml), out _);
        var failures = new System.Collections.Concurrent.ConcurrentBag<string>();
        Parallel.For(0, 4, worker =>
        {
            using var engine = ml.Model.CreatePredictionEngine<PromptRow, ResponseRow>(loaded);
            for (int i = 0; i < 50; i++)
            {
                string prompt = $"w{worker}-{i}";
                string got = engine.Predict(new PromptRow { Prompt = prompt }).Response;
                if (got != PayloadEchoTransformer.Expected(Prefix, Blob, prompt))
                    failures.Add($"{prompt} -> {got}");
            }
        });
        Assert.IsEmpty(failures, string.Join("; ", failures.Take(5)));
        Assert.AreEqual(200, ((PayloadEchoTransformer)loaded).MapCalls);
    }

    [TestMethod]
    public void Load_NewerFormatVersion_FailsClearly()
    {
        var ml = new MLContext(seed: 1);
        ModelZipFormat current = PayloadEchoTransformer.ZipFormat;
        string path = SaveEcho(ml, configure: m => m.WriteFormat = current with { VersionWritten = 0x00020001, VersionReadable = 0x00020001 });
        Exception ex = Assert.Throws<Exception>(() => ml.Model.Load(path, out _));
        InvalidDataException? ours = Find<InvalidDataException>(ex);
        Assert.IsNotNull(ours, AllMessages(ex));
        StringAssert.Contains(ours.Message, "newer Microsoft.ML.Orpo");
        StringAssert.Contains(ours.Message, "0x00020001");

        // A newer writer whose output stays readable by this version (VersionReadable unchanged) loads fine.
        string compatible = SaveEcho(ml, configure: m => m.WriteFormat = current with { VersionWritten = 0x00010009 });
        CollectionAssert.AreEqual(ExpectedResponses(), Responses(ml.Model.Load(compatible, out _), PromptData(ml)));
    }

    [TestMethod]
    public void Load_TruncatedZip_Throws()
    {
        var ml = new MLContext(seed: 1);
        string path = SaveEcho(ml);
        byte[] bytes = File.ReadAllBytes(path);
        foreach (int keep in new[] { bytes.Length / 2, bytes.Length - 10, 0 })
        {
            string cut = path + $".{keep}.zip";
            File.WriteAllBytes(cut, bytes[..keep]);
            Exception ex = Assert.Throws<Exception>(() => ml.Model.Load(cut, out _));
            Assert.IsFalse(string.IsNullOrWhiteSpace(ex.Message));
        }
    }

    [TestMethod]
    public void Load_TamperedPayload_FailsWithChecksumError()
    {
        var ml = new MLContext(seed: 1);
        string path = SaveEcho(ml);
        using (var zip = ZipFile.Open(path, ZipArchiveMode.Update))
        {
            ZipArchiveEntry entry = zip.Entries.Single(e => e.Name == ModelZipBridge.PayloadEntryName);
            byte[] payload;
            using (var s = entry.Open())
            using (var m = new MemoryStream())
            {
                s.CopyTo(m);
                payload = m.ToArray();
            }
            payload[^1] ^= 0x5A; // last blob byte: still parses, only the checksum can tell
            string name = entry.FullName;
            entry.Delete();
            using var w = zip.CreateEntry(name).Open();
            w.Write(payload);
        }
        Exception ex = Assert.Throws<Exception>(() => ml.Model.Load(path, out _));
        InvalidDataException? ours = Find<InvalidDataException>(ex);
        Assert.IsNotNull(ours, AllMessages(ex));
        StringAssert.Contains(ours.Message, "checksum");
    }

    [TestMethod]
    public void Bridge_BindsToThisMlNet()
    {
        CollectionAssert.Contains(MlNetVersion.Verified.ToList(), MlNetVersion.Loaded, "the tests run on a verified Microsoft.ML");
        var ml = new MLContext();
        ModelZipBridge.RegisterLoader(ml.ComponentCatalog); // binds every member by name and type
        Assert.AreSame(((Microsoft.ML.Runtime.IHostEnvironment)ml).ComponentCatalog, MlNetAccess.GetEnvironment(ml.Transforms).ComponentCatalog);
    }
}
