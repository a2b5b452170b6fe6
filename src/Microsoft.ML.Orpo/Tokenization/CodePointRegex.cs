using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;

namespace Microsoft.ML.Orpo.Tokenization;

/// <summary>
/// A regular expression from a <c>tokenizer.json</c>, matched the way Hugging Face's Oniguruma matches it: one
/// character is one code point. .NET matches UTF-16 units, so a class such as <c>[^\s\p{L}]?</c> would take half of
/// an emoji and <c>\p{L}</c> would miss a supplementary letter. The text is therefore matched in a view where each
/// supplementary code point stands as one BMP character of the same general category, which every category-based
/// construct treats alike, and the match offsets are mapped back.
/// </summary>
internal sealed class CodePointRegex
{
    /// <summary>Longest time one pattern may take on one piece of text: a pattern from a file is untrusted.</summary>
    public static readonly TimeSpan MatchTimeout = TimeSpan.FromSeconds(2);

    private static readonly char[] Stand = BuildStandIns();
    private readonly Regex _regex;

    public CodePointRegex(string pattern, string where, string source)
    {
        try { _regex = new Regex(OnigurumaWord(pattern, where, source), RegexOptions.CultureInvariant | RegexOptions.Compiled, MatchTimeout); }
        catch (ArgumentException e)
        {
            throw new NotSupportedException($"{source}: '{where}' pattern is not a valid .NET regular expression ({e.Message}).", e);
        }
        Pattern = pattern;
    }

    public string Pattern { get; }

    /// <summary>Non-overlapping matches as (start, end) UTF-16 offsets into <paramref name="text"/>.</summary>
    public List<(int Start, int End)> Matches(string text)
    {
        var result = new List<(int, int)>();
        string view = text;
        int[]? back = null;
        if (HasSurrogates(text)) (view, back) = View(text);
        try
        {
            for (Match m = _regex.Match(view); m.Success; m = m.NextMatch())
            {
                int start = back is null ? m.Index : back[m.Index];
                int end = back is null ? m.Index + m.Length : back[m.Index + m.Length];
                result.Add((start, end));
            }
        }
        catch (RegexMatchTimeoutException e)
        {
            throw new InvalidOperationException(
                $"A tokenizer.json pattern took longer than {MatchTimeout.TotalSeconds} s on a text of {text.Length} characters " +
                $"(catastrophic backtracking in '{e.Pattern}'); the tokenizer file is unusable.", e);
        }
        return result;
    }

    // Oniguruma's \w is Unicode's word property (letters, all marks, decimal digits, letter numbers, connector
    // punctuation, joiners, and the circled letters that are Alphabetic); .NET's leaves out spacing and enclosing marks.
    private const string WordClass = @"\p{L}\p{M}\p{Nd}\p{Nl}\p{Pc}\u200C\u200D\u24B6-\u24E9";

    private static string OnigurumaWord(string pattern, string where, string source)
    {
        if (!pattern.Contains(@"\w", StringComparison.OrdinalIgnoreCase)) return pattern;
        var sb = new StringBuilder(pattern.Length + 64);
        bool inClass = false;
        for (int i = 0; i < pattern.Length; i++)
        {
            char c = pattern[i];
            if (c == '\\' && i + 1 < pattern.Length)
            {
                char e = pattern[++i];
                if (e == 'w') sb.Append(inClass ? WordClass : "[" + WordClass + "]");
                else if (e == 'W' && !inClass) sb.Append("[^" + WordClass + "]");
                else if (e == 'W')
                    throw new NotSupportedException($"{source}: '{where}' pattern uses \\W inside a character class, which is not supported.");
                else sb.Append(c).Append(e);
                continue;
            }
            if (!inClass && c == '[')
            {
                inClass = true;
                sb.Append(c);
                if (i + 1 < pattern.Length && pattern[i + 1] == '^') sb.Append(pattern[++i]);
                if (i + 1 < pattern.Length && pattern[i + 1] == ']') sb.Append(pattern[++i]); // a leading ']' is literal
                continue;
            }
            if (inClass && c == ']') inClass = false;
            sb.Append(c);
        }
        return sb.ToString();
    }

    private static bool HasSurrogates(string text)
    {
        foreach (char c in text) if (char.IsSurrogate(c)) return true;
        return false;
    }

    private static (string View, int[] Back) View(string text)
    {
        var view = new StringBuilder(text.Length);
        var back = new List<int>(text.Length + 1);
        for (int i = 0; i < text.Length; i++)
        {
            back.Add(i);
            if (char.IsHighSurrogate(text[i]) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1]))
            {
                view.Append(Stand[(int)CharUnicodeInfo.GetUnicodeCategory(char.ConvertToUtf32(text[i], text[i + 1]))]);
                i++;
            }
            else view.Append(text[i]);
        }
        back.Add(text.Length);
        return (view.ToString(), back.ToArray());
    }

    private static char[] BuildStandIns()
    {
        // For each category the first BMP character of it above Latin, so literal ASCII in a pattern (even
        // case-insensitive) never matches a stand-in.
        var stand = new char[32];
        for (int c = 0x370; c < 0xFFFE; c++)
        {
            if (char.IsSurrogate((char)c)) continue;
            int cat = (int)CharUnicodeInfo.GetUnicodeCategory((char)c);
            if (stand[cat] == '\0' && !char.IsWhiteSpace((char)c)) stand[cat] = (char)c;
        }
        for (int i = 0; i < stand.Length; i++) if (stand[i] == '\0') stand[i] = '\uFFFD';
        return stand;
    }
}
