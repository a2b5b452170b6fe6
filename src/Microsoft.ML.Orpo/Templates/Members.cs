using System.Text;

namespace Microsoft.ML.Orpo.Templates;

/// <summary>Attribute and item access, slicing, and the methods of strings, dicts, lists and <c>loop</c> a template
/// may call (the non-mutating ones, as Jinja's immutable sandbox allows).</summary>
internal static class Members
{
    private static readonly HashSet<string> StringMethods =
    [
        "strip", "lstrip", "rstrip", "split", "rsplit", "splitlines", "startswith", "endswith", "upper", "lower", "title",
        "capitalize", "replace", "find", "rfind", "count", "join", "isdigit", "isalpha", "isalnum", "isspace", "isupper",
        "islower", "removeprefix", "removesuffix",
    ];

    private static readonly HashSet<string> DictMethods = ["items", "keys", "values", "get"];
    private static readonly HashSet<string> ListMethods = ["count", "index"];

    public static object? GetAttribute(object? target, string name, Pos pos)
    {
        switch (target)
        {
            case Undefined u: throw pos.Error(u.Description);
            case Dict d:
                if (DictMethods.Contains(name)) return new BoundMethod(d, name);
                return d.TryGetValue(name, out var v) ? v : new Undefined($"'dict object' has no attribute '{name}'");
            case Namespace n:
                return n.Attributes.TryGetValue(name, out var a) ? a : new Undefined($"'Namespace' object has no attribute '{name}'");
            case string s when StringMethods.Contains(name): return new BoundMethod(s, name);
            case IList<object?> l when ListMethods.Contains(name): return new BoundMethod(l, name);
            case LoopInfo loop: return Loop(loop, name);
            case Macro m when name == "name": return m.Name;
            default: return new Undefined($"'{Py.TypeName(target)} object' has no attribute '{name}'");
        }
    }

    private static object? Loop(LoopInfo loop, string name)
    {
        int i = loop.Index, n = loop.Items.Count;
        return name switch
        {
            "index" => (long)(i + 1),
            "index0" => (long)i,
            "revindex" => (long)(n - i),
            "revindex0" => (long)(n - i - 1),
            "first" => i == 0,
            "last" => i == n - 1,
            "length" => (long)n,
            "depth" => 1L,
            "depth0" => 0L,
            "previtem" => i > 0 ? loop.Items[i - 1] : new Undefined("there is no previous item"),
            "nextitem" => i < n - 1 ? loop.Items[i + 1] : new Undefined("there is no next item"),
            "cycle" => new BoundMethod(loop, "cycle"),
            _ => new Undefined($"'LoopContext' object has no attribute '{name}'"),
        };
    }

    public static object? GetItem(object? target, object? key, Pos pos)
    {
        switch (target)
        {
            case Undefined u: throw pos.Error(u.Description);
            case Dict d:
                if (key is not (null or Undefined or IList<object?> or Dict or Namespace) && d.TryGetValue(key, out var v)) return v;
                return key is string name ? GetAttribute(d, name, pos) : new Undefined($"'dict object' has no attribute {Py.Repr(key, 0)}");
            case IList<object?> l when key is long or bool:
                long i = Py.AsLong(key);
                if (i < 0) i += l.Count;
                return i >= 0 && i < l.Count ? l[(int)i] : new Undefined($"'{Py.TypeName(l)} object' has no element {Py.AsLong(key)}");
            case string s when key is long or bool:
                var chars = Py.HasSurrogates(s) ? Py.CodePoints(s) : null;
                int count = chars?.Count ?? s.Length;
                long j = Py.AsLong(key);
                if (j < 0) j += count;
                if (j < 0 || j >= count) return new Undefined($"'str object' has no element {Py.AsLong(key)}");
                return chars is null ? s[(int)j].ToString() : chars[(int)j];
            default:
                return key is string attr ? GetAttribute(target, attr, pos) : new Undefined($"'{Py.TypeName(target)} object' has no element {Py.Repr(key, 0)}");
        }
    }

    public static object? Slice(Renderer r, object? target, object? start, object? stop, object? step, Pos pos)
    {
        if (target is Undefined u) throw pos.Error(u.Description);
        long? Bound(object? v, string what) => v switch
        {
            null => null,
            long or bool => Py.AsLong(v),
            Undefined un => throw pos.Error(un.Description),
            _ => throw pos.Error($"slice {what} must be an integer or None, not '{Py.TypeName(v)}'"),
        };
        long stepValue = Bound(step, "step") ?? 1;
        if (stepValue == 0) throw pos.Error("slice step cannot be zero");
        IList<object?> items = target switch
        {
            IList<object?> l => l,
            string s => Py.CodePoints(s).Cast<object?>().ToList(),
            _ => throw pos.Error($"'{Py.TypeName(target)}' object is not subscriptable"),
        };
        long n = items.Count;
        long Clamp(long? v, long fallback)
        {
            if (v is null) return fallback;
            long x = v.Value < 0 ? v.Value + n : v.Value;
            return stepValue > 0 ? Math.Clamp(x, 0, n) : Math.Clamp(x, -1, n - 1);
        }
        long from = Clamp(Bound(start, "start"), stepValue > 0 ? 0 : n - 1);
        long to = Clamp(Bound(stop, "stop"), stepValue > 0 ? n : -1);
        var result = new List<object?>();
        for (long i = from; stepValue > 0 ? i < to : i > to; i += stepValue) result.Add(items[(int)i]);
        r.Step(pos, result.Count);
        return target switch
        {
            string => string.Concat(result.Cast<string>()),
            object?[] => result.ToArray(),
            _ => result,
        };
    }

    public static object? CallMethod(Renderer r, BoundMethod m, Args args, Pos pos)
    {
        r.Step(pos);
        return m.Receiver switch
        {
            string s => StringMethod(r, s, m.Name, args, pos),
            Dict d => DictMethod(d, m.Name, args, pos),
            LoopInfo loop => loop.Items.Count == 0 || args.Positional.Count == 0
                ? throw pos.Error("no items for cycling given")
                : args.Positional[loop.Index % args.Positional.Count],
            IList<object?> l => ListMethod(l, m.Name, args, pos),
            _ => throw pos.Error($"'{m.Name}' is not callable"),
        };
    }

    private static object? DictMethod(Dict d, string name, Args args, Pos pos)
    {
        switch (name)
        {
            case "items": args.Bind("items", pos); return d.Select(kv => (object?)new object?[] { kv.Key, kv.Value }).ToList();
            case "keys": args.Bind("keys", pos); return d.Keys.Cast<object?>().ToList();
            case "values": args.Bind("values", pos); return d.Values.ToList();
            default:
                var a = args.Bind("get", pos, ("key", Required.Value), ("default", null));
                return a[0] is not (null or Undefined or IList<object?> or Dict or Namespace or Required) && d.TryGetValue(a[0]!, out var v) ? v : a[1];
        }
    }

    private static object? ListMethod(IList<object?> l, string name, Args args, Pos pos)
    {
        var a = args.Bind(name, pos, ("value", Required.Value));
        if (name == "count") return (long)l.Count(x => Py.Equal(x, a[0]));
        for (int i = 0; i < l.Count; i++) if (Py.Equal(l[i], a[0])) return (long)i;
        throw pos.Error($"{Py.Repr(a[0], 0)} is not in list");
    }

    private static string ArgString(object? v, string function, Pos pos) =>
        v as string ?? throw pos.Error($"{function}() argument must be str, not {Py.TypeName(v)}");

    private static string? OptionalChars(object? v, string function, Pos pos) => v is null ? null : ArgString(v, function, pos);

    private static object? StringMethod(Renderer r, string s, string name, Args args, Pos pos)
    {
        switch (name)
        {
            case "strip" or "lstrip" or "rstrip":
                var chars = OptionalChars(args.Bind(name, pos, ("chars", null))[0], name, pos);
                return Strip(s, chars, name != "rstrip", name != "lstrip");
            case "split" or "rsplit":
                var sp = args.Bind(name, pos, ("sep", null), ("maxsplit", -1L));
                var parts = Split(s, OptionalChars(sp[0], name, pos), sp[1] is long max ? max : -1, name == "rsplit", pos);
                r.ReserveList(parts.Count, pos);
                return parts;
            case "splitlines":
                args.Bind(name, pos);
                var lines = s.Split('\n').ToList();
                if (lines.Count > 0 && lines[^1].Length == 0) lines.RemoveAt(lines.Count - 1);
                return lines.Select(x => (object?)x.TrimEnd('\r')).ToList();
            case "startswith" or "endswith":
                var affix = args.Bind(name, pos, ("prefix", Required.Value))[0];
                var options = affix is IList<object?> tuple ? tuple.Select(x => ArgString(x, name, pos)) : [ArgString(affix, name, pos)];
                return options.Any(o => name == "startswith" ? s.StartsWith(o, StringComparison.Ordinal) : s.EndsWith(o, StringComparison.Ordinal));
            case "upper": args.Bind(name, pos); return s.ToUpperInvariant();
            case "lower": args.Bind(name, pos); return s.ToLowerInvariant();
            case "title": args.Bind(name, pos); return PyTitle(s);
            case "capitalize": args.Bind(name, pos); return Capitalize(s);
            case "replace":
                var rp = args.Bind(name, pos, ("old", Required.Value), ("new", Required.Value), ("count", -1L));
                return Replace(r, s, ArgString(rp[0], name, pos), ArgString(rp[1], name, pos), rp[2] is long c ? c : -1, pos);
            case "find" or "rfind":
                var needle = ArgString(args.Bind(name, pos, ("sub", Required.Value))[0], name, pos);
                int at = name == "find" ? s.IndexOf(needle, StringComparison.Ordinal) : s.LastIndexOf(needle, StringComparison.Ordinal);
                return at < 0 ? -1L : (long)Py.Length(s[..at]);
            case "count":
                var sub = ArgString(args.Bind(name, pos, ("sub", Required.Value))[0], name, pos);
                if (sub.Length == 0) return (long)Py.Length(s) + 1;
                long n = 0;
                for (int i = s.IndexOf(sub, StringComparison.Ordinal); i >= 0; i = s.IndexOf(sub, i + sub.Length, StringComparison.Ordinal)) n++;
                return n;
            case "join":
                var items = r.Iterate(args.Bind(name, pos, ("iterable", Required.Value))[0], pos);
                return Join(r, items.Select(x => ArgString(x, name, pos)), s, pos);
            case "removeprefix":
                var prefix = ArgString(args.Bind(name, pos, ("prefix", Required.Value))[0], name, pos);
                return s.StartsWith(prefix, StringComparison.Ordinal) ? s[prefix.Length..] : s;
            case "removesuffix":
                var suffix = ArgString(args.Bind(name, pos, ("suffix", Required.Value))[0], name, pos);
                return suffix.Length > 0 && s.EndsWith(suffix, StringComparison.Ordinal) ? s[..^suffix.Length] : s;
            default:
                args.Bind(name, pos);
                return s.Length > 0 && name switch
                {
                    "isdigit" => s.All(char.IsDigit),
                    "isalpha" => s.All(char.IsLetter),
                    "isalnum" => s.All(char.IsLetterOrDigit),
                    "isspace" => s.All(c => Array.IndexOf(Lexer.PyWhitespace, c) >= 0),
                    "isupper" => s.Any(char.IsUpper) && !s.Any(char.IsLower),
                    _ => s.Any(char.IsLower) && !s.Any(char.IsUpper),
                };
        }
    }

    public static string Strip(string s, string? chars, bool left, bool right)
    {
        char[] set = chars?.ToCharArray() ?? Lexer.PyWhitespace;
        if (left) s = s.TrimStart(set);
        if (right) s = s.TrimEnd(set);
        return s;
    }

    private static List<object?> Split(string s, string? sep, long maxsplit, bool fromRight, Pos pos)
    {
        if (sep is not null && sep.Length == 0) throw pos.Error("empty separator");
        var parts = new List<object?>();
        if (sep is null)
        {
            // Runs of whitespace separate; leading and trailing whitespace gives no empty parts.
            var words = new List<string>();
            string rest = fromRight ? s.TrimEnd(Lexer.PyWhitespace) : s.TrimStart(Lexer.PyWhitespace);
            while (rest.Length > 0)
            {
                if (maxsplit >= 0 && words.Count == maxsplit) { words.Add(rest); break; }
                if (!fromRight)
                {
                    int end = rest.IndexOfAny(Lexer.PyWhitespace);
                    if (end < 0) { words.Add(rest); break; }
                    words.Add(rest[..end]);
                    rest = rest[end..].TrimStart(Lexer.PyWhitespace);
                }
                else
                {
                    int start = rest.LastIndexOfAny(Lexer.PyWhitespace);
                    if (start < 0) { words.Add(rest); break; }
                    words.Add(rest[(start + 1)..]);
                    rest = rest[..start].TrimEnd(Lexer.PyWhitespace);
                }
            }
            if (fromRight) words.Reverse();
            parts.AddRange(words);
            return parts;
        }
        var all = s.Split(sep);
        if (maxsplit < 0 || maxsplit >= all.Length - 1) { parts.AddRange(all); return parts; }
        int keep = (int)maxsplit;
        if (!fromRight)
        {
            parts.AddRange(all.Take(keep));
            parts.Add(string.Join(sep, all.Skip(keep)));
        }
        else
        {
            parts.Add(string.Join(sep, all.Take(all.Length - keep)));
            parts.AddRange(all.Skip(all.Length - keep));
        }
        return parts;
    }

    public static string Replace(Renderer r, string s, string old, string replacement, long count, Pos pos)
    {
        if (count == 0) return s;
        int occurrences = 0;
        if (old.Length == 0) occurrences = Py.Length(s) + 1;
        else for (int i = s.IndexOf(old, StringComparison.Ordinal); i >= 0; i = s.IndexOf(old, i + old.Length, StringComparison.Ordinal)) occurrences++;
        if (count > 0) occurrences = (int)Math.Min(occurrences, count);
        r.ReserveString(s.Length + (long)occurrences * (replacement.Length - old.Length) + (old.Length == 0 ? (long)occurrences * replacement.Length : 0), pos);
        if (old.Length == 0)
        {
            var cps = Py.CodePoints(s);
            var sb = new StringBuilder();
            for (int i = 0; i <= cps.Count; i++)
            {
                if (i < occurrences) sb.Append(replacement);
                if (i < cps.Count) sb.Append(cps[i]);
            }
            return sb.ToString();
        }
        if (count < 0) return s.Replace(old, replacement, StringComparison.Ordinal);
        var result = new StringBuilder();
        int from = 0;
        for (int done = 0; done < occurrences; done++)
        {
            int i = s.IndexOf(old, from, StringComparison.Ordinal);
            result.Append(s, from, i - from).Append(replacement);
            from = i + old.Length;
        }
        return result.Append(s, from, s.Length - from).ToString();
    }

    public static string Join(Renderer r, IEnumerable<string> items, string separator, Pos pos)
    {
        var sb = new StringBuilder();
        bool first = true;
        foreach (var item in items)
        {
            if (!first) sb.Append(separator);
            first = false;
            r.ReserveString((long)sb.Length + item.Length, pos);
            sb.Append(item);
        }
        return sb.ToString();
    }

    public static string Capitalize(string s) =>
        s.Length == 0 ? s : char.ToUpperInvariant(s[0]) + s[1..].ToLowerInvariant();

    /// <summary>Python's str.title(): a letter after a non-letter is upper-cased, other letters lower-cased.</summary>
    private static string PyTitle(string s)
    {
        var sb = new StringBuilder(s.Length);
        bool previousCased = false;
        foreach (char c in s)
        {
            sb.Append(previousCased ? char.ToLowerInvariant(c) : char.ToUpperInvariant(c));
            previousCased = char.IsLetter(c);
        }
        return sb.ToString();
    }
}
