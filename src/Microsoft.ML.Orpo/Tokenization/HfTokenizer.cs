using System.Text;

namespace Microsoft.ML.Orpo.Tokenization;

/// <summary>
/// A Hugging Face <c>tokenizer.json</c> BPE tokenizer run end to end as Hugging Face's tokenizers runs it: added
/// tokens that are not normalized are cut out of the raw text, the rest is normalized and cut at the normalized
/// added tokens, pre-tokenized, and each piece goes through the BPE model. Decoding maps ids back to tokens and
/// runs the file's decoder over all of them at once, so a character split across tokens decodes whole.
/// </summary>
internal sealed class HfTokenizer
{
    private readonly HfTokenizerJson _json;
    private readonly BpeModel _model;
    private readonly AddedTokenMatcher _raw, _normalized;
    private readonly Dictionary<int, string> _idToToken;

    public HfTokenizer(HfTokenizerJson json, bool splitSpecialTokens)
    {
        _json = json;
        _model = new BpeModel(json);
        var matchable = json.AddedTokens.Where(t => !(splitSpecialTokens && t.Special)).ToList();
        _raw = new AddedTokenMatcher(matchable.Where(t => !t.Normalized).Select(t => (t.Content, t)));
        _normalized = new AddedTokenMatcher(matchable.Where(t => t.Normalized).Select(t => (Normalize(t.Content), t)));
        _idToToken = json.Vocabulary.ToDictionary(kv => kv.Value, kv => kv.Key);
        foreach (var t in json.AddedTokens) _idToToken[t.Id] = t.Content;
    }

    private string Normalize(string text) => _json.Normalizers.Aggregate(text, (t, step) => step(t));

    public List<int> Encode(string text)
    {
        text = WellFormed(text);
        var ids = new List<int>();
        Cut(text, 0, _raw, segment =>
        {
            string normalized = Normalize(segment.Text);
            Cut(normalized, segment.Start, _normalized, piece =>
            {
                var pieces = new List<Piece> { piece };
                foreach (var step in _json.PreTokenizer) pieces = step(pieces);
                foreach (Piece p in pieces) _model.Encode(p.Text, ids);
            }, ids);
        }, ids);
        return ids;
    }

    /// <summary>Calls <paramref name="plain"/> for the text between added tokens and adds the tokens' ids in order.</summary>
    private static void Cut(string text, int offset, AddedTokenMatcher matcher, Action<Piece> plain, List<int> ids)
    {
        if (text.Length == 0) return;
        int at = 0;
        if (!matcher.IsEmpty)
            foreach (var (start, end, id) in matcher.Find(text))
            {
                if (start > at) plain(new Piece(text[at..start], offset + at));
                ids.Add(id);
                at = end;
            }
        if (at < text.Length) plain(new Piece(at == 0 ? text : text[at..], offset + at));
    }

    /// <summary>Lone surrogates become U+FFFD, as they do on their way to Hugging Face's UTF-8 strings.</summary>
    private static string WellFormed(string text)
    {
        for (int i = 0; i < text.Length; i++)
        {
            if (!char.IsSurrogate(text[i])) continue;
            if (char.IsSurrogatePair(text, i)) { i++; continue; }
            var sb = new StringBuilder(text.Length);
            foreach (Rune r in text.EnumerateRunes()) sb.Append(r.ToString());
            return sb.ToString();
        }
        return text;
    }

    public string Decode(IEnumerable<int> ids)
    {
        var tokens = new List<string>();
        foreach (int id in ids)
            if (_idToToken.TryGetValue(id, out string? token)) tokens.Add(token);
        return _json.Decoder is { } decoder ? string.Concat(decoder(tokens)) : string.Join(" ", tokens);
    }
}
