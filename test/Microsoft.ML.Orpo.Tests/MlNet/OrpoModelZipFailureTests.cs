using System.IO.Compression;
using System.Text;
using Microsoft.ML.Orpo.MlNet;
using Microsoft.ML.Orpo.Tests.Infrastructure;

namespace Microsoft.ML.Orpo.Tests.MlNet;

/// <summary>Broken model zips fail with a clear message, never a crash or a half-loaded model.</summary>
[TestClass]
public sealed class OrpoModelZipFailureTests
{
    private static (string Path, OrpoTransformer Model, MLContext Ml) SaveBaseModel()
    {
        var ml = new MLContext(seed: 1);
        var model = OrpoTransformer.FromPretrained(ml, TestAssets.Stories260KHf);
        var schema = ml.Data.LoadFromEnumerable(new[] { new OrpoPipelineTests.PromptRow() }).Schema;
        string path = Path.Combine(TestAssets.NewTempDirectory("orpo-zip"), "orpo.zip");
        ml.Model.Save(model, schema, path);
        return (path, model, ml);
    }

    private static Exception Innermost(Exception e)
    {
        while (e.InnerException is not null) e = e.InnerException;
        return e;
    }

    [TestMethod]
    public void TruncatedZipFailsClearly()
    {
        var (path, model, _) = SaveBaseModel();
        model.Dispose();
        byte[] bytes = File.ReadAllBytes(path);
        foreach (int keep in new[] { 10, bytes.Length / 3, bytes.Length - 100 })
        {
            string truncated = path + $".{keep}.zip";
            File.WriteAllBytes(truncated, bytes[..keep]);
            var e = Assert.Throws<Exception>(() => new MLContext().RegisterOrpo().Model.Load(truncated, out _));
            Console.WriteLine($"truncated to {keep} bytes: {e.GetType().Name}: {Innermost(e).Message}");
            Assert.IsTrue(e is InvalidDataException or InvalidOperationException or FormatException or IOException
                || Innermost(e) is InvalidDataException or InvalidOperationException, e.ToString());
        }
    }

    [TestMethod]
    public void TamperedPayloadIsRejectedByItsChecksum()
    {
        var (path, model, _) = SaveBaseModel();
        model.Dispose();
        using (var zip = ZipFile.Open(path, ZipArchiveMode.Update))
        {
            var entry = zip.Entries.Single(e => e.Name == ModelZipBridge.PayloadEntryName);
            using var stream = entry.Open();
            stream.Position = stream.Length / 2;
            int b = stream.ReadByte();
            stream.Position--;
            stream.WriteByte((byte)(b ^ 0x40));
        }
        var e = Assert.Throws<Exception>(() => new MLContext().RegisterOrpo().Model.Load(path, out _));
        Assert.IsInstanceOfType<InvalidDataException>(Innermost(e), e.ToString());
    }

    [TestMethod]
    public void PayloadFromANewerFormatNamesTheUpgrade()
    {
        var (_, model, _) = SaveBaseModel();
        using var buffer = new MemoryStream();
        OrpoModelPayload.Write(buffer, model.Settings, model.Model, model.TrainingHistory);
        model.Dispose();
        byte[] bytes = buffer.ToArray();
        BitConverter.GetBytes(OrpoModelPayload.FormatVersion + 1).CopyTo(bytes, 4);
        var e = Assert.ThrowsExactly<InvalidDataException>(() => OrpoModelPayload.Read(new MemoryStream(bytes), TorchSharp.torch.CPU));
        StringAssert.Contains(e.Message, "Upgrade Microsoft.ML.Orpo");
    }

    [TestMethod]
    public void WeightsThatDoNotMatchTheConfigAreRejectedNamingTheTensor()
    {
        var (_, model, _) = SaveBaseModel();
        using var buffer = new MemoryStream();
        OrpoModelPayload.Write(buffer, model.Settings, model.Model, model.TrainingHistory);
        string config = model.Model.Config.ToJson();
        model.Dispose();
        // Re-write the config section with a different MLP width, keeping every other byte.
        byte[] bytes = buffer.ToArray();
        long settingsLength = BitConverter.ToInt64(bytes, 8);
        int configAt = 16 + (int)settingsLength;
        long configLength = BitConverter.ToInt64(bytes, configAt);
        byte[] altered = Encoding.UTF8.GetBytes(config.Replace("\"intermediate_size\": 172", "\"intermediate_size\": 171", StringComparison.Ordinal));
        CollectionAssert.AreNotEqual(Encoding.UTF8.GetBytes(config), altered);
        var patched = bytes[..configAt].Concat(BitConverter.GetBytes((long)altered.Length)).Concat(altered)
            .Concat(bytes[(configAt + 8 + (int)configLength)..]).ToArray();
        var e = Assert.ThrowsExactly<InvalidDataException>(() => OrpoModelPayload.Read(new MemoryStream(patched), TorchSharp.torch.CPU));
        StringAssert.Contains(e.Message, "mlp.gate_proj.weight");
    }
}
