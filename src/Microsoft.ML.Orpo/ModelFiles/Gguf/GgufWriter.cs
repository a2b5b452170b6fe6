using System.Text;

namespace Microsoft.ML.Orpo.ModelFiles.Gguf;

/// <summary>One tensor of a GGUF file: its values as float32, in row-major order of <paramref name="Shape"/> (PyTorch's order,
/// outermost first), stored as <paramref name="Type"/>.</summary>
internal sealed record GgufTensor(string Name, long[] Shape, GgmlType Type, float[] Values);

/// <summary>
/// Writes the GGUF container (version 3, little-endian): the header, typed metadata, tensor infos, then the tensor data,
/// each tensor starting at a multiple of <see cref="Alignment"/> from the start of the data section. Everything is
/// collected first, so a caller can validate the whole model before a byte is written.
/// </summary>
internal sealed class GgufWriter
{
    public const int Alignment = 32;
    private const uint Magic = 0x46554747; // "GGUF" read as a little-endian uint32
    private const uint Version = 3;

    private enum ValueType : uint { UInt32 = 4, Int32 = 5, Float32 = 6, Bool = 7, String = 8, Array = 9 }

    private readonly List<(string Key, Action<BinaryWriter> Write)> metadata = [];
    private readonly HashSet<string> keys = new(StringComparer.Ordinal);
    private readonly List<GgufTensor> tensors = [];
    private readonly HashSet<string> tensorNames = new(StringComparer.Ordinal);

    public IReadOnlyList<GgufTensor> Tensors => tensors;

    public void AddString(string key, string value) => Add(key, w => { Type(w, ValueType.String); Str(w, value); });
    public void AddUInt32(string key, uint value) => Add(key, w => { Type(w, ValueType.UInt32); w.Write(value); });
    public void AddFloat32(string key, float value) => Add(key, w => { Type(w, ValueType.Float32); w.Write(value); });
    public void AddBool(string key, bool value) => Add(key, w => { Type(w, ValueType.Bool); w.Write(value); });

    public void AddStrings(string key, IReadOnlyList<string> values) =>
        AddArray(key, ValueType.String, values.Count, w => { foreach (string v in values) Str(w, v); });

    public void AddFloats(string key, IReadOnlyList<float> values) =>
        AddArray(key, ValueType.Float32, values.Count, w => { foreach (float v in values) w.Write(v); });

    public void AddInt32s(string key, IReadOnlyList<int> values) =>
        AddArray(key, ValueType.Int32, values.Count, w => { foreach (int v in values) w.Write(v); });

    public void AddTensor(GgufTensor tensor)
    {
        long count = tensor.Shape.Aggregate(1L, (a, b) => a * b);
        if (count != tensor.Values.Length)
            throw new ArgumentException($"Tensor '{tensor.Name}' has {tensor.Values.Length} values for shape {ModelWeights.FormatShape(tensor.Shape)}.");
        if (tensor.Type == GgmlType.Q8_0 && tensor.Shape[^1] % GgufQuantizer.Q8BlockSize != 0)
            throw new ArgumentException($"Tensor '{tensor.Name}': Q8_0 rows must be a multiple of {GgufQuantizer.Q8BlockSize} long.");
        if (!tensorNames.Add(tensor.Name)) throw new ArgumentException($"Tensor '{tensor.Name}' is added twice.");
        tensors.Add(tensor);
    }

    public void WriteTo(Stream stream)
    {
        using var w = new BinaryWriter(stream, Encoding.UTF8, leaveOpen: true);
        w.Write(Magic);
        w.Write(Version);
        w.Write((ulong)tensors.Count);
        w.Write((ulong)metadata.Count);
        foreach (var (key, write) in metadata)
        {
            Str(w, key);
            write(w);
        }
        long offset = 0;
        var offsets = new long[tensors.Count];
        for (int i = 0; i < tensors.Count; i++)
        {
            var t = tensors[i];
            Str(w, t.Name);
            w.Write((uint)t.Shape.Length);
            for (int d = t.Shape.Length - 1; d >= 0; d--) w.Write((ulong)t.Shape[d]); // ggml: ne[0] is the contiguous dimension
            w.Write((uint)t.Type);
            w.Write((ulong)offset);
            offsets[i] = offset;
            offset = Align(offset + GgufQuantizer.ByteCount(t.Type, t.Values.Length));
        }
        w.Flush();
        Pad(stream, Align(stream.Position) - stream.Position);
        long dataStart = stream.Position;
        for (int i = 0; i < tensors.Count; i++)
        {
            Pad(stream, dataStart + offsets[i] - stream.Position);
            GgufQuantizer.Write(stream, tensors[i].Values, tensors[i].Type);
        }
        Pad(stream, Align(stream.Position - dataStart) - (stream.Position - dataStart));
    }

    private void Add(string key, Action<BinaryWriter> write)
    {
        if (!keys.Add(key)) throw new ArgumentException($"GGUF key '{key}' is set twice.");
        metadata.Add((key, write));
    }

    private void AddArray(string key, ValueType element, int count, Action<BinaryWriter> writeItems) => Add(key, w =>
    {
        Type(w, ValueType.Array);
        Type(w, element);
        w.Write((ulong)count);
        writeItems(w);
    });

    private static void Type(BinaryWriter w, ValueType type) => w.Write((uint)type);

    private static void Str(BinaryWriter w, string value)
    {
        byte[] bytes = Encoding.UTF8.GetBytes(value);
        w.Write((ulong)bytes.Length);
        w.Write(bytes);
    }

    private static long Align(long n) => (n + Alignment - 1) / Alignment * Alignment;

    private static void Pad(Stream stream, long count)
    {
        for (long i = 0; i < count; i++) stream.WriteByte(0);
    }
}
