namespace Microsoft.ML.Orpo.Templates;

/// <summary>Bounds on what one render may cost, against hostile or broken templates. Each exceeded limit fails with a
/// <see cref="TemplateException"/> naming it.</summary>
internal sealed record TemplateLimits
{
    public static readonly TemplateLimits Default = new();

    /// <summary>Evaluation steps (nodes, expressions, loop iterations, elements a filter visits).</summary>
    public long MaxSteps { get; init; } = 1_000_000;

    /// <summary>Nesting of tags and expressions in the source.</summary>
    public int MaxNesting { get; init; } = 200;

    /// <summary>Nested macro calls.</summary>
    public int MaxCallDepth { get; init; } = 64;

    /// <summary>Characters of the rendered output, and of any one string the template builds.</summary>
    public int MaxOutputLength { get; init; } = 4 << 20;

    /// <summary>Characters and list items built over a whole render (bounds memory and time spent copying).</summary>
    public long MaxAllocated { get; init; } = 64L << 20;

    /// <summary>Length of a range() and of any list the template builds (Jinja's sandbox allows ranges of 100,000).</summary>
    public int MaxCollectionLength { get; init; } = 100_000;
}

/// <summary>Variables of one render, chained to the enclosing scope.</summary>
internal sealed class Scope(Scope? parent)
{
    private readonly Dictionary<string, object?> vars = new(StringComparer.Ordinal);

    public Scope? Parent { get; } = parent;

    public bool TryGet(string name, out object? value)
    {
        for (var s = this; s is not null; s = s.Parent)
            if (s.vars.TryGetValue(name, out value)) return true;
        value = null;
        return false;
    }

    public void Set(string name, object? value) => vars[name] = value;
}
