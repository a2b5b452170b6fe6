using Microsoft.ML.Orpo.Generation;

namespace Microsoft.ML.Orpo.Chat;

/// <summary>
/// Turns "the ids generated so far" into pieces of text that are final: the concatenated pieces equal the whole
/// response. A tail is held back while it could still change: a replacement character (a UTF-8 character cut between
/// tokens) or the start of a stop sequence, which is cut from the response if it completes.
/// </summary>
internal sealed class StreamedText(Func<IReadOnlyList<int>, string> decode, IReadOnlyList<string> stops)
{
    private string sent = "";

    /// <summary>The new final text after another token, or null when there is none yet.</summary>
    public string? Advance(IReadOnlyList<int> ids)
    {
        string text = StopSequenceMatcher.Cut(decode(ids), stops);
        int safe = text.Length;
        while (safe > 0 && text[safe - 1] == '\uFFFD') safe--;
        foreach (string stop in stops)
            for (int n = Math.Min(stop.Length - 1, safe); n > 0; n--)
                if (string.CompareOrdinal(text, safe - n, stop, 0, n) == 0) { safe -= n; break; }
        return Send(text[..safe]);
    }

    /// <summary>What remains of the final response after the pieces already sent.</summary>
    public string? Finish(string response) => Send(response);

    private string? Send(string text)
    {
        if (text.Length <= sent.Length || !text.StartsWith(sent, StringComparison.Ordinal)) return null;
        string piece = text[sent.Length..];
        sent = text;
        return piece;
    }
}
