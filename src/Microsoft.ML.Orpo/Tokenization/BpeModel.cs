using System.Globalization;
using System.Text;

namespace Microsoft.ML.Orpo.Tokenization;

/// <summary>
/// Hugging Face's BPE model on one pre-tokenized word: characters to ids (with the continuing-subword prefix and
/// end-of-word suffix, byte fallback to <c>&lt;0xXX&gt;</c> tokens, unknown-token fusing), then merges applied
/// lowest rank first (leftmost on ties) through a priority queue over a linked list of symbols, so a word of n
/// characters costs O(n log n). With <c>ignore_merges</c> a word that is itself in the vocabulary is one token.
/// </summary>
internal sealed class BpeModel
{
    private readonly Dictionary<string, int> _vocab;
    private readonly Dictionary<long, (int Rank, int Id)> _merges;
    private readonly int? _unknownId;
    private readonly bool _fuseUnknown, _byteFallback, _ignoreMerges;
    private readonly string _prefix, _suffix;
    private readonly int[] _byteIds = new int[256];
    // Words repeat: Hugging Face caches them too. Bounded, and only short words, so memory stays small.
    private readonly System.Collections.Concurrent.ConcurrentDictionary<string, int[]> _cache = new(StringComparer.Ordinal);
    private const int CacheCapacity = 20_000, CachedWordLength = 64;

    public BpeModel(HfTokenizerJson json)
    {
        _vocab = json.Vocabulary;
        _prefix = json.ContinuingSubwordPrefix ?? "";
        _suffix = json.EndOfWordSuffix ?? "";
        _unknownId = json.UnknownToken is null ? null : _vocab[json.UnknownToken];
        (_fuseUnknown, _byteFallback, _ignoreMerges) = (json.FuseUnknownTokens, json.ByteFallback, json.IgnoreMerges);
        _merges = new Dictionary<long, (int, int)>(json.Merges.Count);
        for (int rank = 0; rank < json.Merges.Count; rank++)
        {
            string merge = json.Merges[rank];
            int space = merge.IndexOf(' ');
            string left = merge[..space], right = merge[(space + 1)..];
            // A repeated pair keeps its last rank, as Hugging Face's map building does.
            _merges[Key(_vocab[left], _vocab[right])] = (rank, _vocab[left + right[Math.Min(_prefix.Length, right.Length)..]]);
        }
        for (int b = 0; b < 256; b++)
            _byteIds[b] = _vocab.TryGetValue(string.Create(CultureInfo.InvariantCulture, $"<0x{b:X2}>"), out int id) ? id : -1;
    }

    private static long Key(int left, int right) => ((long)left << 32) | (uint)right;

    public void Encode(string word, List<int> output)
    {
        if (word.Length == 0) return;
        if (word.Length > CachedWordLength)
        {
            EncodeUncached(word, output);
            return;
        }
        if (!_cache.TryGetValue(word, out int[]? ids))
        {
            var list = new List<int>();
            EncodeUncached(word, list);
            ids = list.ToArray();
            if (_cache.Count < CacheCapacity) _cache.TryAdd(word, ids);
        }
        output.AddRange(ids);
    }

    private void EncodeUncached(string word, List<int> output)
    {
        if (_ignoreMerges && _vocab.TryGetValue(word, out int whole))
        {
            output.Add(whole);
            return;
        }
        var ids = new List<int>(word.Length);
        int? pendingUnknown = null;
        for (int i = 0; i < word.Length; i += char.IsSurrogatePair(word, i) ? 2 : 1)
        {
            int width = char.IsSurrogatePair(word, i) ? 2 : 1;
            string symbol = word.Substring(i, width);
            if (i > 0) symbol = _prefix + symbol;
            if (i + width == word.Length) symbol += _suffix;
            if (_vocab.TryGetValue(symbol, out int id))
            {
                if (pendingUnknown is int u) ids.Add(u);
                pendingUnknown = null;
                ids.Add(id);
                continue;
            }
            if (_byteFallback && ByteIds(symbol) is { } bytes)
            {
                ids.AddRange(bytes);
                continue;
            }
            if (_unknownId is int unknown)
            {
                if (pendingUnknown is int u && !_fuseUnknown) ids.Add(u);
                pendingUnknown = unknown;
            }
        }
        if (pendingUnknown is int last) ids.Add(last);
        Merge(ids);
        output.AddRange(ids);
    }

    private int[]? ByteIds(string symbol)
    {
        byte[] bytes = Encoding.UTF8.GetBytes(symbol);
        var ids = new int[bytes.Length];
        for (int i = 0; i < bytes.Length; i++)
            if ((ids[i] = _byteIds[bytes[i]]) < 0) return null;
        return ids;
    }

    private void Merge(List<int> ids)
    {
        int n = ids.Count;
        if (n < 2) return;
        int[] id = ids.ToArray(), prev = new int[n], next = new int[n];
        for (int i = 0; i < n; i++) (prev[i], next[i]) = (i - 1, i + 1 < n ? i + 1 : -1);
        var queue = new PriorityQueue<(int Pos, int NewId), long>();
        void Push(int pos)
        {
            int right = next[pos];
            if (right >= 0 && _merges.TryGetValue(Key(id[pos], id[right]), out var m))
                queue.Enqueue((pos, m.Id), ((long)m.Rank << 32) | (uint)pos);
        }
        for (int i = 0; i < n - 1; i++) Push(i);
        while (queue.TryDequeue(out var top, out _))
        {
            int pos = top.Pos, right = next[pos];
            // Stale entries: the symbol was merged away, or its pair changed since it was queued.
            if (id[pos] < 0 || right < 0 || !_merges.TryGetValue(Key(id[pos], id[right]), out var m) || m.Id != top.NewId) continue;
            id[pos] = m.Id;
            id[right] = -1;
            next[pos] = next[right];
            if (next[pos] >= 0) prev[next[pos]] = pos;
            if (prev[pos] >= 0) Push(prev[pos]);
            Push(pos);
        }
        ids.Clear();
        for (int i = 0; i >= 0; i = next[i]) ids.Add(id[i]);
    }
}
