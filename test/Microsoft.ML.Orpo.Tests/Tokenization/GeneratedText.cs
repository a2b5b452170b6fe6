using System.Text;

namespace Microsoft.ML.Orpo.Tests.Tokenization;

/// <summary>
/// Seeded random strings for differential tokenizer tests: runs of every kind of whitespace, digits, contractions,
/// CJK, Khmer, emoji (with modifiers and joiners), code, accents (composed and combining), special-token look-alikes,
/// and strings made only of whitespace.
/// </summary>
internal static class GeneratedText
{
    private static readonly string[] Fragments =
    [
        " ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", " \n", "\t\t", "\u00a0", "\u3000", "\u2009", "\u200b",
        "0", "7", "42", "123", "2024", "3.14", "1,000", "٣", "²", "Ⅻ",
        "'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'LL", "n't", "'",
        "the", "The", "hello", "world", "Once", "upon", "a", "time", "ORPO", "tokenizer", "ſ", "İ",
        "你好", "世界", "東京", "の", "한국어", "ភាសា", "ខ្មែរ", "ไทย", "мир", "Ελλάδα", "مرحبا", "हिन्दी",
        "🙂", "👍🏽", "👨‍👩‍👧", "🏳️‍🌈", "𝐀", "𠀀", "🤖",
        "def", "(", ")", "{", "}", "=>", "==", "//", "/*", "*/", ";", "_", "__init__", "x_1", "#", "@", "$", "%", "&&", "...", "---", "\\",
        "é", "e\u0301", "ñ", "n\u0303", "ü", "Å", "ﬁ", "Ａ", "Cửa", "Việt",
        "<s>", "</s>", "<unk>", "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<think>", "<|begin_of_text|>", "<|eot_id|>", "<|", "|>", "<0x0A>", "▁",
    ];

    private static readonly string[] Whitespace = [" ", "  ", "\t", "\n", "\n\n", "\r\n", " \n", "\u00a0", "\u3000", "\u2028", "\v", "\f"];

    public static IEnumerable<string> Strings(int seed, int count)
    {
        var random = new Random(seed);
        for (int i = 0; i < count; i++)
        {
            var sb = new StringBuilder();
            bool whitespaceOnly = i % 10 == 0;
            int parts = random.Next(1, 14);
            for (int p = 0; p < parts; p++)
            {
                string[] pool = whitespaceOnly ? Whitespace : Fragments;
                sb.Append(pool[random.Next(pool.Length)]);
                if (!whitespaceOnly && random.Next(3) == 0) sb.Append(Whitespace[random.Next(Whitespace.Length)]);
            }
            yield return sb.ToString();
        }
    }
}
