using System.Globalization;
using System.Text;

namespace Microsoft.ML.Orpo.Templates;

/// <summary>Python's semantics for template values: truth, equality, ordering, str()/repr() and code-point strings.</summary>
internal static class Py
{
    public static string TypeName(object? v) => v switch
    {
        null => "NoneType",
        Undefined => "Undefined",
        bool => "bool",
        long => "int",
        double => "float",
        string => "str",
        List<object?> => "list",
        object?[] => "tuple",
        Dict => "dict",
        Namespace => "Namespace",
        Macro => "Macro",
        LoopInfo => "LoopContext",
        _ => "function",
    };

    public static bool Truthy(object? v) => v switch
    {
        null or Undefined => false,
        bool b => b,
        long l => l != 0,
        double d => d != 0,
        string s => s.Length > 0,
        IList<object?> l => l.Count > 0,
        Dict d => d.Count > 0,
        _ => true,
    };

    public static bool IsNumber(object? v) => v is long or double or bool;

    public static double ToDouble(object? v) => v switch
    {
        long l => l,
        double d => d,
        bool b => b ? 1 : 0,
        _ => throw new InvalidCastException(),
    };

    public static bool Equal(object? a, object? b) => Equal(a, b, 0);

    private static bool Equal(object? a, object? b, int depth)
    {
        if (depth > 100) throw new TemplateException("Comparison nests too deeply", 0, 0);
        if (IsNumber(a) && IsNumber(b))
            return a is double || b is double ? ToDouble(a) == ToDouble(b) : AsLong(a) == AsLong(b);
        switch (a)
        {
            case null: return b is null;
            case Undefined: return b is Undefined;
            case string s: return b is string t && string.Equals(s, t, StringComparison.Ordinal);
            case List<object?> x when b is List<object?> y: return SequenceEqual(x, y, depth);
            case object?[] x when b is object?[] y: return SequenceEqual(x, y, depth);
            case Dict x when b is Dict y:
                if (x.Count != y.Count) return false;
                foreach (var (k, v) in x)
                    if (!y.TryGetValue(k, out var w) || !Equal(v, w, depth + 1)) return false;
                return true;
            default: return ReferenceEquals(a, b) || (a is Builtin or BoundMethod && Equals(a, b));
        }
    }

    private static bool SequenceEqual(IList<object?> x, IList<object?> y, int depth)
    {
        if (x.Count != y.Count) return false;
        for (int i = 0; i < x.Count; i++) if (!Equal(x[i], y[i], depth + 1)) return false;
        return true;
    }

    public static long AsLong(object? v) => v is bool b ? (b ? 1 : 0) : (long)v!;

    /// <summary>Python's ordering (&lt;): numbers, strings, sequences; anything else is a TypeError.</summary>
    public static int Compare(object? a, object? b, Pos pos)
    {
        if (IsNumber(a) && IsNumber(b))
            return a is double || b is double ? ToDouble(a).CompareTo(ToDouble(b)) : AsLong(a).CompareTo(AsLong(b));
        if (a is string s && b is string t) return string.CompareOrdinal(s, t);
        if ((a is List<object?> && b is List<object?>) || (a is object?[] && b is object?[]))
        {
            var x = (IList<object?>)a;
            var y = (IList<object?>)b;
            for (int i = 0; i < Math.Min(x.Count, y.Count); i++)
                if (!Equal(x[i], y[i])) return Compare(x[i], y[i], pos);
            return x.Count.CompareTo(y.Count);
        }
        if (a is Undefined u) throw pos.Error(u.Description);
        if (b is Undefined v) throw pos.Error(v.Description);
        throw pos.Error($"'<' not supported between instances of '{TypeName(a)}' and '{TypeName(b)}'");
    }

    public static string Str(object? v) => v switch
    {
        string s => s,
        Undefined => "",
        _ => Repr(v, 0),
    };

    public static string Repr(object? v, int depth)
    {
        if (depth > 100) throw new TemplateException("A value nests too deeply to print", 0, 0);
        switch (v)
        {
            case null: return "None";
            case Undefined: return "";
            case bool b: return b ? "True" : "False";
            case long l: return l.ToString(CultureInfo.InvariantCulture);
            case double d: return FormatFloat(d);
            case string s: return ReprString(s);
            case List<object?> l: return "[" + string.Join(", ", l.Select(x => Repr(x, depth + 1))) + "]";
            case object?[] t: return t.Length == 1 ? "(" + Repr(t[0], depth + 1) + ",)" : "(" + string.Join(", ", t.Select(x => Repr(x, depth + 1))) + ")";
            case Dict d: return "{" + string.Join(", ", d.Select(kv => Repr(kv.Key, depth + 1) + ": " + Repr(kv.Value, depth + 1))) + "}";
            case Namespace n: return "<Namespace " + string.Join(", ", n.Attributes.Select(kv => kv.Key + "=" + Repr(kv.Value, depth + 1))) + ">";
            case Macro m: return $"<Macro '{m.Name}'>";
            case LoopInfo: return "<LoopContext>";
            case Builtin f: return $"<built-in function {f.Name}>";
            case BoundMethod m: return $"<built-in method {m.Name} of {TypeName(m.Receiver)} object>";
            default: throw new InvalidOperationException($"Not a template value: {v.GetType()}");
        }
    }

    private static string ReprString(string s)
    {
        char quote = s.Contains('\'') && !s.Contains('"') ? '"' : '\'';
        var sb = new StringBuilder(s.Length + 2).Append(quote);
        foreach (char c in s)
        {
            switch (c)
            {
                case '\\': sb.Append("\\\\"); break;
                case '\n': sb.Append("\\n"); break;
                case '\r': sb.Append("\\r"); break;
                case '\t': sb.Append("\\t"); break;
                default:
                    if (c == quote) sb.Append('\\').Append(c);
                    else if (c < 0x20 || c == 0x7f) sb.Append("\\x").Append(((int)c).ToString("x2", CultureInfo.InvariantCulture));
                    else sb.Append(c);
                    break;
            }
        }
        return sb.Append(quote).ToString();
    }

    /// <summary>Python's repr(float): shortest round-trip digits, exponent form below 1e-4 and from 1e16.</summary>
    public static string FormatFloat(double d)
    {
        if (double.IsNaN(d)) return "nan";
        if (double.IsInfinity(d)) return d > 0 ? "inf" : "-inf";
        if (d == 0) return double.IsNegative(d) ? "-0.0" : "0.0";
        string shortest = d.ToString("R", CultureInfo.InvariantCulture);
        // Digits and decimal exponent of the shortest round-trip form.
        bool negative = d < 0;
        string body = negative ? shortest[1..] : shortest;
        int exp;
        string digits;
        int e = body.IndexOfAny(['E', 'e']);
        string mantissa = e >= 0 ? body[..e] : body;
        int exp10 = e >= 0 ? int.Parse(body[(e + 1)..], CultureInfo.InvariantCulture) : 0;
        int dot = mantissa.IndexOf('.');
        string intPart = dot >= 0 ? mantissa[..dot] : mantissa;
        string fracPart = dot >= 0 ? mantissa[(dot + 1)..] : "";
        digits = (intPart + fracPart).TrimStart('0');
        int leadingZeros = (intPart + fracPart).Length - digits.Length;
        exp = intPart.Length - 1 - leadingZeros + exp10;
        digits = digits.TrimEnd('0');
        if (digits.Length == 0) digits = "0";
        var sb = new StringBuilder();
        if (negative) sb.Append('-');
        if (exp >= -4 && exp < 16)
        {
            if (exp >= 0)
            {
                string whole = digits.Length > exp + 1 ? digits[..(exp + 1)] : digits.PadRight(exp + 1, '0');
                string frac = digits.Length > exp + 1 ? digits[(exp + 1)..] : "0";
                sb.Append(whole).Append('.').Append(frac);
            }
            else sb.Append("0.").Append('0', -exp - 1).Append(digits);
        }
        else
        {
            sb.Append(digits[0]);
            if (digits.Length > 1) sb.Append('.').Append(digits, 1, digits.Length - 1);
            sb.Append('e').Append(exp < 0 ? '-' : '+').Append(Math.Abs(exp).ToString("00", CultureInfo.InvariantCulture));
        }
        return sb.ToString();
    }

    // Python strings index code points; .NET strings are UTF-16. Strings without surrogates take the fast path.

    public static bool HasSurrogates(string s) => s.AsSpan().IndexOfAnyInRange('\uD800', '\uDFFF') >= 0;

    public static List<string> CodePoints(string s)
    {
        var list = new List<string>(s.Length);
        for (int i = 0; i < s.Length; i++)
        {
            if (char.IsHighSurrogate(s[i]) && i + 1 < s.Length && char.IsLowSurrogate(s[i + 1])) { list.Add(s.Substring(i, 2)); i++; }
            else list.Add(s[i].ToString());
        }
        return list;
    }

    public static int Length(string s) => HasSurrogates(s) ? CodePoints(s).Count : s.Length;
}
