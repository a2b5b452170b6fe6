using System.Globalization;
using System.Text;

namespace Microsoft.ML.Orpo.Embeddings;

/// <summary>
/// The basic step of Hugging Face's uncased BERT tokenizer (clean, space out CJK, lower-case, strip accents, split on
/// whitespace and punctuation), giving the words that WordPiece then splits. Microsoft.ML.Tokenizers 3.0.0's own basic
/// step differs from it: it drops symbols and emoji (which BERT maps to [UNK], "=" included) and deletes tabs and
/// newlines instead of treating them as spaces, gluing the words around them.
/// </summary>
internal static class BertBasicTokenizer
{
    public static List<string> Split(string text)
    {
        var spaced = new StringBuilder(text.Length + 16);
        foreach (var rune in text.EnumerateRunes())
        {
            if (rune.Value is 0 or 0xFFFD || IsControl(rune)) continue;
            if (IsWhitespace(rune)) spaced.Append(' ');
            else if (IsCjk(rune.Value)) spaced.Append(' ').Append(rune.ToString()).Append(' ');
            else spaced.Append(rune.ToString());
        }

        var words = new List<string>();
        var word = new StringBuilder();
        foreach (var token in spaced.ToString().Split(' ', StringSplitOptions.RemoveEmptyEntries))
        {
            foreach (var rune in token.ToLowerInvariant().Normalize(NormalizationForm.FormD).EnumerateRunes())
            {
                if (Rune.GetUnicodeCategory(rune) == UnicodeCategory.NonSpacingMark) continue;
                if (IsPunctuation(rune))
                {
                    Flush(word, words);
                    words.Add(rune.ToString());
                }
                else word.Append(rune.ToString());
            }
            Flush(word, words);
        }
        return words;
    }

    private static void Flush(StringBuilder word, List<string> words)
    {
        if (word.Length == 0) return;
        words.Add(word.ToString());
        word.Clear();
    }

    private static bool IsWhitespace(Rune r) =>
        r.Value is ' ' or '\t' or '\n' or '\r' || Rune.GetUnicodeCategory(r) == UnicodeCategory.SpaceSeparator;

    private static bool IsControl(Rune r)
    {
        if (r.Value is '\t' or '\n' or '\r') return false;
        return Rune.GetUnicodeCategory(r) is UnicodeCategory.Control or UnicodeCategory.Format or UnicodeCategory.Surrogate
            or UnicodeCategory.PrivateUse or UnicodeCategory.OtherNotAssigned;
    }

    // All non-alphanumeric ASCII counts as punctuation (so "$", "=", "^" split words), as in BERT.
    private static bool IsPunctuation(Rune r) =>
        r.Value is >= 33 and <= 47 or >= 58 and <= 64 or >= 91 and <= 96 or >= 123 and <= 126
        || Rune.GetUnicodeCategory(r) is UnicodeCategory.ConnectorPunctuation or UnicodeCategory.DashPunctuation
            or UnicodeCategory.OpenPunctuation or UnicodeCategory.ClosePunctuation or UnicodeCategory.InitialQuotePunctuation
            or UnicodeCategory.FinalQuotePunctuation or UnicodeCategory.OtherPunctuation;

    private static bool IsCjk(int cp) =>
        cp is >= 0x4E00 and <= 0x9FFF or >= 0x3400 and <= 0x4DBF or >= 0x20000 and <= 0x2A6DF or >= 0x2A700 and <= 0x2B73F
            or >= 0x2B740 and <= 0x2B81F or >= 0x2B820 and <= 0x2CEAF or >= 0xF900 and <= 0xFAFF or >= 0x2F800 and <= 0x2FA1F;
}
