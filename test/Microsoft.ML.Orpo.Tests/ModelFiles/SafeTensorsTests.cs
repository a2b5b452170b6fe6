using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using Microsoft.ML.Orpo.ModelFiles;
using Microsoft.ML.Orpo.Tests.Infrastructure;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Tests.ModelFiles;

[TestClass]
public sealed class SafeTensorsTests
{
    [TestMethod]
    public void WriterSortsNamesPadsHeaderAndRoundTripsBitForBit()
    {
        using var scope = NewDisposeScope();
        using var generator = new Generator(7);
        var tensors = new Dictionary<string, Tensor>
        {
            ["zeta.weight"] = randn([3, 5], generator: generator),
            ["alpha"] = randn([7], generator: generator),
            ["empty"] = zeros([0, 4]),
            ["mid.ids"] = tensor(new long[] { 1, -2, 3 }),
        };
        byte[] file = ModelFileTestData.WriteToBytes(tensors);

        ulong headerLength = BinaryPrimitives.ReadUInt64LittleEndian(file);
        Assert.AreEqual(0UL, headerLength % 8, "header is padded to a multiple of 8");
        string header = Encoding.UTF8.GetString(file, 8, (int)headerLength);
        Assert.IsTrue(header.TrimEnd(' ').EndsWith('}') && header.Length - header.TrimEnd(' ').Length < 8, "padded with fewer than 8 spaces");
        using JsonDocument json = JsonDocument.Parse(header);
        var keys = json.RootElement.EnumerateObject().Select(p => p.Name).ToList();
        CollectionAssert.AreEqual(new[] { "__metadata__", "alpha", "empty", "mid.ids", "zeta.weight" }, keys);
        Assert.AreEqual("pt", json.RootElement.GetProperty("__metadata__").GetProperty("format").GetString());
        Assert.AreEqual("I64", json.RootElement.GetProperty("mid.ids").GetProperty("dtype").GetString());
        Assert.AreEqual("[28,28]", json.RootElement.GetProperty("empty").GetProperty("data_offsets").GetRawText());

        // Read back keeping the stored types, from bytes, a seekable stream, a non-seekable stream and a file.
        var fromBytes = SafeTensorsReader.Read(file, "mem", ScalarType.Float32);
        Assert.AreEqual(ScalarType.Float32, fromBytes["mid.ids"].dtype, "integers are converted to the requested dtype");
        CollectionAssert.AreEqual(new float[] { 1, -2, 3 }, fromBytes["mid.ids"].data<float>().ToArray());
        var floats = tensors.Where(p => p.Key != "mid.ids").ToDictionary(p => p.Key, p => p.Value);
        ModelFileTestData.AssertBitEqual(floats, fromBytes.Where(p => p.Key != "mid.ids").ToDictionary(p => p.Key, p => p.Value));

        var fromStream = SafeTensorsReader.Read(new NonSeekableStream(file), "pipe");
        ModelFileTestData.AssertBitEqual(floats, fromStream.Where(p => p.Key != "mid.ids").ToDictionary(p => p.Key, p => p.Value));

        string path = Path.Combine(TestAssets.NewTempDirectory(), "t.safetensors");
        SafeTensorsWriter.Write(path, tensors);
        CollectionAssert.AreEqual(file, File.ReadAllBytes(path), "file and stream writers produce identical bytes");
        Assert.AreEqual(1, Directory.GetFiles(Path.GetDirectoryName(path)!).Length, "no temporary file left behind");
        var fromFile = SafeTensorsReader.Read(path, ScalarType.Int64);
        CollectionAssert.AreEqual(new long[] { 1, -2, 3 }, fromFile["mid.ids"].data<long>().ToArray());
    }

    [TestMethod]
    public void Float16ValuesConvertExactly()
    {
        using var scope = NewDisposeScope();
        // 1.0, -2.0, 0.5, 65504 (max), 2^-24 (smallest subnormal), -0.0
        ushort[] bits = [0x3C00, 0xC000, 0x3800, 0x7BFF, 0x0001, 0x8000];
        float[] expected = [1f, -2f, 0.5f, 65504f, MathF.Pow(2, -24), -0f];
        byte[] data = bits.SelectMany(b => BitConverter.GetBytes(b)).ToArray();
        byte[] file = ModelFileTestData.RawFile("""{"h":{"dtype":"F16","shape":[2,3],"data_offsets":[0,12]}}""", data);
        Tensor t = SafeTensorsReader.Read(file, "f16")["h"];
        Assert.AreEqual(ScalarType.Float32, t.dtype);
        CollectionAssert.AreEqual(new long[] { 2, 3 }, t.shape);
        float[] actual = t.data<float>().ToArray();
        for (int i = 0; i < expected.Length; i++)
            Assert.AreEqual(BitConverter.SingleToInt32Bits(expected[i]), BitConverter.SingleToInt32Bits(actual[i]), $"element {i}");
    }

    [TestMethod]
    public void BFloat16ValuesConvertExactly()
    {
        using var scope = NewDisposeScope();
        // 1.0, -2.0, 3.140625, 3.3895314e38 (max finite), 2^-133 (subnormal), 1.5
        ushort[] bits = [0x3F80, 0xC000, 0x4049, 0x7F7F, 0x0001, 0x3FC0];
        byte[] data = bits.SelectMany(b => BitConverter.GetBytes(b)).ToArray();
        byte[] file = ModelFileTestData.RawFile("""{"b":{"dtype":"BF16","shape":[6],"data_offsets":[0,12]}}""", data);
        float[] actual = SafeTensorsReader.Read(file, "bf16")["b"].data<float>().ToArray();
        Assert.AreEqual(1f, actual[0]);
        Assert.AreEqual(-2f, actual[1]);
        Assert.AreEqual(3.140625f, actual[2]);
        Assert.AreEqual(3.3895314e38f, actual[3]);
        Assert.AreEqual(MathF.Pow(2, -133), actual[4]);
        Assert.AreEqual(1.5f, actual[5]);
        for (int i = 0; i < bits.Length; i++)
            Assert.AreEqual(bits[i] << 16, BitConverter.SingleToInt32Bits(actual[i]), $"BF16 is the top half of the float32 ({i})");
    }

    [TestMethod]
    public void HalfPrecisionStorageRoundsToNearest()
    {
        using var scope = NewDisposeScope();
        var tensors = new Dictionary<string, Tensor> { ["w"] = tensor(new float[] { 0.1f, 1f, -3.3f, 1000.7f }) };
        foreach (var (storage, name) in new[] { (SafeTensorsDType.F16, "F16"), (SafeTensorsDType.BF16, "BF16") })
        {
            byte[] file = ModelFileTestData.WriteToBytes(tensors, storage);
            StringAssert.Contains(Encoding.UTF8.GetString(file), $"\"dtype\":\"{name}\"");
            Assert.AreEqual(8 + (int)BinaryPrimitives.ReadUInt64LittleEndian(file) + 4 * 2, file.Length, "2 bytes per element");
            float[] back = SafeTensorsReader.Read(file, name)["w"].data<float>().ToArray();
            float[] want = storage == SafeTensorsDType.F16
                ? [(float)(Half)0.1f, 1f, (float)(Half)(-3.3f), (float)(Half)1000.7f]
                : [0.10009765625f, 1f, -3.296875f, 1000f];
            CollectionAssert.AreEqual(want, back, name);
        }
    }

    [TestMethod]
    public void ReadsHuggingFaceStories260KFile()
    {
        using var scope = NewDisposeScope();
        string path = Path.Combine(TestAssets.Stories260KHf, "model.safetensors");
        SafeTensorsHeader header = SafeTensorsReader.ReadHeader(path);
        Assert.AreEqual(47, header.Entries.Count);
        Assert.AreEqual("pt", header.Metadata["format"]);
        Assert.IsTrue(header.Entries.All(e => e.DType == SafeTensorsDType.F32));
        var weights = SafeTensorsReader.Read(path);
        Assert.AreEqual(47, weights.Count);
        Assert.AreEqual(260_032L, weights.Values.Sum(t => t.NumberOfElements));
    }

    /// <summary>A read-only stream that cannot seek (as a network or pipe stream).</summary>
    private sealed class NonSeekableStream(byte[] data) : Stream
    {
        private readonly MemoryStream _inner = new(data, writable: false);
        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => false;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
        public override void Flush() { }
        public override int Read(byte[] buffer, int offset, int count) => _inner.Read(buffer, offset, count);
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    }
}
