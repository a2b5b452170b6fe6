namespace Microsoft.ML.Orpo.Tokenization;

/// <summary>
/// GPT-2's byte-to-character table: printable Latin-1 bytes stand for themselves, the other 68 bytes are
/// shifted to U+0100 and up, so every byte has a visible single-character symbol in a byte-level vocabulary.
/// </summary>
internal static class ByteLevelAlphabet
{
    public static IReadOnlyList<string> Symbols { get; } = Build();

    private static string[] Build()
    {
        var symbols = new string[256];
        int shifted = 0;
        for (int b = 0; b < 256; b++)
        {
            bool printable = b is >= '!' and <= '~' or >= 0xA1 and <= 0xAC or >= 0xAE and <= 0xFF;
            symbols[b] = ((char)(printable ? b : 256 + shifted++)).ToString();
        }
        return symbols;
    }
}
