using System.Globalization;
using System.Text;

namespace Microsoft.ML.Orpo.Templates;

/// <summary>transformers' <c>tojson</c>: Python's json.dumps with ensure_ascii=False by default, and indent.</summary>
internal static class Json
{
    public static string Serialize(object? value, object? indent, bool ensureAscii, bool sortKeys, Pos pos)
    {
        string? unit = indent switch
        {
            null => null,
            string s => s,
            long n => new string(' ', (int)Math.Clamp(n, 0, 1000)),
            _ => throw pos.Error($"tojson indent must be an integer or a string, not '{Py.TypeName(indent)}'"),
        };
        var sb = new StringBuilder();
        Write(sb, value, unit, ensureAscii, sortKeys, 0, pos);
        return sb.ToString();
    }

    private static void Write(StringBuilder sb, object? value, string? unit, bool ascii, bool sortKeys, int depth, Pos pos)
    {
        if (depth > 100) throw pos.Error("tojson: the value nests too deeply");
        switch (value)
        {
            case null: sb.Append("null"); break;
            case bool b: sb.Append(b ? "true" : "false"); break;
            case long l: sb.Append(l.ToString(CultureInfo.InvariantCulture)); break;
            case double d: sb.Append(double.IsNaN(d) ? "NaN" : double.IsInfinity(d) ? (d > 0 ? "Infinity" : "-Infinity") : Py.FormatFloat(d)); break;
            case string s: WriteString(sb, s, ascii); break;
            case IList<object?> list:
                if (list.Count == 0) { sb.Append("[]"); break; }
                sb.Append('[');
                for (int i = 0; i < list.Count; i++)
                {
                    Separator(sb, unit, depth + 1, i > 0);
                    Write(sb, list[i], unit, ascii, sortKeys, depth + 1, pos);
                }
                Close(sb, unit, depth, ']');
                break;
            case Dict dict:
                if (dict.Count == 0) { sb.Append("{}"); break; }
                sb.Append('{');
                var pairs = dict.Select(kv => (Key: KeyString(kv.Key, pos), kv.Value)).ToList();
                if (sortKeys) pairs = pairs.OrderBy(p => p.Key, StringComparer.Ordinal).ToList();
                for (int i = 0; i < pairs.Count; i++)
                {
                    Separator(sb, unit, depth + 1, i > 0);
                    WriteString(sb, pairs[i].Key, ascii);
                    sb.Append(": ");
                    Write(sb, pairs[i].Value, unit, ascii, sortKeys, depth + 1, pos);
                }
                Close(sb, unit, depth, '}');
                break;
            default: throw pos.Error($"Object of type {Py.TypeName(value)} is not JSON serializable");
        }
    }

    private static string KeyString(object key, Pos pos) => key switch
    {
        string s => s,
        bool b => b ? "true" : "false",
        long l => l.ToString(CultureInfo.InvariantCulture),
        double d => Py.FormatFloat(d),
        _ => throw pos.Error($"keys must be str, int, float, bool or None, not {Py.TypeName(key)}"),
    };

    private static void Separator(StringBuilder sb, string? unit, int depth, bool notFirst)
    {
        if (unit is null)
        {
            if (notFirst) sb.Append(", ");
            return;
        }
        if (notFirst) sb.Append(',');
        sb.Append('\n');
        for (int i = 0; i < depth; i++) sb.Append(unit);
    }

    private static void Close(StringBuilder sb, string? unit, int depth, char closer)
    {
        if (unit is not null)
        {
            sb.Append('\n');
            for (int i = 0; i < depth; i++) sb.Append(unit);
        }
        sb.Append(closer);
    }

    private static void WriteString(StringBuilder sb, string s, bool ascii)
    {
        sb.Append('"');
        foreach (char c in s)
        {
            switch (c)
            {
                case '"': sb.Append("\\\""); break;
                case '\\': sb.Append("\\\\"); break;
                case '\n': sb.Append("\\n"); break;
                case '\r': sb.Append("\\r"); break;
                case '\t': sb.Append("\\t"); break;
                case '\b': sb.Append("\\b"); break;
                case '\f': sb.Append("\\f"); break;
                default:
                    if (c < 0x20 || (ascii && c > 0x7e)) sb.Append("\\u").Append(((int)c).ToString("x4", CultureInfo.InvariantCulture));
                    else sb.Append(c);
                    break;
            }
        }
        sb.Append('"');
    }
}
