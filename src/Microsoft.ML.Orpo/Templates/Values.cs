namespace Microsoft.ML.Orpo.Templates;

// Template values are only these types: string, long, double, bool, null (None), Undefined, List<object?> (list),
// object?[] (tuple), Dict, Namespace, Macro, Builtin, BoundMethod and LoopInfo. Nothing else ever reaches the
// evaluator, so a template can never touch a .NET object.

/// <summary>Jinja's default Undefined: renders empty, is falsy and iterates as empty; most other uses fail.</summary>
internal sealed class Undefined(string description)
{
    /// <summary>Why it is undefined, as Jinja words it ("'x' is undefined").</summary>
    public string Description { get; } = description;
}

/// <summary>An insertion-ordered mapping with Python key equality.</summary>
internal sealed class Dict : OrderedDictionary<object, object?>
{
    public Dict() : base(ValueComparer.Instance) { }
}

/// <summary>Jinja's <c>namespace()</c>: the one value a template may mutate (<c>set ns.x = ...</c>).</summary>
internal sealed class Namespace
{
    public Dictionary<string, object?> Attributes { get; } = new(StringComparer.Ordinal);
}

internal delegate object? BuiltinBody(Renderer renderer, Args args, Pos pos);

/// <summary>A global function (range, namespace, raise_exception, ...).</summary>
internal sealed record Builtin(string Name, BuiltinBody Body);

/// <summary>A method of a string, list or dict, bound to its receiver.</summary>
internal sealed record BoundMethod(object Receiver, string Name);

/// <summary>A <c>{% macro %}</c>, closing over the scope that defined it.</summary>
internal sealed record Macro(string Name, IReadOnlyList<(string Name, Expr? Default)> Parameters, IReadOnlyList<Node> Body, Scope Closure);

/// <summary>The <c>loop</c> variable of a for loop.</summary>
internal sealed class LoopInfo(IReadOnlyList<object?> items, int index)
{
    public IReadOnlyList<object?> Items { get; } = items;
    public int Index { get; set; } = index;
}

/// <summary>Call arguments: positional, then keyword.</summary>
internal sealed record Args(List<object?> Positional, List<KeyValuePair<string, object?>> Named)
{
    public static Args Of(params object?[] positional) => new(positional.ToList(), new());

    /// <summary>Binds to a Python signature: parameter i is positional i or keyword name; missing ones get the default.</summary>
    public object?[] Bind(string function, Pos pos, params (string Name, object? Default)[] parameters)
    {
        if (Positional.Count > parameters.Length)
            throw pos.Error($"{function}() takes at most {parameters.Length} arguments ({Positional.Count} given)");
        var bound = new object?[parameters.Length];
        var set = new bool[parameters.Length];
        for (int i = 0; i < Positional.Count; i++) { bound[i] = Positional[i]; set[i] = true; }
        foreach (var (name, value) in Named)
        {
            int i = Array.FindIndex(parameters, p => p.Name == name);
            if (i < 0) throw pos.Error($"{function}() got an unexpected keyword argument '{name}'");
            if (set[i]) throw pos.Error($"{function}() got multiple values for argument '{name}'");
            bound[i] = value;
            set[i] = true;
        }
        for (int i = 0; i < parameters.Length; i++)
            if (!set[i]) bound[i] = parameters[i].Default;
        return bound;
    }
}

/// <summary>Marks a required parameter in <see cref="Args.Bind"/>.</summary>
internal sealed class Required
{
    public static readonly Required Value = new();
}

/// <summary>Python equality and hashing of template values (1 == 1.0 == True; lists by content).</summary>
internal sealed class ValueComparer : IEqualityComparer<object>
{
    public static readonly ValueComparer Instance = new();

    public new bool Equals(object? x, object? y) => Py.Equal(x, y);

    public int GetHashCode(object obj) => obj switch
    {
        bool b => b ? 1 : 0,
        long l => l.GetHashCode(),
        double d => d == Math.Floor(d) && Math.Abs(d) < 9e18 ? ((long)d).GetHashCode() : d.GetHashCode(),
        string s => StringComparer.Ordinal.GetHashCode(s),
        _ => 0,
    };
}
