using Microsoft.ML.Tokenizers;

namespace Microsoft.ML.Orpo.Tokenization;

/// <summary>Runs the Hugging Face normalizer steps (Unicode forms, lowercasing) in order.</summary>
internal sealed class TextNormalizer : Normalizer
{
    private readonly IReadOnlyList<Func<string, string>> _steps;

    public TextNormalizer(IReadOnlyList<Func<string, string>> steps) => _steps = steps;

    /// <inheritdoc />
    public override string Normalize(string original)
    {
        string text = original ?? string.Empty;
        foreach (var step in _steps) text = step(text);
        return text;
    }

    /// <inheritdoc />
    public override string Normalize(ReadOnlySpan<char> original) => Normalize(original.ToString());
}
