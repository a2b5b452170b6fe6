using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Microsoft.ML.Orpo.Ops;

/// <summary>
/// Attention for packed rows <c>[prefix | continuation 0 | continuation 1 | ...]</c> (right-padded to L) in which every
/// continuation sees the prefix and its own past only: each token gets exactly the attention it would get in its own
/// sequence <c>[prefix | continuation j]</c>, while projections, MLP and norms run once per packed token.
/// </summary>
/// <remarks>
/// Two kernel calls instead of one dense (B, 1, L, L) mask, because libtorch's CPU attention kernel costs
/// rows x queries x keys (at these lengths one key block covers the whole sequence, so even causal attention skips
/// nothing): with B rows, prefixes up to P, continuations up to C and sequences up to T = max(prefix + continuation),
/// <list type="number">
/// <item>prefix queries over prefix keys: the packed rows' first P tokens, plain causal, B x P x P;</item>
/// <item>continuation queries over the keys of their own [prefix | continuation] sequence: N = continuations per row
/// x B rows (continuation j of packed row i is row j x B + i, so for ORPO chosen 0..B-1 and rejected B..2B-1, as in
/// the concatenated layout), queries and keys/values gathered from the packed tokens, a (N, 1, C, T) mask that puts
/// the causal diagonal at the prefix length, N x C x T.</item>
/// </list>
/// At prompt:response 2:1 (170 + 86 tokens, pairs of two responses) that is 4 x 170^2 + 8 x 86 x 256 = 0.29M score
/// entries per head against 4 x 342^2 = 0.47M for one dense mask and 8 x 256^2 = 0.52M for two causal
/// [prefix | continuation] sequences. Padding: a padded slot gathers its row's first token and is visible only to padded
/// queries, whose outputs are never scattered back, so padding adds nothing to real outputs and gets zero gradient;
/// every query sees at least key 0, so no softmax row is empty. Packed padding positions take a finite, unused output.
/// </remarks>
internal sealed class SharedPrefixAttention : IDisposable
{
    private readonly Tensor queries; // (N * C) flat packed index of each continuation query slot
    private readonly Tensor keys;    // (N * T) flat packed index of each key/value slot of the virtual sequences
    private readonly Tensor outputs; // (B * L) flat index of each packed token's output in [prefix outputs ; continuation outputs]
    private readonly Tensor mask;    // (N, 1, C, T) additive: query s of a row with prefix p sees keys 0..p+s

    private SharedPrefixAttention(Tensor queries, Tensor keys, Tensor outputs, Tensor mask, long packedRows, long packedLength, long prefixLength)
    {
        this.queries = queries;
        this.keys = keys;
        this.outputs = outputs;
        this.mask = mask;
        PackedRows = packedRows;
        PackedLength = packedLength;
        PrefixLength = prefixLength;
    }

    /// <summary>B.</summary>
    public long PackedRows { get; }
    /// <summary>L.</summary>
    public long PackedLength { get; }
    /// <summary>P: the longest prefix.</summary>
    public long PrefixLength { get; }
    /// <summary>N: continuations x B.</summary>
    public long VirtualRows => mask.shape[0];
    /// <summary>C: the longest continuation.</summary>
    public long ContinuationLength => mask.shape[2];
    /// <summary>T: the longest prefix + continuation (the longest sequence any token attends over).</summary>
    public long VirtualLength => mask.shape[3];

    /// <param name="packedLength">L, at least the longest packed row.</param>
    /// <param name="rows">Per packed row: the prefix length and the lengths of its continuations, in packed order.</param>
    /// <param name="device">Where the index and mask tensors live (the batch's device).</param>
    public static SharedPrefixAttention Create(int packedLength, IReadOnlyList<(int Prefix, int[] Continuations)> rows, Device device)
    {
        int b = rows.Count, count = rows[0].Continuations.Length;
        if (rows.Any(r => r.Continuations.Length != count)) throw new ArgumentException("Every row needs the same number of continuations.", nameof(rows));
        int p = rows.Max(r => r.Prefix), c = rows.Max(r => r.Continuations.Max()), t = rows.Max(r => r.Prefix + r.Continuations.Max());
        int n = count * b;
        var queries = new long[n * c];
        var keys = new long[n * t];
        var outputs = new long[b * packedLength];  // packed padding reads output 0: finite, never used
        var mask = new float[n * c * t];
        Array.Fill(mask, float.NegativeInfinity);
        for (int i = 0; i < b; i++)
        {
            var (prefix, continuations) = rows[i];
            long row = (long)i * packedLength;     // packed offset of row i
            for (int s = 0; s < prefix; s++) outputs[row + s] = (long)i * p + s;
            int start = prefix;                     // packed position of continuation j
            for (int j = 0; j < count; j++)
            {
                int v = j * b + i, length = continuations[j];
                Array.Fill(queries, row, v * c, c);  // padding slots: the row's first token
                Array.Fill(keys, row, v * t, t);
                for (int s = 0; s < prefix; s++) keys[v * t + s] = row + s;
                for (int s = 0; s < length; s++)
                {
                    queries[v * c + s] = keys[v * t + prefix + s] = row + start + s;
                    outputs[row + start + s] = (long)b * p + v * c + s;
                }
                for (int s = 0; s < c; s++)
                    Array.Fill(mask, 0f, (v * c + s) * t, Math.Min(prefix + s + 1, t));
                start += length;
            }
            if (start > packedLength) throw new ArgumentException($"Row {i} holds {start} tokens, more than the packed length {packedLength}.", nameof(rows));
        }
        return new SharedPrefixAttention(tensor(queries, device: device), tensor(keys, device: device), tensor(outputs, device: device),
            tensor(mask, new long[] { n, 1, c, t }, device: device), b, packedLength, p);
    }

    /// <summary>(B, H, L, d) packed queries, keys and values (RoPE applied, key/value heads expanded) -> (B, L, H*d).</summary>
    public Tensor Attend(Tensor q, Tensor k, Tensor v)
    {
        long heads = q.shape[1], dim = q.shape[3], width = heads * dim;
        // 1. Prefix tokens: the first P packed tokens are a causal sequence wherever they are prefix tokens.
        Tensor First(Tensor x) => x.narrow(2, 0, PrefixLength);
        var prefix = F.scaled_dot_product_attention(First(q), First(k), First(v), is_casual: true);      // (B, H, P, d)
        // 2. Continuation tokens over their own [prefix | continuation] sequence.
        var mask = this.mask.dtype == q.dtype ? this.mask : this.mask.to_type(q.dtype);
        var continuation = F.scaled_dot_product_attention(
            Gather(q, queries, ContinuationLength), Gather(k, keys, VirtualLength), Gather(v, keys, VirtualLength),
            attn_mask: mask);                                                                             // (N, H, C, d)
        // 3. Back to the packed layout, token-major for the output projection.
        var all = cat(new[] { Tokens(prefix), Tokens(continuation) }, 0);                                // (B*P + N*C, H*d)
        return all.index_select(0, outputs).view(PackedRows, PackedLength, width);

        static Tensor Tokens(Tensor y) => y.transpose(1, 2).reshape(-1, y.shape[1] * y.shape[3]);
    }

    /// <summary>(B, H, L, d) packed -> (N, H, length, d): the packed tokens listed in <paramref name="index"/>.</summary>
    private Tensor Gather(Tensor x, Tensor index, long length)
    {
        long heads = x.shape[1], dim = x.shape[3];
        var tokens = x.transpose(1, 2).reshape(PackedRows * PackedLength, heads, dim);                  // (B*L, H, d)
        return tokens.index_select(0, index).view(VirtualRows, length, heads, dim).transpose(1, 2);
    }

    /// <summary>
    /// A copy that shares this one's index and mask storage but whose handles belong to no dispose scope, for an
    /// autograd node that outlives the batch (<c>RecomputedLayer</c>); the holder disposes it.
    /// </summary>
    public SharedPrefixAttention Retain()
    {
        static Tensor Alias(Tensor t) => t.alias().DetachFromDisposeScope();
        return new SharedPrefixAttention(Alias(queries), Alias(keys), Alias(outputs), Alias(mask), PackedRows, PackedLength, PrefixLength);
    }

    public void Dispose()
    {
        foreach (var t in new[] { queries, keys, outputs, mask }) t.Dispose();
    }
}
