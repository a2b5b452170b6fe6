using System.Text.RegularExpressions;
using Microsoft.ML.Tokenizers;

namespace Microsoft.ML.Orpo.Tokenization;

/// <summary>
/// Hugging Face pre-tokenization for byte-level BPE: added tokens are cut out first (leftmost, longest), then
/// each split pattern is applied in turn to every remaining piece with "Isolated" behaviour, i.e. both the
/// matches and the text between them become pieces. A single regex pre-tokenizer would drop the text between
/// matches and cannot chain several patterns.
/// </summary>
internal sealed class SplitPreTokenizer : PreTokenizer
{
    /// <summary>Longest time one split pattern may take on one piece of text.</summary>
    public static readonly TimeSpan MatchTimeout = TimeSpan.FromSeconds(2);

    private readonly IReadOnlyList<Regex> _splits;
    private readonly Regex? _addedTokens;

    public SplitPreTokenizer(IReadOnlyList<Regex> splits, IEnumerable<string> addedTokens)
    {
        _splits = splits;
        // Longest first, because .NET alternation takes the first alternative that matches.
        string[] alternatives = addedTokens.Where(t => t.Length > 0).Distinct(StringComparer.Ordinal)
            .OrderByDescending(t => t.Length).ThenBy(t => t, StringComparer.Ordinal).Select(Regex.Escape).ToArray();
        _addedTokens = alternatives.Length == 0 ? null
            : new Regex(string.Join("|", alternatives), RegexOptions.Compiled | RegexOptions.CultureInvariant);
    }

    /// <inheritdoc />
    public override IEnumerable<(int Offset, int Length)> PreTokenize(string text) =>
        text is null ? Array.Empty<(int, int)>() : Split(text.AsSpan());

    /// <inheritdoc />
    public override IEnumerable<(int Offset, int Length)> PreTokenize(ReadOnlySpan<char> text) => Split(text);

    private List<(int Offset, int Length)> Split(ReadOnlySpan<char> text)
    {
        try
        {
            return SplitUnchecked(text);
        }
        catch (RegexMatchTimeoutException e)
        {
            throw new InvalidOperationException(
                $"A tokenizer.json split pattern took longer than {MatchTimeout.TotalSeconds} s on a text of {text.Length} characters " +
                $"(catastrophic backtracking in '{e.Pattern}'); the tokenizer file is unusable.", e);
        }
    }

    private List<(int Offset, int Length)> SplitUnchecked(ReadOnlySpan<char> text)
    {
        var result = new List<(int, int)>();
        int start = 0;
        if (_addedTokens is not null)
        {
            foreach (ValueMatch m in _addedTokens.EnumerateMatches(text))
            {
                SplitPlain(text, start, m.Index - start, 0, result);
                result.Add((m.Index, m.Length));
                start = m.Index + m.Length;
            }
        }
        SplitPlain(text, start, text.Length - start, 0, result);
        return result;
    }

    private void SplitPlain(ReadOnlySpan<char> text, int offset, int length, int level, List<(int, int)> result)
    {
        if (length <= 0) return;
        if (level == _splits.Count)
        {
            result.Add((offset, length));
            return;
        }
        // Matching on the slice keeps look-arounds such as \s+(?!\S) inside the piece, as Hugging Face does.
        ReadOnlySpan<char> piece = text.Slice(offset, length);
        int last = 0;
        foreach (ValueMatch m in _splits[level].EnumerateMatches(piece))
        {
            if (m.Length == 0) continue;
            SplitPlain(text, offset + last, m.Index - last, level + 1, result);
            SplitPlain(text, offset + m.Index, m.Length, level + 1, result);
            last = m.Index + m.Length;
        }
        SplitPlain(text, offset + last, length - last, level + 1, result);
    }
}
