using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.ModelFiles;

/// <summary>The safetensors element types this library reads (names as written in the header).</summary>
internal enum SafeTensorsDType
{
    F64,
    F32,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U8,
    BOOL,
}

/// <summary>Maps safetensors dtype names to element sizes and TorchSharp scalar types.</summary>
internal static class SafeTensorsDTypes
{
    /// <summary>Parses a header dtype name; false for names this reader does not know (e.g. F8_E4M3, Q7).</summary>
    public static bool TryParse(string name, out SafeTensorsDType dtype)
    {
        switch (name)
        {
            case "F64": dtype = SafeTensorsDType.F64; return true;
            case "F32": dtype = SafeTensorsDType.F32; return true;
            case "F16": dtype = SafeTensorsDType.F16; return true;
            case "BF16": dtype = SafeTensorsDType.BF16; return true;
            case "I64": dtype = SafeTensorsDType.I64; return true;
            case "I32": dtype = SafeTensorsDType.I32; return true;
            case "I16": dtype = SafeTensorsDType.I16; return true;
            case "I8": dtype = SafeTensorsDType.I8; return true;
            case "U8": dtype = SafeTensorsDType.U8; return true;
            case "BOOL": dtype = SafeTensorsDType.BOOL; return true;
            default: dtype = default; return false;
        }
    }

    /// <summary>The header name of a dtype.</summary>
    public static string Name(SafeTensorsDType dtype) => dtype.ToString();

    /// <summary>Bytes per element.</summary>
    public static int ElementSize(SafeTensorsDType dtype) => dtype switch
    {
        SafeTensorsDType.F64 or SafeTensorsDType.I64 => 8,
        SafeTensorsDType.F32 or SafeTensorsDType.I32 => 4,
        SafeTensorsDType.F16 or SafeTensorsDType.BF16 or SafeTensorsDType.I16 => 2,
        _ => 1,
    };

    /// <summary>The TorchSharp type holding the stored bits unchanged.</summary>
    public static ScalarType ToScalarType(SafeTensorsDType dtype) => dtype switch
    {
        SafeTensorsDType.F64 => ScalarType.Float64,
        SafeTensorsDType.F32 => ScalarType.Float32,
        SafeTensorsDType.F16 => ScalarType.Float16,
        SafeTensorsDType.BF16 => ScalarType.BFloat16,
        SafeTensorsDType.I64 => ScalarType.Int64,
        SafeTensorsDType.I32 => ScalarType.Int32,
        SafeTensorsDType.I16 => ScalarType.Int16,
        SafeTensorsDType.I8 => ScalarType.Int8,
        SafeTensorsDType.U8 => ScalarType.Byte,
        _ => ScalarType.Bool,
    };

    /// <summary>The safetensors dtype for a TorchSharp type; throws for types the format cannot hold here.</summary>
    public static SafeTensorsDType FromScalarType(ScalarType type) => type switch
    {
        ScalarType.Float64 => SafeTensorsDType.F64,
        ScalarType.Float32 => SafeTensorsDType.F32,
        ScalarType.Float16 => SafeTensorsDType.F16,
        ScalarType.BFloat16 => SafeTensorsDType.BF16,
        ScalarType.Int64 => SafeTensorsDType.I64,
        ScalarType.Int32 => SafeTensorsDType.I32,
        ScalarType.Int16 => SafeTensorsDType.I16,
        ScalarType.Int8 => SafeTensorsDType.I8,
        ScalarType.Byte => SafeTensorsDType.U8,
        ScalarType.Bool => SafeTensorsDType.BOOL,
        _ => throw new NotSupportedException($"Tensors of type {type} cannot be stored in safetensors by this writer."),
    };
}
