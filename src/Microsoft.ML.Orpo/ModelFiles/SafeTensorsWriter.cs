using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.ModelFiles;

/// <summary>
/// Writes tensors as a safetensors file: names sorted ordinally, data laid out in that order, the header padded with
/// spaces to a multiple of 8 bytes, and <c>__metadata__ = {"format": "pt"}</c> (plus any extra metadata given).
/// </summary>
internal static class SafeTensorsWriter
{
    /// <summary>Writes <paramref name="tensors"/> to <paramref name="path"/> through a temporary file renamed into place.</summary>
    /// <param name="path">Target file.</param>
    /// <param name="tensors">The tensors by name.</param>
    /// <param name="storage">Stored element type for floating-point tensors (F32, F16 or BF16); other tensors keep their type.</param>
    /// <param name="metadata">Extra <c>__metadata__</c> entries.</param>
    public static void Write(string path, IReadOnlyDictionary<string, Tensor> tensors, SafeTensorsDType storage = SafeTensorsDType.F32,
        IReadOnlyDictionary<string, string>? metadata = null)
    {
        ArgumentNullException.ThrowIfNull(tensors);
        AtomicFile.Write(path, stream => Write(stream, tensors, storage, metadata));
    }

    /// <summary>Writes <paramref name="tensors"/> to <paramref name="stream"/> at its current position.</summary>
    public static void Write(Stream stream, IReadOnlyDictionary<string, Tensor> tensors, SafeTensorsDType storage = SafeTensorsDType.F32,
        IReadOnlyDictionary<string, string>? metadata = null)
    {
        ArgumentNullException.ThrowIfNull(stream);
        ArgumentNullException.ThrowIfNull(tensors);
        if (storage is not (SafeTensorsDType.F32 or SafeTensorsDType.F16 or SafeTensorsDType.BF16))
            throw new ArgumentException($"Floating-point storage must be F32, F16 or BF16, not {storage}.", nameof(storage));
        if (!BitConverter.IsLittleEndian)
            throw new PlatformNotSupportedException("safetensors data is little-endian; big-endian hosts are not supported.");

        string[] names = tensors.Keys.OrderBy(n => n, StringComparer.Ordinal).ToArray();
        var dtypes = new SafeTensorsDType[names.Length];
        byte[] header = BuildHeader(names, tensors, storage, metadata, dtypes);

        Span<byte> prefix = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(prefix, (ulong)header.Length);
        stream.Write(prefix);
        stream.Write(header);
        for (int i = 0; i < names.Length; i++)
        {
            using var scope = NewDisposeScope();
            Tensor t = tensors[names[i]].detach().cpu().to_type(SafeTensorsDTypes.ToScalarType(dtypes[i])).contiguous();
            if (t.NumberOfElements > 0) stream.Write(t.bytes);
        }
    }

    private static byte[] BuildHeader(string[] names, IReadOnlyDictionary<string, Tensor> tensors, SafeTensorsDType storage,
        IReadOnlyDictionary<string, string>? metadata, SafeTensorsDType[] dtypes)
    {
        using var buffer = new MemoryStream();
        using (var json = new Utf8JsonWriter(buffer))
        {
            json.WriteStartObject();
            json.WriteStartObject("__metadata__");
            json.WriteString("format", "pt");
            if (metadata is not null)
                foreach (var (key, value) in metadata.OrderBy(p => p.Key, StringComparer.Ordinal))
                    if (key != "format") json.WriteString(key, value);
            json.WriteEndObject();

            long offset = 0;
            for (int i = 0; i < names.Length; i++)
            {
                if (names[i].Length == 0 || names[i] == "__metadata__")
                    throw new ArgumentException($"'{names[i]}' is not a valid tensor name.", nameof(tensors));
                Tensor t = tensors[names[i]] ?? throw new ArgumentException($"Tensor '{names[i]}' is null.", nameof(tensors));
                dtypes[i] = t.is_floating_point() ? storage : SafeTensorsDTypes.FromScalarType(t.dtype);
                long bytes = checked(t.NumberOfElements * SafeTensorsDTypes.ElementSize(dtypes[i]));
                json.WriteStartObject(names[i]);
                json.WriteString("dtype", SafeTensorsDTypes.Name(dtypes[i]));
                json.WriteStartArray("shape");
                foreach (long d in t.shape) json.WriteNumberValue(d);
                json.WriteEndArray();
                json.WriteStartArray("data_offsets");
                json.WriteNumberValue(offset);
                json.WriteNumberValue(offset + bytes);
                json.WriteEndArray();
                json.WriteEndObject();
                offset += bytes;
            }
            json.WriteEndObject();
        }
        int padded = (int)((buffer.Length + 7) / 8 * 8);
        while (buffer.Length < padded) buffer.WriteByte((byte)' ');
        return buffer.ToArray();
    }
}
