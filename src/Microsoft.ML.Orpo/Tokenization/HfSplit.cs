using System.Globalization;

namespace Microsoft.ML.Orpo.Tokenization;

/// <summary>A piece of pre-tokenized text; <see cref="Start"/> is where it begins in the input (0 only for the
/// piece at the very start, which Metaspace's <c>prepend_scheme: first</c> looks for).</summary>
internal readonly record struct Piece(string Text, int Start);

/// <summary>Hugging Face's <c>SplitDelimiterBehavior</c>.</summary>
internal enum SplitBehavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous }

/// <summary>
/// <c>NormalizedString::split</c>: cuts a piece at the matches of a pattern and keeps, drops or merges the matches
/// as the behaviour says. Empty pieces are dropped, as Hugging Face drops them.
/// </summary>
internal static class HfSplit
{
    public static SplitBehavior ParseBehavior(string? value, string where, string source) => value switch
    {
        null or "Isolated" => SplitBehavior.Isolated,
        "Removed" => SplitBehavior.Removed,
        "MergedWithPrevious" => SplitBehavior.MergedWithPrevious,
        "MergedWithNext" => SplitBehavior.MergedWithNext,
        "Contiguous" => SplitBehavior.Contiguous,
        _ => throw new NotSupportedException($"{source}: '{where}' split behavior '{value}' is not supported."),
    };

    /// <summary>Matches of a per-character predicate, one match per code point.</summary>
    public static List<(int Start, int End)> CharMatches(string text, Func<int, bool> predicate)
    {
        var matches = new List<(int, int)>();
        for (int i = 0; i < text.Length; i += char.IsSurrogatePair(text, i) ? 2 : 1)
        {
            int width = char.IsSurrogatePair(text, i) ? 2 : 1;
            if (predicate(char.ConvertToUtf32(text, i))) matches.Add((i, i + width));
        }
        return matches;
    }

    public static void Split(Piece piece, List<(int Start, int End)> matches, SplitBehavior behavior, bool invert, List<Piece> output)
    {
        string text = piece.Text;
        var spans = new List<(int Start, int End, bool Match)>();
        int at = 0;
        foreach (var (start, end) in matches)
        {
            if (start > at) spans.Add((at, start, invert));
            spans.Add((start, end, !invert));
            at = end;
        }
        if (at < text.Length) spans.Add((at, text.Length, invert));

        var kept = new List<(int Start, int End)>();
        switch (behavior)
        {
            case SplitBehavior.Removed:
                foreach (var s in spans) if (!s.Match) kept.Add((s.Start, s.End));
                break;
            case SplitBehavior.Isolated:
                foreach (var s in spans) kept.Add((s.Start, s.End));
                break;
            case SplitBehavior.MergedWithPrevious:
            {
                bool previousMatch = false;
                foreach (var s in spans)
                {
                    if (s.Match && !previousMatch && kept.Count > 0) kept[^1] = (kept[^1].Start, s.End);
                    else kept.Add((s.Start, s.End));
                    previousMatch = s.Match;
                }
                break;
            }
            case SplitBehavior.MergedWithNext:
            {
                bool previousMatch = false;
                for (int i = spans.Count - 1; i >= 0; i--)
                {
                    var s = spans[i];
                    if (s.Match && !previousMatch && kept.Count > 0) kept[^1] = (s.Start, kept[^1].End);
                    else kept.Add((s.Start, s.End));
                    previousMatch = s.Match;
                }
                kept.Reverse();
                break;
            }
            case SplitBehavior.Contiguous:
            {
                bool previousMatch = false;
                foreach (var s in spans)
                {
                    if (s.Match == previousMatch && kept.Count > 0) kept[^1] = (kept[^1].Start, s.End);
                    else kept.Add((s.Start, s.End));
                    previousMatch = s.Match;
                }
                break;
            }
        }
        foreach (var (start, end) in kept)
            if (end > start) output.Add(new Piece(text[start..end], piece.Start + start));
    }

    /// <summary>Rust's <c>char::is_whitespace</c> (Unicode White_Space).</summary>
    public static bool IsWhitespace(int c) => c is >= 9 and <= 13 or 0x85 || (c < 0x10000 && char.IsWhiteSpace((char)c));

    /// <summary>Rust's <c>char::is_numeric</c> (Nd, Nl, No).</summary>
    public static bool IsNumeric(int c) => CharUnicodeInfo.GetUnicodeCategory(c) is
        UnicodeCategory.DecimalDigitNumber or UnicodeCategory.LetterNumber or UnicodeCategory.OtherNumber;

    /// <summary>Hugging Face's <c>is_punc</c>: ASCII punctuation or a Unicode punctuation category.</summary>
    public static bool IsPunctuation(int c) => c < 128 ? char.IsAsciiLetterOrDigit((char)c) is false && c > 32 && c < 127
        : CharUnicodeInfo.GetUnicodeCategory(c) is UnicodeCategory.ConnectorPunctuation or UnicodeCategory.DashPunctuation
            or UnicodeCategory.OpenPunctuation or UnicodeCategory.ClosePunctuation or UnicodeCategory.InitialQuotePunctuation
            or UnicodeCategory.FinalQuotePunctuation or UnicodeCategory.OtherPunctuation;
}
