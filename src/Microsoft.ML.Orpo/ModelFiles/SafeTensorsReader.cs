using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.ModelFiles;

/// <summary>
/// Reads safetensors files into CPU tensors. The whole header is validated (<see cref="SafeTensorsHeader"/>) before any
/// tensor memory is allocated, and every allocation is bounded by the real size of the source.
/// </summary>
internal static class SafeTensorsReader
{
    /// <summary>Reads every tensor of the file at <paramref name="path"/>, converted to <paramref name="dtype"/>.</summary>
    public static Dictionary<string, Tensor> Read(string path, ScalarType dtype = ScalarType.Float32)
    {
        using FileStream stream = OpenRead(path);
        return Read(stream, path, dtype);
    }

    /// <summary>Reads every tensor of an in-memory safetensors file.</summary>
    /// <param name="bytes">The file contents.</param>
    /// <param name="source">A label for error messages.</param>
    /// <param name="dtype">The type of the returned tensors.</param>
    public static Dictionary<string, Tensor> Read(byte[] bytes, string source, ScalarType dtype = ScalarType.Float32)
    {
        ArgumentNullException.ThrowIfNull(bytes);
        using var stream = new MemoryStream(bytes, writable: false);
        return Read(stream, source, dtype);
    }

    /// <summary>
    /// Reads every tensor from <paramref name="stream"/>, from its current position to its end. A non-seekable stream is
    /// first copied into memory (the copy is sized by the bytes actually present, never by the header).
    /// </summary>
    public static Dictionary<string, Tensor> Read(Stream stream, string source, ScalarType dtype = ScalarType.Float32)
    {
        ArgumentNullException.ThrowIfNull(stream);
        if (!stream.CanSeek)
        {
            using var copy = new MemoryStream();
            stream.CopyTo(copy);
            copy.Position = 0;
            return Read(copy, source, dtype);
        }
        SafeTensorsHeader header = ReadHeader(stream, source);
        return ReadTensors(stream, header, source, dtype, names: null);
    }

    /// <summary>Reads and validates only the header of the file at <paramref name="path"/>.</summary>
    public static SafeTensorsHeader ReadHeader(string path)
    {
        using FileStream stream = OpenRead(path);
        return ReadHeader(stream, path);
    }

    /// <summary>Reads the tensors of an already validated header; <paramref name="names"/> limits which (null: all).</summary>
    public static Dictionary<string, Tensor> ReadTensors(Stream stream, SafeTensorsHeader header, string source, ScalarType dtype,
        IReadOnlySet<string>? names)
    {
        var result = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        try
        {
            foreach (SafeTensorsEntry entry in header.Entries)
            {
                if (names is not null && !names.Contains(entry.Name)) continue;
                result.Add(entry.Name, ReadTensor(stream, header.DataStart, entry, source, dtype));
            }
            return result;
        }
        catch
        {
            foreach (Tensor t in result.Values) t.Dispose();
            throw;
        }
    }

    private static SafeTensorsHeader ReadHeader(Stream stream, string source)
    {
        try
        {
            return SafeTensorsHeader.Read(stream, source);
        }
        catch (EndOfStreamException e)
        {
            throw new InvalidDataException($"{source}: invalid safetensors file: unexpected end of file in the header.", e);
        }
    }

    /// <summary>One tensor of a validated header, read straight into the tensor's memory, then converted to <paramref name="dtype"/>.</summary>
    internal static Tensor ReadTensor(Stream stream, long dataStart, SafeTensorsEntry entry, string source, ScalarType dtype)
    {
        if (!BitConverter.IsLittleEndian)
            throw new PlatformNotSupportedException("safetensors data is little-endian; big-endian hosts are not supported.");
        // Sizes here were checked against the real source length by the header validation.
        if (entry.ByteLength > Array.MaxLength)
            throw new InvalidDataException(
                $"{source}: tensor '{entry.Name}' holds {entry.ByteLength} bytes, more than one read of this loader supports ({Array.MaxLength}).");
        using var scope = NewDisposeScope();
        Tensor raw = empty(entry.Shape, SafeTensorsDTypes.ToScalarType(entry.DType));
        if (entry.ByteLength > 0)
        {
            stream.Position = dataStart + entry.Begin;
            try
            {
                stream.ReadExactly(raw.bytes); // no managed copy of the data: a model's worth of it would sit in the GC heap
            }
            catch (EndOfStreamException e)
            {
                throw new InvalidDataException($"{source}: tensor '{entry.Name}': unexpected end of file.", e);
            }
        }
        Tensor result = raw.dtype == dtype ? raw : raw.to_type(dtype);
        return result.MoveToOuterDisposeScope();
    }

    private static FileStream OpenRead(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (!File.Exists(path)) throw new FileNotFoundException($"safetensors file '{path}' does not exist.", path);
        return new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize: 1 << 16);
    }
}
