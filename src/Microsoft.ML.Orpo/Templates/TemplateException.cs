namespace Microsoft.ML.Orpo.Templates;

/// <summary>
/// A chat template could not be parsed or rendered: a syntax error, an unsupported construct, a runtime error, an
/// exceeded limit, or the template's own <c>raise_exception</c> (then <see cref="Exception.Message"/> is exactly the
/// template's message and <see cref="RaisedByTemplate"/> is true).
/// </summary>
public sealed class TemplateException : Exception
{
    internal TemplateException(string message, int line, int column, bool raisedByTemplate = false)
        : base(raisedByTemplate || line <= 0 ? message : $"{message} (at line {line}, column {column})")
    {
        Line = line;
        Column = column;
        RaisedByTemplate = raisedByTemplate;
    }

    /// <summary>The 1-based template line the error is at (0 when unknown).</summary>
    public int Line { get; }

    /// <summary>The 1-based column the error is at (0 when unknown).</summary>
    public int Column { get; }

    /// <summary>Whether the template itself rejected the input through <c>raise_exception</c>.</summary>
    public bool RaisedByTemplate { get; }
}

/// <summary>A source position, 1-based.</summary>
internal readonly record struct Pos(int Line, int Column)
{
    public TemplateException Error(string message) => new(message, Line, Column);
}
