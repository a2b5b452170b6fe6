using System.Buffers.Binary;
using Microsoft.ML.Orpo.ModelFiles;
using Microsoft.ML.Orpo.Tests.Infrastructure;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Tests.ModelFiles;

[TestClass]
public sealed class SafeTensorsCorruptionTests
{
    private const string Source = "corrupt.safetensors";

    private static InvalidDataException AssertRejected(byte[] file, params string[] fragments)
    {
        using var scope = NewDisposeScope();
        var e = Assert.ThrowsExactly<InvalidDataException>(() => SafeTensorsReader.Read(file, Source));
        StringAssert.Contains(e.Message, Source, "the message names the source");
        foreach (string fragment in fragments) StringAssert.Contains(e.Message, fragment);
        return e;
    }

    private static byte[] Floats(int count) => new byte[count * 4];

    [TestMethod]
    public void HeaderLengthLargerThanFile() =>
        AssertRejected(ModelFileTestData.RawFile("{}", Floats(2), declaredHeaderLength: 1000), "header length 1000", "larger than");

    [TestMethod]
    public void HeaderLengthHuge() =>
        AssertRejected(ModelFileTestData.RawFile("{}", [], declaredHeaderLength: 1UL << 63), "9223372036854775808", "limit");

    [TestMethod]
    public void HeaderLengthTooSmall() =>
        AssertRejected(ModelFileTestData.RawFile("{}", [], declaredHeaderLength: 1), "too small");

    [TestMethod]
    public void FileShorterThanLengthPrefix() => AssertRejected([1, 2, 3], "too short");

    [TestMethod]
    public void InvalidJson() =>
        AssertRejected(ModelFileTestData.RawFile("""{"w": {"dtype": "F32", """, []), "not valid JSON");

    [TestMethod]
    public void HeaderNotAnObject() => AssertRejected(ModelFileTestData.RawFile("[1, 2]", []), "JSON object");

    [TestMethod]
    public void UnknownDType() =>
        AssertRejected(ModelFileTestData.RawFile("""{"w":{"dtype":"Q7","shape":[2],"data_offsets":[0,8]}}""", Floats(2)), "'w'", "Q7");

    [TestMethod]
    public void OffsetsPastEnd() =>
        AssertRejected(ModelFileTestData.RawFile("""{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}""", Floats(2)),
            "'w'", "past the end");

    [TestMethod]
    public void OverlappingTensors() =>
        AssertRejected(ModelFileTestData.RawFile(
            """{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}""", Floats(3)),
            "'b'", "overlaps", "'a'");

    [TestMethod]
    public void GapBetweenTensors() =>
        AssertRejected(ModelFileTestData.RawFile(
            """{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[12,20]}}""", Floats(5)),
            "gap", "'a'", "'b'");

    [TestMethod]
    public void TrailingBytesAfterLastTensor() =>
        AssertRejected(ModelFileTestData.RawFile("""{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}""", Floats(3)),
            "unaccounted", "'a'");

    [TestMethod]
    public void ShapeAndOffsetSizeMismatch() =>
        AssertRejected(ModelFileTestData.RawFile("""{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}""", Floats(2)),
            "'w'", "needs 12");

    [TestMethod]
    public void NegativeShape() =>
        AssertRejected(ModelFileTestData.RawFile("""{"w":{"dtype":"F32","shape":[-1, 2],"data_offsets":[0,8]}}""", Floats(2)),
            "'w'", "negative");

    [TestMethod]
    public void ShapeProductOverflow() =>
        AssertRejected(ModelFileTestData.RawFile(
            """{"w":{"dtype":"F32","shape":[4294967296, 4294967296],"data_offsets":[0,8]}}""", Floats(2)), "'w'", "overflows");

    [TestMethod]
    public void ByteSizeOverflowFromHugeShape() =>
        AssertRejected(ModelFileTestData.RawFile(
            """{"w":{"dtype":"F64","shape":[9223372036854775807],"data_offsets":[0,8]}}""", Floats(2)), "'w'", "overflows");

    [TestMethod]
    public void HugeShapeWithMatchingOffsetsIsStillBoundedByFile() =>
        AssertRejected(ModelFileTestData.RawFile(
            """{"w":{"dtype":"U8","shape":[1099511627776],"data_offsets":[0,1099511627776]}}""", Floats(2)), "'w'", "past the end");

    [TestMethod]
    public void DuplicateKey() =>
        AssertRejected(ModelFileTestData.RawFile(
            """{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}""", Floats(2)),
            "'w'", "more than once");

    [TestMethod]
    public void MissingFieldsAndBadTypes()
    {
        AssertRejected(ModelFileTestData.RawFile("""{"w":{"shape":[1],"data_offsets":[0,4]}}""", Floats(1)), "'w'", "dtype");
        AssertRejected(ModelFileTestData.RawFile("""{"w":{"dtype":"F32","data_offsets":[0,4]}}""", Floats(1)), "'w'", "shape");
        AssertRejected(ModelFileTestData.RawFile("""{"w":{"dtype":"F32","shape":[1]}}""", Floats(1)), "'w'", "data_offsets");
        AssertRejected(ModelFileTestData.RawFile("""{"w":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}}""", Floats(1)), "'w'", "not an integer");
        AssertRejected(ModelFileTestData.RawFile("""{"w":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}}""", Floats(1)), "'w'");
        AssertRejected(ModelFileTestData.RawFile("""{"w":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}}""", Floats(1)), "'w'");
        AssertRejected(ModelFileTestData.RawFile("""{"__metadata__":{"format":1}}""", []), "__metadata__");
    }

    [TestMethod]
    public void TruncatedFileIsRejectedByPath()
    {
        using var scope = NewDisposeScope();
        var tensors = new Dictionary<string, Tensor> { ["a.weight"] = ones(4, 4), ["b.weight"] = ones(3) };
        byte[] file = ModelFileTestData.WriteToBytes(tensors);
        string path = Path.Combine(TestAssets.NewTempDirectory(), "truncated.safetensors");
        File.WriteAllBytes(path, file[..^5]);
        var e = Assert.ThrowsExactly<InvalidDataException>(() => SafeTensorsReader.Read(path));
        StringAssert.Contains(e.Message, path);
        StringAssert.Contains(e.Message, "'b.weight'");
        StringAssert.Contains(e.Message, "truncated");

        File.WriteAllBytes(path, file[..20]);
        e = Assert.ThrowsExactly<InvalidDataException>(() => SafeTensorsReader.Read(path));
        StringAssert.Contains(e.Message, path);
        StringAssert.Contains(e.Message, "header length");
    }

    [TestMethod]
    public void ValidHandBuiltFileIsAccepted()
    {
        // Guards the corruption tests: the same builder with a consistent header loads.
        using var scope = NewDisposeScope();
        byte[] data = new byte[12];
        BinaryPrimitives.WriteSingleLittleEndian(data.AsSpan(8), 2.5f);
        var t = SafeTensorsReader.Read(ModelFileTestData.RawFile(
            """{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[],"data_offsets":[8,12]}}""", data), Source);
        Assert.AreEqual(2.5f, t["b"].item<float>());
        Assert.AreEqual(0, t["b"].shape.Length);
    }
}
