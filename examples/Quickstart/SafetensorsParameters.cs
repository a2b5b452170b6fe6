using System.Buffers.Binary;
using System.Text.Json;

namespace Quickstart;

/// <summary>Counts the parameters a .safetensors file holds, from its header alone (the tensors' shapes).</summary>
internal static class SafetensorsParameters
{
    public static long Count(string path)
    {
        using var file = File.OpenRead(path);
        Span<byte> length = stackalloc byte[8];
        file.ReadExactly(length);
        var header = new byte[checked((int)BinaryPrimitives.ReadUInt64LittleEndian(length))];
        file.ReadExactly(header);
        using var json = JsonDocument.Parse(header);
        return json.RootElement.EnumerateObject()
            .Where(t => t.Name != "__metadata__")
            .Sum(t => t.Value.GetProperty("shape").EnumerateArray().Aggregate(1L, (n, d) => n * d.GetInt64()));
    }
}
