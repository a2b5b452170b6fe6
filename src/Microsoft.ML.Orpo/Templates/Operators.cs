namespace Microsoft.ML.Orpo.Templates;

/// <summary>Python's arithmetic, concatenation, membership and comparison operators on template values.</summary>
internal static class Operators
{
    public static object? Unary(string op, object? value, Pos pos)
    {
        if (value is Undefined u) throw pos.Error(u.Description);
        return (op, value) switch
        {
            ("-", long l) => checked(-l),
            ("-", bool b) => b ? -1L : 0L,
            ("-", double d) => -d,
            ("+", long or double) => value,
            ("+", bool b) => b ? 1L : 0L,
            _ => throw pos.Error($"bad operand type for unary {op}: '{Py.TypeName(value)}'"),
        };
    }

    public static object? Binary(Renderer r, string op, object? a, object? b, Pos pos)
    {
        if (op == "~")
        {
            string x = Py.Str(a), y = Py.Str(b);
            r.ReserveString((long)x.Length + y.Length, pos);
            return x + y;
        }
        if (a is Undefined u) throw pos.Error(u.Description);
        if (b is Undefined v) throw pos.Error(v.Description);
        try
        {
            if (Py.IsNumber(a) && Py.IsNumber(b)) return Arithmetic(op, a, b, pos);
        }
        catch (OverflowException) { throw pos.Error($"Integer overflow in '{op}'"); }
        switch (op, a, b)
        {
            case ("+", string x, string y):
                r.ReserveString((long)x.Length + y.Length, pos);
                return x + y;
            case ("+", List<object?> x, List<object?> y):
                r.ReserveList((long)x.Count + y.Count, pos);
                return x.Concat(y).ToList();
            case ("+", object?[] x, object?[] y):
                r.ReserveList((long)x.Length + y.Length, pos);
                return x.Concat(y).ToArray();
            case ("*", string or IList<object?>, long or bool):
                return Repeat(r, a!, Py.AsLong(b), pos);
            case ("*", long or bool, string or IList<object?>):
                return Repeat(r, b!, Py.AsLong(a), pos);
            case ("%", string, _):
                throw pos.Error("Unsupported construct: printf-style string formatting with '%'");
        }
        throw pos.Error($"unsupported operand type(s) for {op}: '{Py.TypeName(a)}' and '{Py.TypeName(b)}'");
    }

    private static object Repeat(Renderer r, object value, long count, Pos pos)
    {
        count = Math.Max(0, count);
        if (value is string s)
        {
            r.ReserveString(s.Length * Math.Min(count, int.MaxValue), pos);
            return string.Concat(Enumerable.Repeat(s, (int)count));
        }
        var list = (IList<object?>)value;
        r.ReserveList(list.Count * Math.Min(count, int.MaxValue), pos);
        var result = new List<object?>();
        for (long i = 0; i < count; i++) result.AddRange(list);
        return value is object?[] ? result.ToArray() : result;
    }

    private static object Arithmetic(string op, object? a, object? b, Pos pos)
    {
        bool floating = a is double || b is double;
        if (op == "/")
        {
            double y = Py.ToDouble(b);
            if (y == 0) throw pos.Error("division by zero");
            return Py.ToDouble(a) / y;
        }
        if (op == "**")
        {
            if (!floating && Py.AsLong(b) >= 0)
            {
                long baseValue = Py.AsLong(a), exponent = Py.AsLong(b), result = 1;
                for (long i = 0; i < exponent; i++)
                {
                    result = checked(result * baseValue);
                    if (baseValue is 0 or 1 or -1 && i > 1) break;
                }
                return baseValue == -1 ? (exponent % 2 == 0 ? 1L : -1L) : result;
            }
            return Math.Pow(Py.ToDouble(a), Py.ToDouble(b));
        }
        if (floating)
        {
            double x = Py.ToDouble(a), y = Py.ToDouble(b);
            switch (op)
            {
                case "+": return x + y;
                case "-": return x - y;
                case "*": return x * y;
            }
            if (y == 0) throw pos.Error("float division by zero");
            return op == "//" ? Math.Floor(x / y) : x - y * Math.Floor(x / y);
        }
        long p = Py.AsLong(a), q = Py.AsLong(b);
        switch (op)
        {
            case "+": return checked(p + q);
            case "-": return checked(p - q);
            case "*": return checked(p * q);
        }
        if (q == 0) throw pos.Error("integer division or modulo by zero");
        long div = p / q, mod = p % q;
        if (mod != 0 && (mod < 0) != (q < 0)) { div--; mod += q; }
        return op == "//" ? div : mod;
    }

    public static bool Compare(Renderer r, string op, object? a, object? b, Pos pos) => op switch
    {
        "==" => Py.Equal(a, b),
        "!=" => !Py.Equal(a, b),
        "<" => Py.Compare(a, b, pos) < 0,
        "<=" => Py.Compare(a, b, pos) <= 0,
        ">" => Py.Compare(a, b, pos) > 0,
        ">=" => Py.Compare(a, b, pos) >= 0,
        "in" => Contains(r, b, a, pos),
        "not in" => !Contains(r, b, a, pos),
        _ => throw pos.Error($"Unknown operator '{op}'"),
    };

    public static bool Contains(Renderer r, object? container, object? item, Pos pos)
    {
        switch (container)
        {
            case string s:
                if (item is not string needle) throw pos.Error($"'in <string>' requires string as left operand, not {Py.TypeName(item)}");
                r.Step(pos, s.Length / 1024);
                return s.Contains(needle, StringComparison.Ordinal);
            case IList<object?> l:
                r.Step(pos, l.Count);
                return l.Any(x => Py.Equal(x, item));
            case Dict d: return item is not (null or Undefined or IList<object?> or Dict or Namespace) && d.ContainsKey(item);
            case Undefined: return false;
            default: throw pos.Error($"argument of type '{Py.TypeName(container)}' is not iterable");
        }
    }
}
