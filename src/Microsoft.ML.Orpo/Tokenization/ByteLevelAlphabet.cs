using System.Text;

namespace Microsoft.ML.Orpo.Tokenization;

/// <summary>
/// GPT-2's byte-to-character table: printable Latin-1 bytes stand for themselves, the other 68 bytes are
/// shifted to U+0100 and up, so every byte has a visible single-character symbol in a byte-level vocabulary.
/// </summary>
internal static class ByteLevelAlphabet
{
    private static readonly char[] ByteToChar = new char[256];
    private static readonly Dictionary<char, byte> CharToByte = new();

    public static IReadOnlyList<string> Symbols { get; } = Build();

    private static string[] Build()
    {
        var symbols = new string[256];
        int shifted = 0;
        for (int b = 0; b < 256; b++)
        {
            bool printable = b is >= '!' and <= '~' or >= 0xA1 and <= 0xAC or >= 0xAE and <= 0xFF;
            ByteToChar[b] = (char)(printable ? b : 256 + shifted++);
            CharToByte[ByteToChar[b]] = (byte)b;
            symbols[b] = ByteToChar[b].ToString();
        }
        return symbols;
    }

    /// <summary>The UTF-8 bytes of <paramref name="text"/> as symbols (lone surrogates become U+FFFD's bytes).</summary>
    public static string Encode(string text)
    {
        byte[] bytes = Encoding.UTF8.GetBytes(text);
        return string.Create(bytes.Length, bytes, (span, b) =>
        {
            for (int i = 0; i < b.Length; i++) span[i] = ByteToChar[b[i]];
        });
    }

    /// <summary>Joins tokens and reads their symbols back as UTF-8; a token with a character outside the alphabet
    /// (an added token) contributes its own UTF-8 bytes. Invalid sequences become U+FFFD, as Rust's from_utf8_lossy.</summary>
    public static string Decode(IEnumerable<string> tokens)
    {
        var bytes = new List<byte>();
        foreach (string token in tokens)
        {
            int mark = bytes.Count;
            bool symbolic = true;
            foreach (char c in token)
            {
                if (!CharToByte.TryGetValue(c, out byte b)) { symbolic = false; break; }
                bytes.Add(b);
            }
            if (symbolic) continue;
            bytes.RemoveRange(mark, bytes.Count - mark);
            bytes.AddRange(Encoding.UTF8.GetBytes(token));
        }
        return Encoding.UTF8.GetString(bytes.ToArray());
    }
}
