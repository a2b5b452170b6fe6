using Microsoft.ML.Orpo.Tokenization;

namespace Microsoft.ML.Orpo.Generation;

/// <summary>
/// Decides after each generated token whether a row's text contains a stop sequence, decoding only the last few
/// tokens instead of the whole text (which made every check O(n) and a generation O(n^2)).
/// </summary>
/// <remarks>
/// A stop sequence that appears for the first time after token n ends inside the text token n added, so it lies in
/// the last L UTF-16 units of the text (L its length), i.e. at most 3L UTF-8 bytes, which at least one byte per
/// text-producing token puts within the last 3L + 1 such tokens. Decoding a tail can differ from the same stretch of
/// the whole text only at its start (a SentencePiece leading space is dropped; up to three tokens of a UTF-8 character
/// cut by the window decode as replacement characters), so a window of 4L + 8 text-producing tokens always holds the
/// stop sequence intact. A match in the window is confirmed on the whole text before the row stops, so edge effects
/// cannot stop it early: rows stop at exactly the token the whole-text check stopped at.
/// </remarks>
internal sealed class StopSequenceMatcher
{
    private readonly IReadOnlyList<string> stops;
    private readonly OrpoTokenizer tokenizer;
    private readonly int window; // text-producing tokens decoded per check (BOS, EOS and control tokens do not count)

    public StopSequenceMatcher(IReadOnlyList<string> stops, OrpoTokenizer tokenizer)
    {
        if (stops.Count == 0 || stops.Any(string.IsNullOrEmpty))
            throw new ArgumentException("At least one stop sequence, none empty, is required.", nameof(stops));
        this.stops = stops;
        this.tokenizer = tokenizer;
        window = 4 * stops.Max(s => s.Length) + 8;
    }

    /// <summary>Whether the text of <paramref name="generated"/> contains a stop sequence.</summary>
    public bool ShouldStop(IReadOnlyList<int> generated)
    {
        int start = generated.Count, kept = 0;
        while (start > 0 && kept < window)
            if (!tokenizer.IsSkippedOnDecode(generated[--start])) kept++;
        if (start > 0)
        {
            var tail = new int[generated.Count - start];
            for (int i = 0; i < tail.Length; i++) tail[i] = generated[start + i];
            if (!Contains(tokenizer.Decode(tail), stops)) return false;
        }
        return Contains(tokenizer.Decode(generated), stops);
    }

    public static bool Contains(string text, IReadOnlyList<string> stops) =>
        stops.Any(s => text.Contains(s, StringComparison.Ordinal));

    /// <summary>The text up to the earliest stop sequence in it (all of it when there is none).</summary>
    public static string Cut(string text, IReadOnlyList<string> stops)
    {
        int cut = text.Length;
        foreach (string stop in stops)
        {
            int at = text.IndexOf(stop, StringComparison.Ordinal);
            if (at >= 0 && at < cut) cut = at;
        }
        return text[..cut];
    }
}
