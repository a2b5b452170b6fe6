using System.Buffers.Binary;
using System.Text.Json;

namespace Microsoft.ML.Orpo.ModelFiles;

/// <summary>One tensor described by a safetensors header.</summary>
/// <param name="Name">The tensor name.</param>
/// <param name="DType">The stored element type.</param>
/// <param name="Shape">The dimensions (empty for a scalar).</param>
/// <param name="Begin">Start of the data, relative to the data buffer.</param>
/// <param name="End">End (exclusive) of the data, relative to the data buffer.</param>
internal sealed record SafeTensorsEntry(string Name, SafeTensorsDType DType, long[] Shape, long Begin, long End)
{
    /// <summary>Byte length of the data.</summary>
    public long ByteLength => End - Begin;
}

/// <summary>
/// A parsed and fully validated safetensors header: every check that protects the reader happens here, before any
/// tensor is allocated. Entries are ordered by data offset.
/// </summary>
internal sealed class SafeTensorsHeader
{
    /// <summary>Largest header accepted (the reference implementation uses the same 100 MB bound).</summary>
    public const long MaxHeaderLength = 100_000_000;

    private SafeTensorsHeader(IReadOnlyList<SafeTensorsEntry> entries, IReadOnlyDictionary<string, string> metadata, long dataStart)
    {
        Entries = entries;
        Metadata = metadata;
        DataStart = dataStart;
    }

    /// <summary>The tensors, ordered by data offset.</summary>
    public IReadOnlyList<SafeTensorsEntry> Entries { get; }

    /// <summary>The <c>__metadata__</c> map (empty when absent).</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    /// <summary>Absolute position of the data buffer in the source (8 + header length).</summary>
    public long DataStart { get; }

    /// <summary>
    /// Reads and validates the header at the current position of <paramref name="stream"/>, which must be seekable and
    /// hold exactly one safetensors file from that position to its end.
    /// </summary>
    public static SafeTensorsHeader Read(Stream stream, string source)
    {
        long start = stream.Position;
        long total = stream.Length - start;
        if (total < 8)
            throw Invalid(source, $"the file is {total} bytes long, too short to hold the 8-byte header length.");
        Span<byte> prefix = stackalloc byte[8];
        stream.ReadExactly(prefix);
        ulong headerLength = BinaryPrimitives.ReadUInt64LittleEndian(prefix);
        if (headerLength < 2)
            throw Invalid(source, $"header length {headerLength} is too small (at least 2 bytes, '{{}}').");
        if (headerLength > MaxHeaderLength)
            throw Invalid(source, $"header length {headerLength} exceeds the {MaxHeaderLength}-byte limit.");
        if (headerLength > (ulong)(total - 8))
            throw Invalid(source, $"header length {headerLength} is larger than the {total - 8} bytes after the length prefix (truncated file?).");

        byte[] json = GC.AllocateUninitializedArray<byte>((int)headerLength);
        stream.ReadExactly(json);
        long bufferLength = total - 8 - (long)headerLength;
        return Parse(json, bufferLength, start + 8 + (long)headerLength, source);
    }

    private static SafeTensorsHeader Parse(byte[] json, long bufferLength, long dataStart, string source)
    {
        // JsonDocument checks string contents only when they are read; invalid UTF-8 must be a format error up front.
        if (!System.Text.Unicode.Utf8.IsValid(json))
            throw Invalid(source, "the header is not valid UTF-8.");
        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(json, new JsonDocumentOptions { MaxDepth = 8 });
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{source}: the safetensors header is not valid JSON ({e.Message}).", e);
        }
        using (document)
        {
            JsonElement root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
                throw Invalid(source, $"the header must be a JSON object, found {root.ValueKind}.");

            var entries = new List<SafeTensorsEntry>();
            var names = new HashSet<string>(StringComparer.Ordinal);
            var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
            bool sawMetadata = false;
            foreach (JsonProperty property in root.EnumerateObject())
            {
                if (property.Name == "__metadata__")
                {
                    if (sawMetadata) throw Invalid(source, "'__metadata__' appears twice.");
                    sawMetadata = true;
                    ParseMetadata(property.Value, metadata, source);
                    continue;
                }
                if (!names.Add(property.Name))
                    throw Invalid(source, $"tensor '{property.Name}' appears more than once in the header.");
                entries.Add(ParseEntry(property.Name, property.Value, bufferLength, source));
            }
            CheckCoverage(entries, bufferLength, source);
            return new SafeTensorsHeader(entries, metadata, dataStart);
        }
    }

    private static void ParseMetadata(JsonElement value, Dictionary<string, string> metadata, string source)
    {
        if (value.ValueKind != JsonValueKind.Object)
            throw Invalid(source, "'__metadata__' must be an object of strings.");
        foreach (JsonProperty item in value.EnumerateObject())
        {
            if (item.Value.ValueKind != JsonValueKind.String)
                throw Invalid(source, $"'__metadata__' value '{item.Name}' must be a string.");
            if (!metadata.TryAdd(item.Name, item.Value.GetString()!))
                throw Invalid(source, $"'__metadata__' key '{item.Name}' appears twice.");
        }
    }

    private static SafeTensorsEntry ParseEntry(string name, JsonElement value, long bufferLength, string source)
    {
        string where = $"tensor '{name}'";
        if (name.Length == 0) throw Invalid(source, "a tensor has an empty name.");
        if (value.ValueKind != JsonValueKind.Object)
            throw Invalid(source, $"{where}: the entry must be an object with dtype, shape and data_offsets.");
        if (!value.TryGetProperty("dtype", out JsonElement dtypeElement) || dtypeElement.ValueKind != JsonValueKind.String)
            throw Invalid(source, $"{where}: 'dtype' is missing or not a string.");
        string dtypeName = dtypeElement.GetString()!;
        if (!SafeTensorsDTypes.TryParse(dtypeName, out SafeTensorsDType dtype))
            throw Invalid(source, $"{where}: unknown or unsupported dtype '{dtypeName}' (supported: F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL).");

        if (!value.TryGetProperty("shape", out JsonElement shapeElement) || shapeElement.ValueKind != JsonValueKind.Array)
            throw Invalid(source, $"{where}: 'shape' is missing or not an array.");
        if (shapeElement.GetArrayLength() > 16)
            throw Invalid(source, $"{where}: shape has {shapeElement.GetArrayLength()} dimensions (at most 16).");
        var shape = new long[shapeElement.GetArrayLength()];
        long elements = 1;
        int i = 0;
        foreach (JsonElement dim in shapeElement.EnumerateArray())
        {
            if (dim.ValueKind != JsonValueKind.Number || !dim.TryGetInt64(out long d))
                throw Invalid(source, $"{where}: shape entry {dim.GetRawText()} is not an integer.");
            if (d < 0)
                throw Invalid(source, $"{where}: shape has a negative dimension {d}.");
            shape[i++] = d;
            try { elements = checked(elements * d); }
            catch (OverflowException)
            {
                throw Invalid(source, $"{where}: the element count of shape [{string.Join(", ", shapeElement.EnumerateArray().Select(e => e.GetRawText()))}] overflows.");
            }
        }
        long byteLength;
        try { byteLength = checked(elements * SafeTensorsDTypes.ElementSize(dtype)); }
        catch (OverflowException)
        {
            throw Invalid(source, $"{where}: the byte size of shape [{string.Join(", ", shape)}] overflows.");
        }

        if (!value.TryGetProperty("data_offsets", out JsonElement offsets) || offsets.ValueKind != JsonValueKind.Array
            || offsets.GetArrayLength() != 2)
            throw Invalid(source, $"{where}: 'data_offsets' must be an array [begin, end].");
        long begin = Offset(offsets[0]), end = Offset(offsets[1]);
        long Offset(JsonElement e) =>
            e.ValueKind == JsonValueKind.Number && e.TryGetInt64(out long v) && v >= 0
                ? v
                : throw Invalid(source, $"{where}: data offset {e.GetRawText()} is not a non-negative 64-bit integer.");
        if (end < begin)
            throw Invalid(source, $"{where}: data_offsets [{begin}, {end}] end before they begin.");
        if (end - begin != byteLength)
            throw Invalid(source, $"{where}: data_offsets [{begin}, {end}] span {end - begin} bytes but shape [{string.Join(", ", shape)}] of {dtypeName} needs {byteLength}.");
        if (end > bufferLength)
            throw Invalid(source, $"{where}: data_offsets [{begin}, {end}] run past the end of the {bufferLength}-byte data buffer (truncated file?).");
        return new SafeTensorsEntry(name, dtype, shape, begin, end);
    }

    /// <summary>The tensors must tile the data buffer exactly: no overlap, no gap, nothing after the last.</summary>
    private static void CheckCoverage(List<SafeTensorsEntry> entries, long bufferLength, string source)
    {
        entries.Sort((a, b) => a.Begin != b.Begin ? a.Begin.CompareTo(b.Begin) : a.End.CompareTo(b.End));
        long expected = 0;
        SafeTensorsEntry? previous = null;
        foreach (SafeTensorsEntry entry in entries)
        {
            if (entry.Begin < expected)
                throw Invalid(source, $"tensor '{entry.Name}' at [{entry.Begin}, {entry.End}] overlaps tensor '{previous!.Name}' at [{previous.Begin}, {previous.End}].");
            if (entry.Begin > expected)
                throw Invalid(source, previous is null
                    ? $"tensor '{entry.Name}' starts at {entry.Begin}, leaving a gap at the start of the data buffer."
                    : $"gap of {entry.Begin - expected} bytes between tensor '{previous.Name}' and tensor '{entry.Name}'.");
            expected = entry.End;
            previous = entry;
        }
        if (expected != bufferLength)
            throw Invalid(source, previous is null
                ? $"the header lists no tensors but the data buffer holds {bufferLength} bytes."
                : $"{bufferLength - expected} unaccounted bytes after the last tensor '{previous.Name}'.");
    }

    private static InvalidDataException Invalid(string source, string message) =>
        new($"{source}: invalid safetensors file: {message}");
}
