using TorchSharp;
using Microsoft.ML.Orpo.Modeling;
using Microsoft.ML.Orpo.Ops;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Preferences;

/// <summary>
/// B pairs packed as B rows [prompt | chosen | rejected] (right-padded with id 0), so the projections, MLP and norms
/// process each prompt once. <see cref="SharedPrefixAttention"/> lets each response attend to the prompt and its own
/// earlier tokens only (rejected tokens never see chosen ones), and the rejected segment's positions restart right
/// after the prompt: every token gets exactly the keys, values and rotary positions it has in the concatenated layout
/// of <see cref="PreferenceBatch"/>.
/// Only scored predictions go through the LM head: they are listed flat, with the output row (chosen i, rejected B+i)
/// they belong to.
/// </summary>
internal sealed class SharedPromptBatch : IDisposable
{
    private SharedPromptBatch(Tensor inputIds, Tensor positionIds, SharedPrefixAttention attention, Tensor sources, Tensor targets, Tensor rows,
        Tensor responseMask, Tensor nllMask, Tensor responseCounts, int pairs, long equivalentTokens, double nllTokens)
    {
        InputIds = inputIds;
        PositionIds = positionIds;
        Attention = attention;
        Sources = sources;
        Targets = targets;
        Rows = rows;
        ResponseMask = responseMask;
        NllMask = nllMask;
        ResponseCounts = responseCounts;
        Pairs = pairs;
        EquivalentTokens = equivalentTokens;
        NllTokens = nllTokens;
    }

    /// <summary>(B, L) packed ids.</summary>
    public Tensor InputIds { get; }
    /// <summary>(B, L) rotary positions: the rejected segment restarts at the prompt length.</summary>
    public Tensor PositionIds { get; }
    /// <summary>Attention of [prompt | chosen] (continuation rows 0..B-1) and [prompt | rejected] (B..2B-1).</summary>
    public SharedPrefixAttention Attention { get; }
    /// <summary>(N) flat index into the (B * L) hidden states of each scored prediction.</summary>
    public Tensor Sources { get; }
    /// <summary>(N) the token each scored prediction predicts.</summary>
    public Tensor Targets { get; }
    /// <summary>(N) output row: 0..B-1 chosen, B..2B-1 rejected.</summary>
    public Tensor Rows { get; }
    /// <summary>(N) 1 where the prediction is a response token.</summary>
    public Tensor ResponseMask { get; }
    /// <summary>(N) 1 where the prediction counts in the NLL term.</summary>
    public Tensor NllMask { get; }
    /// <summary>(2B) response tokens per output row.</summary>
    public Tensor ResponseCounts { get; }
    public int Pairs { get; }
    /// <summary>Tokens the concatenated layout would process (2 x prompt + chosen + rejected), for comparable throughput.</summary>
    public long EquivalentTokens { get; }
    /// <summary>Scored tokens of the NLL term.</summary>
    public double NllTokens { get; }

    public static SharedPromptBatch Create(IReadOnlyList<EncodedPair> pairs, bool includePromptInNll, Device device)
    {
        int b = pairs.Count;
        int length = pairs.Max(p => p.PromptIds.Count + p.ChosenIds.Count + p.RejectedIds.Count);
        var ids = new long[b * length];
        var positions = new long[b * length];
        var segments = new List<(int Prefix, int[] Continuations)>(b);
        var sources = new List<long>();
        var targets = new List<long>();
        var rows = new List<long>();
        var response = new List<float>();
        var nll = new List<float>();
        var counts = new float[2 * b];
        long equivalent = 0;
        double nllTokens = 0;

        void Score(long source, long target, int row, bool isResponse, bool isNll)
        {
            sources.Add(source);
            targets.Add(target);
            rows.Add(row);
            response.Add(isResponse ? 1 : 0);
            nll.Add(isNll ? 1 : 0);
            if (isResponse) counts[row]++;
            if (isNll) nllTokens++;
        }

        for (int i = 0; i < b; i++)
        {
            var (prompt, chosen, rejected) = (pairs[i].PromptIds, pairs[i].ChosenIds, pairs[i].RejectedIds);
            int p = prompt.Count, c = chosen.Count, r = rejected.Count, at = i * length;
            equivalent += 2L * p + c + r;
            segments.Add((p, new[] { c, r }));
            for (int t = 0; t < p; t++) (ids[at + t], positions[at + t]) = (prompt[t], t);
            for (int t = 0; t < c; t++) (ids[at + p + t], positions[at + p + t]) = (chosen[t], p + t);
            for (int t = 0; t < r; t++) (ids[at + p + c + t], positions[at + p + c + t]) = (rejected[t], p + t);
            for (int t = p + c + r; t < length; t++) positions[at + t] = t;

            // The same predictions as PreferenceBatch, in the same order: prompt (NLL only when asked), then the response.
            if (includePromptInNll)
                for (int t = 0; t + 1 < p; t++) Score(at + t, prompt[t + 1], i, false, true);
            for (int j = 0; j < c; j++) Score(j == 0 ? at + p - 1 : at + p + j - 1, chosen[j], i, true, true);
            for (int j = 0; j < r; j++) Score(j == 0 ? at + p - 1 : at + p + c + j - 1, rejected[j], b + i, true, false);
        }

        return new SharedPromptBatch(
            tensor(ids, new long[] { b, length }, device: device),
            tensor(positions, new long[] { b, length }, device: device),
            SharedPrefixAttention.Create(length, segments, device),
            tensor(sources.ToArray(), device: device),
            tensor(targets.ToArray(), device: device),
            tensor(rows.ToArray(), device: device),
            tensor(response.ToArray(), device: device),
            tensor(nll.ToArray(), device: device),
            tensor(counts, device: device),
            b, equivalent, nllTokens);
    }

    public void Dispose()
    {
        foreach (var t in new[] { InputIds, PositionIds, Sources, Targets, Rows, ResponseMask, NllMask, ResponseCounts })
            t.Dispose();
        Attention.Dispose();
    }
}
