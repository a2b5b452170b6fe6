using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;

namespace Microsoft.ML.Orpo.Templates;

/// <summary>Jinja's built-in filters (with transformers' <c>tojson</c>), by their documented semantics.</summary>
internal static partial class Filters
{
    private delegate object? Filter(Renderer r, object? value, Args args, Pos pos);

    private static readonly Dictionary<string, Filter> All = new(StringComparer.Ordinal)
    {
        ["trim"] = (r, v, a, p) => Members.Strip(Soft(v), OptionalString(a.Bind("trim", p, ("chars", null))[0], p), true, true),
        ["length"] = Length,
        ["count"] = Length,
        ["lower"] = (r, v, a, p) => NoArgs(a, "lower", p, Soft(v).ToLowerInvariant()),
        ["upper"] = (r, v, a, p) => NoArgs(a, "upper", p, Soft(v).ToUpperInvariant()),
        ["title"] = (r, v, a, p) => NoArgs(a, "title", p, string.Concat(WordBeginning().Split(Soft(v)).Where(w => w.Length > 0)
            .Select(w => char.ToUpperInvariant(w[0]) + w[1..].ToLowerInvariant()))),
        ["capitalize"] = (r, v, a, p) => NoArgs(a, "capitalize", p, Members.Capitalize(Soft(v))),
        ["replace"] = (r, v, a, p) =>
        {
            var b = a.Bind("replace", p, ("old", Required.Value), ("new", Required.Value), ("count", null));
            return Members.Replace(r, Soft(v), Soft(b[0]), Soft(b[1]), b[2] is long c ? c : -1, p);
        },
        ["join"] = (r, v, a, p) =>
        {
            var b = a.Bind("join", p, ("d", ""), ("attribute", null));
            var items = Items(r, v, p);
            if (b[1] is not null) items = items.Select(x => Attribute(x, b[1], p)).ToList();
            return Members.Join(r, items.Select(Soft), Soft(b[0]), p);
        },
        ["default"] = Default,
        ["d"] = Default,
        ["first"] = (r, v, a, p) =>
        {
            var items = Items(r, NoArgs(a, "first", p, v), p);
            return items.Count > 0 ? items[0] : new Undefined("No first item, sequence was empty.");
        },
        ["last"] = (r, v, a, p) =>
        {
            var items = Items(r, NoArgs(a, "last", p, v), p);
            return items.Count > 0 ? items[^1] : new Undefined("No last item, sequence was empty.");
        },
        ["list"] = (r, v, a, p) => Items(r, NoArgs(a, "list", p, v), p).ToList(),
        ["string"] = (r, v, a, p) => NoArgs(a, "string", p, Soft(v)),
        ["int"] = Int,
        ["float"] = (r, v, a, p) =>
        {
            var b = a.Bind("float", p, ("default", 0.0));
            return ToFloat(v) ?? b[0];
        },
        ["abs"] = (r, v, a, p) => NoArgs(a, "abs", p, v) switch
        {
            long l => l == long.MinValue ? throw p.Error("Integer overflow in abs") : (object)Math.Abs(l),
            double d => Math.Abs(d),
            bool b => b ? 1L : 0L,
            _ => throw p.Error($"bad operand type for abs(): '{Py.TypeName(v)}'"),
        },
        ["round"] = (r, v, a, p) =>
        {
            var b = a.Bind("round", p, ("precision", 0L), ("method", "common"));
            if (!Py.IsNumber(v)) throw p.Error($"round() of a '{Py.TypeName(v)}'");
            double x = Py.ToDouble(v), scale = Math.Pow(10, b[0] is long prec ? prec : 0);
            return b[1] switch
            {
                "common" => Math.Round(x, (int)Math.Clamp(b[0] is long digits ? digits : 0, 0, 15), MidpointRounding.ToEven),
                "ceil" => Math.Ceiling(x * scale) / scale,
                "floor" => Math.Floor(x * scale) / scale,
                _ => throw p.Error("method must be common, ceil or floor"),
            };
        },
        ["items"] = (r, v, a, p) => NoArgs(a, "items", p, v) switch
        {
            Undefined => new List<object?>(),
            Dict d => d.Select(kv => (object?)new object?[] { kv.Key, kv.Value }).ToList(),
            _ => throw p.Error("Can only get item pairs from a mapping."),
        },
        ["dictsort"] = (r, v, a, p) =>
        {
            var b = a.Bind("dictsort", p, ("case_sensitive", false), ("by", "key"), ("reverse", false));
            if (v is not Dict d) throw p.Error("You can only sort by either \"key\" or \"value\" of a mapping");
            int index = b[1] as string == "value" ? 1 : 0;
            var pairs = d.Select(kv => (object?)new object?[] { kv.Key, kv.Value }).ToList();
            return Sorted(r, pairs, x => ((object?[])x!)[index], Py.Truthy(b[0]), Py.Truthy(b[2]), p);
        },
        ["selectattr"] = (r, v, a, p) => Select(r, v, a, p, byAttribute: true, keep: true),
        ["rejectattr"] = (r, v, a, p) => Select(r, v, a, p, byAttribute: true, keep: false),
        ["select"] = (r, v, a, p) => Select(r, v, a, p, byAttribute: false, keep: true),
        ["reject"] = (r, v, a, p) => Select(r, v, a, p, byAttribute: false, keep: false),
        ["map"] = Map,
        ["unique"] = (r, v, a, p) =>
        {
            var b = a.Bind("unique", p, ("case_sensitive", false), ("attribute", null));
            var seen = new List<object?>();
            var result = new List<object?>();
            foreach (var item in Items(r, v, p))
            {
                var key = Key(b[1] is null ? item : Attribute(item, b[1], p), Py.Truthy(b[0]));
                r.Step(p, seen.Count);
                if (seen.Any(s => Py.Equal(s, key))) continue;
                seen.Add(key);
                result.Add(item);
            }
            return result;
        },
        ["sort"] = (r, v, a, p) =>
        {
            var b = a.Bind("sort", p, ("reverse", false), ("case_sensitive", false), ("attribute", null));
            return Sorted(r, Items(r, v, p).ToList(), x => b[2] is null ? x : Attribute(x, b[2], p), Py.Truthy(b[1]), Py.Truthy(b[0]), p);
        },
        ["reverse"] = (r, v, a, p) => NoArgs(a, "reverse", p, v) is string s
            ? string.Concat(Py.CodePoints(s).AsEnumerable().Reverse())
            : Items(r, v, p).Reverse().ToList(),
        ["max"] = (r, v, a, p) => MinMax(r, v, a, p, max: true),
        ["min"] = (r, v, a, p) => MinMax(r, v, a, p, max: false),
        ["sum"] = (r, v, a, p) =>
        {
            var b = a.Bind("sum", p, ("attribute", null), ("start", 0L));
            object? total = b[1];
            foreach (var item in Items(r, v, p))
                total = Operators.Binary(r, "+", total, b[0] is null ? item : Attribute(item, b[0], p), p);
            return total;
        },
        ["indent"] = Indent,
        ["safe"] = (r, v, a, p) => NoArgs(a, "safe", p, v),
        ["escape"] = Escape,
        ["e"] = Escape,
        ["attr"] = (r, v, a, p) => Members.GetAttribute(v, Soft(a.Bind("attr", p, ("name", Required.Value))[0]), p),
        ["tojson"] = (r, v, a, p) =>
        {
            var b = a.Bind("tojson", p, ("ensure_ascii", false), ("indent", null), ("separators", null), ("sort_keys", false));
            if (b[2] is not null) throw p.Error("tojson(separators=...) is not supported");
            string json = Json.Serialize(v, b[1], Py.Truthy(b[0]), Py.Truthy(b[3]), p);
            r.ReserveString(json.Length, p);
            return json;
        },
        ["wordcount"] = (r, v, a, p) => NoArgs(a, "wordcount", p, (long)WordPattern().Matches(Soft(v)).Count),
        ["center"] = (r, v, a, p) =>
        {
            var s = Soft(v);
            int width = (int)Math.Min(a.Bind("center", p, ("width", 80L))[0] is long w ? w : 80, 100_000);
            if (width <= s.Length) return s;
            int left = (width - s.Length) / 2 + ((width - s.Length) % 2 & width % 2);
            r.ReserveString(width, p);
            return new string(' ', left) + s + new string(' ', width - s.Length - left);
        },
    };

    public static bool IsKnown(string name) => All.ContainsKey(name);

    public static object? Apply(Renderer r, string name, object? value, Args args, Pos pos)
    {
        r.Step(pos);
        if (!All.TryGetValue(name, out var filter)) throw pos.Error($"Unsupported filter '{name}'");
        return filter(r, value, args, pos);
    }

    [GeneratedRegex(@"([-\s({\[<]+)")]
    private static partial Regex WordBeginning();

    [GeneratedRegex(@"\w+")]
    private static partial Regex WordPattern();

    /// <summary>str(), with Undefined as empty (Jinja's soft_str).</summary>
    private static string Soft(object? v) => Py.Str(v);

    private static T NoArgs<T>(Args a, string name, Pos pos, T result)
    {
        a.Bind(name, pos);
        return result;
    }

    private static string? OptionalString(object? v, Pos pos) => v switch
    {
        null => null,
        string s => s,
        _ => throw pos.Error($"expected a string, not '{Py.TypeName(v)}'"),
    };

    private static IReadOnlyList<object?> Items(Renderer r, object? value, Pos pos)
    {
        var items = r.Iterate(value, pos);
        r.Step(pos, items.Count);
        return items;
    }

    private static object? Length(Renderer r, object? v, Args a, Pos p) => NoArgs(a, "length", p, v) switch
    {
        string s => (long)Py.Length(s),
        IList<object?> l => (long)l.Count,
        Dict d => (long)d.Count,
        Undefined => 0L,
        _ => throw p.Error($"object of type '{Py.TypeName(v)}' has no len()"),
    };

    private static object? Default(Renderer r, object? v, Args a, Pos p)
    {
        var b = a.Bind("default", p, ("default_value", ""), ("boolean", false));
        return v is Undefined || (Py.Truthy(b[1]) && !Py.Truthy(v)) ? b[0] : v;
    }

    private static object? Int(Renderer r, object? v, Args a, Pos p)
    {
        var b = a.Bind("int", p, ("default", 0L), ("base", 10L));
        long numberBase = b[1] is long nb ? nb : 10;
        switch (v)
        {
            case long or bool: return Py.AsLong(v);
            case double d: return double.IsFinite(d) && Math.Abs(d) < 9.2e18 ? (long)Math.Truncate(d) : b[0];
            case string s:
                var t = s.Trim(Lexer.PyWhitespace).Replace("_", "");
                try
                {
                    if (numberBase == 10 && long.TryParse(t, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out long l)) return l;
                    if (numberBase is 2 or 8 or 16) return Convert.ToInt64(t, (int)numberBase);
                }
                catch (Exception e) when (e is FormatException or OverflowException or ArgumentException) { }
                return ToFloat(s) is double f && double.IsFinite(f) && Math.Abs(f) < 9.2e18 ? (long)Math.Truncate(f) : b[0];
            default: return b[0];
        }
    }

    private static double? ToFloat(object? v) => v switch
    {
        long or bool or double => Py.ToDouble(v),
        string s when double.TryParse(s.Trim(Lexer.PyWhitespace).Replace("_", ""), NumberStyles.Float, CultureInfo.InvariantCulture, out double d) => d,
        string s when s.Trim(Lexer.PyWhitespace).ToLowerInvariant() is "inf" or "+inf" or "infinity" => double.PositiveInfinity,
        string s when s.Trim(Lexer.PyWhitespace).ToLowerInvariant() is "-inf" or "-infinity" => double.NegativeInfinity,
        string s when s.Trim(Lexer.PyWhitespace).ToLowerInvariant() is "nan" => double.NaN,
        _ => null,
    };

    /// <summary>An item's attribute as Jinja's attrgetter resolves it: dotted parts, integer parts as indexes.</summary>
    private static object? Attribute(object? item, object? attribute, Pos pos)
    {
        if (attribute is long or bool) return Members.GetItem(item, attribute, pos);
        foreach (var part in Soft(attribute).Split('.'))
            item = Members.GetItem(item, long.TryParse(part, NumberStyles.None, CultureInfo.InvariantCulture, out long i) ? i : part, pos);
        return item;
    }

    private static object? Key(object? value, bool caseSensitive) => !caseSensitive && value is string s ? s.ToLowerInvariant() : value;

    private static List<object?> Sorted(Renderer r, List<object?> items, Func<object?, object?> key, bool caseSensitive, bool reverse, Pos pos)
    {
        r.Step(pos, (long)items.Count * Math.Max(1, (long)Math.Log2(items.Count + 1)));
        var keyed = items.Select((x, i) => (Item: x, Key: Key(key(x), caseSensitive), Index: i)).ToList();
        keyed.Sort((x, y) =>
        {
            int c = Py.Compare(x.Key, y.Key, pos);
            if (reverse) c = -c;
            return c != 0 ? c : x.Index.CompareTo(y.Index);
        });
        return keyed.Select(k => k.Item).ToList();
    }

    private static object? MinMax(Renderer r, object? v, Args a, Pos p, bool max)
    {
        var b = a.Bind(max ? "max" : "min", p, ("case_sensitive", false), ("attribute", null));
        var items = Items(r, v, p);
        if (items.Count == 0) return new Undefined($"No aggregated item, sequence was empty.");
        var best = items[0];
        foreach (var item in items.Skip(1))
        {
            var x = Key(b[1] is null ? item : Attribute(item, b[1], p), Py.Truthy(b[0]));
            var y = Key(b[1] is null ? best : Attribute(best, b[1], p), Py.Truthy(b[0]));
            int c = Py.Compare(x, y, p);
            if (max ? c > 0 : c < 0) best = item;
        }
        return best;
    }

    private static object? Select(Renderer r, object? v, Args a, Pos p, bool byAttribute, bool keep)
    {
        if (a.Named.Count > 0) throw p.Error("select/reject filters take no keyword arguments");
        var args = a.Positional;
        int at = 0;
        object? attribute = null;
        if (byAttribute)
        {
            if (args.Count == 0) throw p.Error("Missing parameter for attribute name");
            attribute = args[at++];
        }
        string? test = null;
        if (at < args.Count) test = args[at++] as string ?? throw p.Error("The test name must be a string");
        if (test is not null && !Tests.IsKnown(test)) throw p.Error($"No test named '{test}'");
        var testArgs = args.Skip(at).ToList();
        var result = new List<object?>();
        foreach (var item in Items(r, v, p))
        {
            var value = byAttribute ? Attribute(item, attribute, p) : item;
            bool ok = test is null ? Py.Truthy(value) : Tests.Apply(r, test, value, testArgs, p);
            if (ok == keep) result.Add(item);
        }
        return result;
    }

    private static object? Map(Renderer r, object? v, Args a, Pos p)
    {
        var items = Items(r, v, p);
        if (a.Positional.Count == 0)
        {
            var b = a.Bind("map", p, ("attribute", Required.Value), ("default", null));
            bool hasDefault = a.Named.Any(kv => kv.Key == "default");
            return items.Select(x =>
            {
                var value = Attribute(x, b[0], p);
                return hasDefault && value is Undefined ? b[1] : value;
            }).ToList();
        }
        string filter = a.Positional[0] as string ?? throw p.Error("map() needs a filter name or attribute=");
        if (!IsKnown(filter)) throw p.Error($"No filter named '{filter}'");
        var rest = new Args(a.Positional.Skip(1).ToList(), a.Named);
        return items.Select(x => Apply(r, filter, x, rest, p)).ToList();
    }

    private static object? Indent(Renderer r, object? v, Args a, Pos p)
    {
        var b = a.Bind("indent", p, ("width", 4L), ("first", false), ("blank", false));
        string indentation = b[0] is string w ? w : new string(' ', (int)Math.Clamp(b[0] is long n ? n : 4, 0, 10_000));
        var lines = (Soft(v) + "\n").Replace("\r\n", "\n").Split('\n').ToList();
        lines.RemoveAt(lines.Count - 1);
        r.ReserveString(Soft(v).Length + (long)lines.Count * indentation.Length, p);
        string result;
        if (Py.Truthy(b[2])) result = string.Join("\n" + indentation, lines);
        else
        {
            result = lines[0];
            if (lines.Count > 1) result += "\n" + string.Join("\n", lines.Skip(1).Select(l => l.Length > 0 ? indentation + l : l));
        }
        return Py.Truthy(b[1]) ? indentation + result : result;
    }

    private static object? Escape(Renderer r, object? v, Args a, Pos p)
    {
        var s = NoArgs(a, "escape", p, v is Undefined ? "" : Py.Str(v));
        var sb = new StringBuilder(s.Length);
        foreach (char c in s)
        {
            sb.Append(c switch
            {
                '&' => "&amp;",
                '<' => "&lt;",
                '>' => "&gt;",
                '"' => "&#34;",
                '\'' => "&#39;",
                _ => c.ToString(),
            });
        }
        return sb.ToString();
    }
}
