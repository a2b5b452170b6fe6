namespace Microsoft.ML.Orpo.Templates;

/// <summary>Jinja's built-in tests (<c>x is defined</c>, <c>x is divisibleby 3</c>, ...).</summary>
internal static class Tests
{
    private delegate bool Test(Renderer r, object? value, IReadOnlyList<object?> args, Pos pos);

    private static readonly Dictionary<string, Test> All = new(StringComparer.Ordinal)
    {
        ["defined"] = (r, v, a, p) => v is not Undefined,
        ["undefined"] = (r, v, a, p) => v is Undefined,
        ["none"] = (r, v, a, p) => v is null,
        ["string"] = (r, v, a, p) => v is string,
        ["mapping"] = (r, v, a, p) => v is Dict,
        ["iterable"] = (r, v, a, p) => v is string or IList<object?> or Dict or Undefined or LoopInfo,
        ["sequence"] = (r, v, a, p) => v is string or IList<object?> or Dict,
        ["number"] = (r, v, a, p) => Py.IsNumber(v),
        ["integer"] = (r, v, a, p) => v is long,
        ["float"] = (r, v, a, p) => v is double,
        ["boolean"] = (r, v, a, p) => v is bool,
        ["true"] = (r, v, a, p) => v is true,
        ["false"] = (r, v, a, p) => v is false,
        ["callable"] = (r, v, a, p) => v is Macro or Builtin or BoundMethod,
        ["escaped"] = (r, v, a, p) => false,
        ["lower"] = (r, v, a, p) => Py.Str(v) is var s && s.Any(char.IsLower) && !s.Any(char.IsUpper),
        ["upper"] = (r, v, a, p) => Py.Str(v) is var s && s.Any(char.IsUpper) && !s.Any(char.IsLower),
        ["odd"] = (r, v, a, p) => Py.Truthy(Operators.Binary(r, "%", v, 2L, p)),
        ["even"] = (r, v, a, p) => !Py.Truthy(Operators.Binary(r, "%", v, 2L, p)),
        ["divisibleby"] = (r, v, a, p) => !Py.Truthy(Operators.Binary(r, "%", v, Arg(a, p), p)),
        ["sameas"] = (r, v, a, p) => Arg(a, p) is var o && (v is null or bool or Undefined ? Py.Equal(v, o) && v?.GetType() == o?.GetType() : ReferenceEquals(v, o)),
        ["in"] = (r, v, a, p) => Operators.Contains(r, Arg(a, p), v, p),
    };

    static Tests()
    {
        foreach (var (op, names) in new[] { ("==", "eq equalto"), ("!=", "ne"), ("<", "lt lessthan"), ("<=", "le"), (">", "gt greaterthan"), (">=", "ge") })
        {
            Test test = (r, v, a, p) => Operators.Compare(r, op, v, Arg(a, p), p);
            All[op] = test;
            foreach (var name in names.Split(' ')) All[name] = test;
        }
    }

    private static object? Arg(IReadOnlyList<object?> args, Pos pos) =>
        args.Count == 1 ? args[0] : throw pos.Error($"The test takes exactly one argument ({args.Count} given)");

    public static bool IsKnown(string name) => All.ContainsKey(name);

    public static bool Apply(Renderer r, string name, object? value, IReadOnlyList<object?> args, Pos pos)
    {
        r.Step(pos);
        if (!All.TryGetValue(name, out var test)) throw pos.Error($"Unsupported test '{name}'");
        if (args.Count > 0 && name is "defined" or "undefined" or "none" or "string" or "mapping" or "iterable" or "sequence"
                or "number" or "integer" or "float" or "boolean" or "true" or "false" or "callable" or "escaped" or "lower" or "upper" or "odd" or "even")
            throw pos.Error($"The test '{name}' takes no arguments");
        return test(r, value, args, pos);
    }
}
