using System.Buffers.Binary;
using System.Text;

namespace Microsoft.ML.Orpo.Tests.ModelFiles.Gguf;

/// <summary>A GGUF tensor as the file describes it: ggml dims (innermost first), ggml type, offset in the data section.</summary>
internal sealed record GgufTensorInfo(string Name, long[] Dims, uint Type, long Offset);

/// <summary>An independent, minimal GGUF v3 reader written from the format description, to check what the exporter wrote.</summary>
internal sealed class GgufReader
{
    private readonly byte[] bytes;
    private int pos;

    public GgufReader(string path)
    {
        bytes = File.ReadAllBytes(path);
        Assert.AreEqual("GGUF", Encoding.ASCII.GetString(bytes, 0, 4));
        pos = 4;
        Version = U32();
        long tensorCount = (long)U64(), kvCount = (long)U64();
        for (long i = 0; i < kvCount; i++)
        {
            string key = Str();
            Metadata.Add(key, Value(U32()));
        }
        for (long i = 0; i < tensorCount; i++)
        {
            string name = Str();
            var dims = new long[U32()];
            for (int d = 0; d < dims.Length; d++) dims[d] = (long)U64();
            Tensors.Add(name, new GgufTensorInfo(name, dims, U32(), (long)U64()));
        }
        int alignment = Metadata.TryGetValue("general.alignment", out object? a) ? (int)(uint)a : 32;
        DataStart = (pos + alignment - 1) / alignment * alignment;
    }

    public uint Version { get; }
    public Dictionary<string, object> Metadata { get; } = new(StringComparer.Ordinal);
    public Dictionary<string, GgufTensorInfo> Tensors { get; } = new(StringComparer.Ordinal);
    public long DataStart { get; }
    public long Length => bytes.Length;

    /// <summary>The tensor's values as float32 (F32, F16 or Q8_0 dequantised).</summary>
    public float[] Read(string name)
    {
        var t = Tensors[name];
        long count = t.Dims.Aggregate(1L, (x, y) => x * y);
        var result = new float[count];
        var data = bytes.AsSpan((int)(DataStart + t.Offset));
        for (int i = 0; i < count; i++)
        {
            result[i] = t.Type switch
            {
                0 => BinaryPrimitives.ReadSingleLittleEndian(data[(4 * i)..]),
                1 => (float)BinaryPrimitives.ReadHalfLittleEndian(data[(2 * i)..]),
                8 => (float)BinaryPrimitives.ReadHalfLittleEndian(data[(i / 32 * 34)..]) * (sbyte)data[i / 32 * 34 + 2 + i % 32],
                _ => throw new NotSupportedException($"ggml type {t.Type}"),
            };
        }
        return result;
    }

    private object Value(uint type) => type switch
    {
        0 => bytes[pos++],
        1 => (sbyte)bytes[pos++],
        4 => U32(),
        5 => (int)U32(),
        6 => BitConverter.Int32BitsToSingle((int)U32()),
        7 => bytes[pos++] != 0,
        8 => Str(),
        9 => Array(),
        10 => U64(),
        12 => BitConverter.Int64BitsToDouble((long)U64()),
        _ => throw new NotSupportedException($"GGUF value type {type}"),
    };

    private object[] Array()
    {
        uint type = U32();
        var items = new object[(long)U64()];
        for (int i = 0; i < items.Length; i++) items[i] = Value(type);
        return items;
    }

    private uint U32() { uint v = BinaryPrimitives.ReadUInt32LittleEndian(bytes.AsSpan(pos)); pos += 4; return v; }
    private ulong U64() { ulong v = BinaryPrimitives.ReadUInt64LittleEndian(bytes.AsSpan(pos)); pos += 8; return v; }

    private string Str()
    {
        int length = (int)U64();
        string s = Encoding.UTF8.GetString(bytes, pos, length);
        pos += length;
        return s;
    }
}
