namespace Microsoft.ML.Orpo.Tokenization;

/// <summary>
/// Finds added tokens in text as Hugging Face's <c>AddedVocabulary</c> does: leftmost-longest, non-overlapping
/// matches, then dropping a <c>single_word</c> token glued to a word character, and widening an <c>lstrip</c> /
/// <c>rstrip</c> token over the whitespace beside it. Special tokens are skipped when they are to be encoded as
/// plain text (<c>split_special_tokens</c>).
/// </summary>
internal sealed class AddedTokenMatcher
{
    private readonly Dictionary<char, HfAddedToken[]> _byFirstChar;

    public AddedTokenMatcher(IEnumerable<(string Pattern, HfAddedToken Token)> tokens)
    {
        _byFirstChar = tokens.Where(t => t.Pattern.Length > 0)
            .GroupBy(t => t.Pattern[0])
            .ToDictionary(g => g.Key, g => g.OrderByDescending(t => t.Pattern.Length)
                .Select(t => t.Token with { Content = t.Pattern }).ToArray());
    }

    public bool IsEmpty => _byFirstChar.Count == 0;

    /// <summary>The matches as (start, end, token id).</summary>
    public List<(int Start, int End, int Id)> Find(string text)
    {
        var found = new List<(int, int, int)>();
        int previousEnd = 0;
        for (int i = 0; i < text.Length;)
        {
            HfAddedToken? token = null;
            if (_byFirstChar.TryGetValue(text[i], out var candidates))
                token = candidates.FirstOrDefault(c => string.CompareOrdinal(text, i, c.Content, 0, c.Content.Length) == 0);
            if (token is null) { i++; continue; }
            int start = i, end = i + token.Content.Length;
            i = end;
            if (token.SingleWord && ((start > 0 && IsWordChar(text, start - 1, before: true)) || (end < text.Length && IsWordChar(text, end, before: false))))
                continue;
            if (token.LeftStrip)
                while (start > previousEnd && HfSplit.IsWhitespace(text[start - 1])) start--;
            if (token.RightStrip)
                while (end < text.Length && HfSplit.IsWhitespace(text[end])) end++;
            found.Add((start, end, token.Id));
            previousEnd = i = end;
        }
        return found;
    }

    private static bool IsWordChar(string text, int at, bool before)
    {
        int c = before && char.IsLowSurrogate(text[at]) && at > 0 ? char.ConvertToUtf32(text[at - 1], text[at])
            : !before && char.IsSurrogatePair(text, at) ? char.ConvertToUtf32(text, at) : text[at];
        return c == '_' || (c < 0x10000 ? char.IsLetterOrDigit((char)c) : char.IsLetterOrDigit(char.ConvertFromUtf32(c), 0));
    }
}
