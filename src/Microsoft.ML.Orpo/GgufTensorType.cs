namespace Microsoft.ML.Orpo;

/// <summary>How <see cref="OrpoTransformer.SaveGguf"/> stores the matrices of a GGUF file. Norm weights and other
/// 1-D tensors stay 32-bit float in every type, as llama.cpp's own converter writes them.</summary>
public enum GgufTensorType
{
    /// <summary>32-bit float: bit-exact weights.</summary>
    F32,
    /// <summary>16-bit float (half the size of F32).</summary>
    F16,
    /// <summary>8-bit blocks of 32 values with a 16-bit float scale (about a quarter of F32). A matrix whose rows are
    /// not a multiple of 32 long is written as F16, as llama.cpp's converter does.</summary>
    Q8_0,
}
