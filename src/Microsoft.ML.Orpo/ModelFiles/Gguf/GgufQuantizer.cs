using System.Buffers.Binary;

namespace Microsoft.ML.Orpo.ModelFiles.Gguf;

/// <summary>ggml's tensor types this library writes (values are ggml's <c>ggml_type</c> numbers).</summary>
internal enum GgmlType : uint
{
    F32 = 0,
    F16 = 1,
    Q8_0 = 8,
}

/// <summary>Encodes float32 values as ggml F32, F16 or Q8_0 data (little-endian), the way ggml's reference
/// quantizer does: Q8_0 blocks hold 32 values as an f16 scale <c>d = max|x| / 127</c> and 32 int8 <c>round(x / d)</c>.</summary>
internal static class GgufQuantizer
{
    public const int Q8BlockSize = 32;
    private const int Q8BlockBytes = 2 + Q8BlockSize;

    public static long ByteCount(GgmlType type, long elements) => type switch
    {
        GgmlType.F32 => elements * 4,
        GgmlType.F16 => elements * 2,
        GgmlType.Q8_0 => elements / Q8BlockSize * Q8BlockBytes,
        _ => throw new ArgumentOutOfRangeException(nameof(type), type, null),
    };

    /// <summary>Writes <paramref name="values"/> in <paramref name="type"/>; Q8_0 needs a multiple of 32 values.</summary>
    public static void Write(Stream stream, ReadOnlySpan<float> values, GgmlType type)
    {
        const int chunk = 1 << 14; // values per buffered write (a multiple of the Q8_0 block)
        var buffer = new byte[ByteCount(type, chunk)];
        for (int start = 0; start < values.Length; start += chunk)
        {
            var part = values.Slice(start, Math.Min(chunk, values.Length - start));
            int written = Encode(part, type, buffer);
            stream.Write(buffer, 0, written);
        }
    }

    private static int Encode(ReadOnlySpan<float> values, GgmlType type, Span<byte> output)
    {
        switch (type)
        {
            case GgmlType.F32:
                for (int i = 0; i < values.Length; i++) BinaryPrimitives.WriteSingleLittleEndian(output[(4 * i)..], values[i]);
                return values.Length * 4;
            case GgmlType.F16:
                for (int i = 0; i < values.Length; i++) BinaryPrimitives.WriteHalfLittleEndian(output[(2 * i)..], (Half)values[i]);
                return values.Length * 2;
            case GgmlType.Q8_0:
                if (values.Length % Q8BlockSize != 0)
                    throw new ArgumentException($"Q8_0 needs a multiple of {Q8BlockSize} values, got {values.Length}.", nameof(values));
                for (int b = 0; b < values.Length / Q8BlockSize; b++)
                    EncodeQ8Block(values.Slice(b * Q8BlockSize, Q8BlockSize), output.Slice(b * Q8BlockBytes, Q8BlockBytes));
                return values.Length / Q8BlockSize * Q8BlockBytes;
            default:
                throw new ArgumentOutOfRangeException(nameof(type), type, null);
        }
    }

    private static void EncodeQ8Block(ReadOnlySpan<float> block, Span<byte> output)
    {
        float max = 0;
        foreach (float x in block) max = Math.Max(max, Math.Abs(x));
        float d = max / 127f;
        float inverse = d != 0 ? 1f / d : 0f;
        BinaryPrimitives.WriteHalfLittleEndian(output, (Half)d);
        for (int j = 0; j < Q8BlockSize; j++)
            output[2 + j] = unchecked((byte)(sbyte)MathF.Round(block[j] * inverse, MidpointRounding.AwayFromZero));
    }
}
