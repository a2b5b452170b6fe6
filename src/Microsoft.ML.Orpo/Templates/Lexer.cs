using System.Globalization;
using System.Text;

namespace Microsoft.ML.Orpo.Templates;

internal enum TokenKind { Text, BlockBegin, BlockEnd, VariableBegin, VariableEnd, Name, String, Integer, Float, Operator, End }

internal sealed record Token(TokenKind Kind, string Value, Pos Pos, object? Literal = null);

/// <summary>
/// Splits a template into text and tag tokens as Jinja's lexer does with transformers' settings: newlines normalised
/// and one trailing newline dropped, <c>trim_blocks</c>, <c>lstrip_blocks</c>, <c>-</c>/<c>+</c> whitespace control,
/// comments and raw blocks.
/// </summary>
internal sealed class Lexer
{
    private static readonly string[] Operators =
        ["**", "//", "==", "!=", ">=", "<=", "+", "-", "/", "*", "%", "~", "[", "]", "(", ")", "{", "}", ">", "<", "=", ".", ":", "|", ",", ";"];

    private readonly string src;
    private readonly List<Token> tokens = new();
    private readonly int[] lineStarts;
    private int pos;

    private Lexer(string source)
    {
        source = source.Replace("\r\n", "\n").Replace('\r', '\n');
        if (source.EndsWith('\n')) source = source[..^1];
        src = source;
        var starts = new List<int> { 0 };
        for (int i = 0; i < src.Length; i++) if (src[i] == '\n') starts.Add(i + 1);
        lineStarts = starts.ToArray();
    }

    public static List<Token> Tokenize(string source)
    {
        var lexer = new Lexer(source);
        lexer.Run();
        return lexer.tokens;
    }

    private Pos At(int offset)
    {
        int line = Array.BinarySearch(lineStarts, offset);
        if (line < 0) line = ~line - 1;
        return new Pos(line + 1, offset - lineStarts[line] + 1);
    }

    private void Run()
    {
        bool lineStarting = true;
        while (pos < src.Length)
        {
            int open = NextOpener(pos);
            if (open < 0)
            {
                tokens.Add(new Token(TokenKind.Text, src[pos..], At(pos)));
                break;
            }
            char kind = src[open + 1];
            char sign = open + 2 < src.Length && src[open + 2] is '-' or '+' ? src[open + 2] : '\0';
            string text = src[pos..open];
            if (sign == '-') text = text.TrimEnd(PyWhitespace);
            else if (sign != '+' && kind != '{')
            {
                int lineStart = text.LastIndexOf('\n') + 1;
                if ((lineStart > 0 || lineStarting) && text.AsSpan(lineStart).IndexOfAnyExcept(PyWhitespace) < 0)
                    text = text[..lineStart];
            }
            if (text.Length > 0) tokens.Add(new Token(TokenKind.Text, text, At(pos)));
            pos = open + 2 + (sign == '\0' ? 0 : 1);
            lineStarting = kind switch
            {
                '#' => Comment(open),
                '%' => RawBlock(open) ?? Tag(open, TokenKind.BlockBegin, TokenKind.BlockEnd, '%'),
                _ => Tag(open, TokenKind.VariableBegin, TokenKind.VariableEnd, '}'),
            };
        }
    }

    internal static readonly char[] PyWhitespace =
        [' ', '\t', '\n', '\v', '\f', '\r', '\x1c', '\x1d', '\x1e', '\x1f', '\x85', '\xa0', '\u1680', '\u2000', '\u2001',
         '\u2002', '\u2003', '\u2004', '\u2005', '\u2006', '\u2007', '\u2008', '\u2009', '\u200a', '\u2028', '\u2029',
         '\u202f', '\u205f', '\u3000'];

    private int NextOpener(int from)
    {
        for (int i = src.IndexOf('{', from); i >= 0 && i + 1 < src.Length; i = src.IndexOf('{', i + 1))
            if (src[i + 1] is '{' or '%' or '#') return i;
        return -1;
    }

    /// <summary>Consumes what follows a closing delimiter; returns whether the consumed text ends with a newline.</summary>
    private bool AfterTagEnd(bool stripAll, bool trimNewline)
    {
        int start = pos;
        if (stripAll) while (pos < src.Length && Array.IndexOf(PyWhitespace, src[pos]) >= 0) pos++;
        else if (trimNewline && pos < src.Length && src[pos] == '\n') pos++;
        return pos > start && src[pos - 1] == '\n';
    }

    private bool Comment(int open)
    {
        int close = src.IndexOf("#}", pos, StringComparison.Ordinal);
        if (close < 0) throw At(open).Error("Missing end of comment tag '#}'");
        char sign = close > pos && src[close - 1] is '-' or '+' ? src[close - 1] : '\0';
        pos = close + 2;
        return AfterTagEnd(sign == '-', sign != '+');
    }

    private bool? RawBlock(int open)
    {
        int p = SkipSpaces(pos);
        if (!IsWord(p, "raw")) return null;
        int end = SkipSpaces(p + 3);
        char sign = end < src.Length && src[end] is '-' or '+' ? src[end] : '\0';
        if (!Matches(end + (sign == '\0' ? 0 : 1), "%}")) return null;
        pos = end + (sign == '\0' ? 2 : 3);
        AfterTagEnd(sign == '-', sign != '+');
        for (int i = src.IndexOf("{%", pos, StringComparison.Ordinal); i >= 0; i = src.IndexOf("{%", i + 2, StringComparison.Ordinal))
        {
            char innerSign = i + 2 < src.Length && src[i + 2] is '-' or '+' ? src[i + 2] : '\0';
            int q = SkipSpaces(i + 2 + (innerSign == '\0' ? 0 : 1));
            if (!IsWord(q, "endraw")) continue;
            int close = SkipSpaces(q + 6);
            char closeSign = close < src.Length && src[close] is '-' or '+' ? src[close] : '\0';
            if (!Matches(close + (closeSign == '\0' ? 0 : 1), "%}")) continue;
            string body = src[pos..i];
            if (innerSign == '-') body = body.TrimEnd(PyWhitespace);
            if (body.Length > 0) tokens.Add(new Token(TokenKind.Text, body, At(pos)));
            pos = close + (closeSign == '\0' ? 2 : 3);
            return AfterTagEnd(closeSign == '-', closeSign != '+');
        }
        throw At(open).Error("Missing end of raw directive '{% endraw %}'");
    }

    private int SkipSpaces(int p)
    {
        while (p < src.Length && Array.IndexOf(PyWhitespace, src[p]) >= 0) p++;
        return p;
    }

    private bool Matches(int p, string s) => p + s.Length <= src.Length && string.CompareOrdinal(src, p, s, 0, s.Length) == 0;

    private bool IsWord(int p, string word) =>
        Matches(p, word) && (p + word.Length >= src.Length || !IsNameChar(src[p + word.Length]));

    private static bool IsNameChar(char c) => char.IsLetterOrDigit(c) || c == '_';

    private bool Tag(int open, TokenKind begin, TokenKind end, char closer)
    {
        tokens.Add(new Token(begin, src.Substring(open, 2), At(open)));
        int depth = 0;
        while (true)
        {
            pos = SkipSpaces(pos);
            if (pos >= src.Length) throw At(open).Error($"Unexpected end of template: the tag opened here is never closed");
            if (depth == 0)
            {
                char sign = src[pos] is '-' or '+' ? src[pos] : '\0';
                int at = pos + (sign == '\0' ? 0 : 1);
                if (at + 1 < src.Length && src[at] == closer && src[at + 1] == '}' && !(sign == '+' && closer == '}'))
                {
                    tokens.Add(new Token(end, src.Substring(pos, at + 2 - pos), At(pos)));
                    pos = at + 2;
                    return AfterTagEnd(sign == '-', closer == '%' && sign != '+');
                }
            }
            int start = pos;
            char c = src[pos];
            if (char.IsLetter(c) || c == '_')
            {
                while (pos < src.Length && IsNameChar(src[pos])) pos++;
                tokens.Add(new Token(TokenKind.Name, src[start..pos], At(start)));
            }
            else if (char.IsAsciiDigit(c)) Number(start);
            else if (c is '\'' or '"') tokens.Add(new Token(TokenKind.String, "string", At(start), StringLiteral()));
            else
            {
                string? op = Operators.FirstOrDefault(o => Matches(pos, o));
                if (op is null) throw At(pos).Error($"Unexpected character '{c}'");
                if (op is "(" or "[" or "{") depth++;
                else if (op is ")" or "]" or "}") depth = Math.Max(0, depth - 1);
                pos += op.Length;
                tokens.Add(new Token(TokenKind.Operator, op, At(start)));
            }
        }
    }

    private void Number(int start)
    {
        // Jinja: digits with single underscores, then an optional fraction and exponent. After a '.', digits are an
        // integer attribute (foo.0), never a float.
        bool afterDot = tokens.Count > 0 && tokens[^1] is { Kind: TokenKind.Operator, Value: "." };
        Digits();
        bool isFloat = false;
        if (!afterDot && pos + 1 < src.Length && src[pos] == '.' && char.IsAsciiDigit(src[pos + 1]))
        {
            pos++;
            Digits();
            isFloat = true;
        }
        if (!afterDot && pos < src.Length && src[pos] is 'e' or 'E')
        {
            int save = pos++;
            if (pos < src.Length && src[pos] is '+' or '-') pos++;
            if (pos < src.Length && char.IsAsciiDigit(src[pos])) { Digits(); isFloat = true; }
            else pos = save;
        }
        string text = src[start..pos].Replace("_", "");
        if (isFloat)
            tokens.Add(new Token(TokenKind.Float, text, At(start), double.Parse(text, CultureInfo.InvariantCulture)));
        else if (long.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out long value))
            tokens.Add(new Token(TokenKind.Integer, text, At(start), value));
        else throw At(start).Error($"Integer literal {text} is out of range");
    }

    private void Digits()
    {
        while (pos < src.Length && (char.IsAsciiDigit(src[pos]) || (src[pos] == '_' && pos + 1 < src.Length && char.IsAsciiDigit(src[pos + 1]))))
            pos++;
    }

    /// <summary>A quoted literal with Python's unicode-escape rules, as Jinja decodes them.</summary>
    private string StringLiteral()
    {
        int start = pos;
        char quote = src[pos++];
        var sb = new StringBuilder();
        while (true)
        {
            if (pos >= src.Length) throw At(start).Error("Unterminated string literal");
            char c = src[pos++];
            if (c == quote) return sb.ToString();
            if (c != '\\') { sb.Append(c); continue; }
            if (pos >= src.Length) throw At(start).Error("Unterminated string literal");
            char e = src[pos++];
            switch (e)
            {
                case '\n': break;
                case '\\': case '\'': case '"': sb.Append(e); break;
                case 'a': sb.Append('\a'); break;
                case 'b': sb.Append('\b'); break;
                case 'f': sb.Append('\f'); break;
                case 'n': sb.Append('\n'); break;
                case 'r': sb.Append('\r'); break;
                case 't': sb.Append('\t'); break;
                case 'v': sb.Append('\v'); break;
                case 'x': sb.Append(HexEscape(2, start)); break;
                case 'u': sb.Append(HexEscape(4, start)); break;
                case 'U': sb.Append(HexEscape(8, start)); break;
                case >= '0' and <= '7':
                    int value = e - '0';
                    for (int k = 0; k < 2 && pos < src.Length && src[pos] is >= '0' and <= '7'; k++) value = value * 8 + (src[pos++] - '0');
                    sb.Append((char)value);
                    break;
                case > '\x7f':
                    // Jinja escapes non-ASCII as \xNN, \uNNNN or \UNNNNNNNN before decoding: a backslash then 'é' is the text \xe9.
                    int cp = char.IsHighSurrogate(e) && pos < src.Length && char.IsLowSurrogate(src[pos]) ? char.ConvertToUtf32(e, src[pos++]) : e;
                    sb.Append('\\').Append(cp < 0x100 ? $"x{cp:x2}" : cp < 0x10000 ? $"u{cp:x4}" : $"U{cp:x8}");
                    break;
                default: sb.Append('\\').Append(e); break;
            }
        }
    }

    private string HexEscape(int digits, int start)
    {
        if (pos + digits > src.Length || !int.TryParse(src.AsSpan(pos, digits), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out int cp)
            || cp > 0x10FFFF || src.AsSpan(pos, digits).ContainsAnyExcept("0123456789abcdefABCDEF"))
            throw At(start).Error($"Truncated \\{(digits == 2 ? 'x' : digits == 4 ? 'u' : 'U')} escape in string literal");
        pos += digits;
        return cp is >= 0xD800 and <= 0xDFFF ? ((char)cp).ToString() : char.ConvertFromUtf32(cp);
    }
}
