using System.Globalization;
using System.Text;
using System.Text.Json;

namespace Microsoft.ML.Orpo.Templates;

/// <summary>
/// A parsed Jinja chat template, rendered as transformers' <c>apply_chat_template</c> renders it: Jinja's sandboxed
/// semantics with <c>trim_blocks</c>, <c>lstrip_blocks</c>, loop controls, <c>raise_exception</c>,
/// <c>strftime_now</c> and a <c>tojson</c> that keeps non-ASCII text. No I/O and no .NET objects are reachable from
/// a template, and every render is bounded by <see cref="TemplateLimits"/>.
/// </summary>
internal sealed class ChatTemplate
{
    private readonly IReadOnlyList<Node> nodes;
    private readonly TemplateLimits limits;

    private ChatTemplate(IReadOnlyList<Node> nodes, TemplateLimits limits)
    {
        this.nodes = nodes;
        this.limits = limits;
    }

    /// <exception cref="TemplateException">The source is malformed or uses an unsupported construct.</exception>
    public static ChatTemplate Parse(string source, TemplateLimits? limits = null)
    {
        ArgumentNullException.ThrowIfNull(source);
        limits ??= TemplateLimits.Default;
        return new ChatTemplate(Parser.Parse(source, limits.MaxNesting), limits);
    }

    /// <summary>Renders with <paramref name="variables"/> (template values, see <see cref="FromJson"/>); <c>strftime_now</c>
    /// reads <paramref name="clock"/> (the local time by default).</summary>
    /// <exception cref="TemplateException">Rendering failed, a limit was exceeded, or the template raised an exception.</exception>
    public string Render(IReadOnlyDictionary<string, object?> variables, Func<DateTimeOffset>? clock = null)
    {
        var globals = new Scope(null);
        foreach (var builtin in Builtins) globals.Set(builtin.Name, builtin);
        var context = new Scope(globals);
        foreach (var (name, value) in variables) context.Set(name, value);
        try
        {
            return new Renderer(limits, clock ?? (() => DateTimeOffset.Now)).Render(nodes, context);
        }
        catch (InsufficientExecutionStackException)
        {
            throw new TemplateException("The template nests too deeply to evaluate", 0, 0);
        }
    }

    private static readonly Builtin[] Builtins =
    [
        new("range", Range),
        new("namespace", (r, a, p) =>
        {
            var ns = new Namespace();
            foreach (var initial in a.Positional)
            {
                if (initial is not Dict d) throw p.Error("namespace() takes a mapping and keyword arguments");
                foreach (var (k, v) in d) ns.Attributes[Py.Str(k)] = v;
            }
            foreach (var (k, v) in a.Named) ns.Attributes[k] = v;
            return ns;
        }),
        new("dict", (r, a, p) =>
        {
            if (a.Positional.Count > 0) throw p.Error("dict() takes keyword arguments only");
            var d = new Dict();
            foreach (var (k, v) in a.Named) d[k] = v;
            return d;
        }),
        new("raise_exception", (r, a, p) =>
            throw new TemplateException(Py.Str(a.Bind("raise_exception", p, ("message", Required.Value))[0]), p.Line, p.Column, raisedByTemplate: true)),
        new("strftime_now", (r, a, p) => Strftime(Py.Str(a.Bind("strftime_now", p, ("format", Required.Value))[0]), r.Clock(), p)),
    ];

    private static object? Range(Renderer r, Args a, Pos p)
    {
        if (a.Named.Count > 0 || a.Positional.Count is 0 or > 3) throw p.Error("range() takes 1 to 3 positional arguments");
        var values = a.Positional.Select(v => v is long or bool ? Py.AsLong(v) : throw p.Error($"'{Py.TypeName(v)}' object cannot be interpreted as an integer")).ToArray();
        long start = values.Length > 1 ? values[0] : 0, stop = values.Length > 1 ? values[1] : values[0], step = values.Length > 2 ? values[2] : 1;
        if (step == 0) throw p.Error("range() arg 3 must not be zero");
        double count = Math.Max(0, Math.Ceiling(((double)stop - start) / step));
        if (count > r.Limits.MaxCollectionLength)
            throw p.Error($"Range too big. The sandbox blocks ranges larger than {r.Limits.MaxCollectionLength}");
        r.ReserveList((long)count, p);
        var list = new List<object?>((int)count);
        for (long i = 0; i < (long)count; i++) list.Add(start + i * step);
        return list;
    }

    private static readonly string[] Months = CultureInfo.InvariantCulture.DateTimeFormat.MonthNames;
    private static readonly string[] Days = CultureInfo.InvariantCulture.DateTimeFormat.DayNames;

    /// <summary>C's strftime in the C locale, for the directives chat templates use.</summary>
    internal static string Strftime(string format, DateTimeOffset t, Pos pos)
    {
        var sb = new StringBuilder();
        for (int i = 0; i < format.Length; i++)
        {
            if (format[i] != '%' || i + 1 >= format.Length) { sb.Append(format[i]); continue; }
            char c = format[++i];
            bool noPad = c == '-' && i + 1 < format.Length;
            if (noPad) c = format[++i];
            string Num(int v, int width) => noPad ? v.ToString(CultureInfo.InvariantCulture) : v.ToString(new string('0', width), CultureInfo.InvariantCulture);
            sb.Append(c switch
            {
                'Y' => t.Year.ToString(CultureInfo.InvariantCulture),
                'y' => Num(t.Year % 100, 2),
                'm' => Num(t.Month, 2),
                'd' => Num(t.Day, 2),
                'e' => noPad ? Num(t.Day, 1) : t.Day.ToString(CultureInfo.InvariantCulture).PadLeft(2),
                'j' => Num(t.DayOfYear, 3),
                'H' => Num(t.Hour, 2),
                'I' => Num(t.Hour % 12 == 0 ? 12 : t.Hour % 12, 2),
                'M' => Num(t.Minute, 2),
                'S' => Num(t.Second, 2),
                'p' => t.Hour < 12 ? "AM" : "PM",
                'B' => Months[t.Month - 1],
                'b' or 'h' => Months[t.Month - 1][..3],
                'A' => Days[(int)t.DayOfWeek],
                'a' => Days[(int)t.DayOfWeek][..3],
                'w' => ((int)t.DayOfWeek).ToString(CultureInfo.InvariantCulture),
                'u' => (t.DayOfWeek == DayOfWeek.Sunday ? 7 : (int)t.DayOfWeek).ToString(CultureInfo.InvariantCulture),
                'F' => t.ToString("yyyy-MM-dd", CultureInfo.InvariantCulture),
                'T' => t.ToString("HH:mm:ss", CultureInfo.InvariantCulture),
                'D' => t.ToString("MM/dd/yy", CultureInfo.InvariantCulture),
                'R' => t.ToString("HH:mm", CultureInfo.InvariantCulture),
                'z' => (t.Offset < TimeSpan.Zero ? "-" : "+") + t.Offset.Duration().ToString("hhmm", CultureInfo.InvariantCulture),
                'n' => "\n",
                't' => "\t",
                '%' => "%",
                _ => throw pos.Error($"Unsupported strftime directive '%{c}'"),
            });
        }
        return sb.ToString();
    }

    /// <summary>A JSON value as a template value (objects keep their key order).</summary>
    public static object? FromJson(JsonElement e) => e.ValueKind switch
    {
        JsonValueKind.Object => e.EnumerateObject().Aggregate(new Dict(), (d, p) => { d[p.Name] = FromJson(p.Value); return d; }),
        JsonValueKind.Array => e.EnumerateArray().Select(FromJson).ToList(),
        JsonValueKind.String => e.GetString(),
        JsonValueKind.Number => e.TryGetInt64(out long l) ? l : e.GetDouble(),
        JsonValueKind.True => true,
        JsonValueKind.False => false,
        _ => null,
    };
}
