using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Preferences;

/// <summary>
/// B pairs laid out as 2B rows for one forward pass: rows 0..B-1 are prompt+chosen, rows B..2B-1 prompt+rejected,
/// right-padded (id 0) to the longest row. Position t predicts token t+1; masks mark which predictions are scored.
/// Padding sits after every real token, so under causal attention it never influences a scored position.
/// </summary>
internal sealed class PreferenceBatch : IDisposable
{
    private PreferenceBatch(Tensor inputIds, Tensor targets, Tensor responseMask, Tensor nllMask, int pairs, long realTokens, double nllTokens)
    {
        NllTokens = nllTokens;
        InputIds = inputIds;
        Targets = targets;
        ResponseMask = responseMask;
        NllMask = nllMask;
        Pairs = pairs;
        RealTokens = realTokens;
    }

    /// <summary>(2B, L) token ids.</summary>
    public Tensor InputIds { get; }
    /// <summary>(2B, L-1) the token each position predicts.</summary>
    public Tensor Targets { get; }
    /// <summary>(2B, L-1) 1 where the predicted token belongs to the response.</summary>
    public Tensor ResponseMask { get; }
    /// <summary>(B, L-1) 1 where a chosen row's prediction counts in the NLL term.</summary>
    public Tensor NllMask { get; }
    public int Pairs { get; }
    /// <summary>Non-padding tokens over all 2B rows.</summary>
    public long RealTokens { get; }
    /// <summary>Scored tokens of the NLL term.</summary>
    public double NllTokens { get; }

    public static PreferenceBatch Create(IReadOnlyList<EncodedPair> pairs, bool includePromptInNll, Device device)
    {
        int b = pairs.Count;
        int length = pairs.Max(p => p.LongestLength);
        var ids = new long[2 * b * length];
        var targets = new long[2 * b * (length - 1)];
        var response = new float[2 * b * (length - 1)];
        var nll = new float[b * (length - 1)];
        // Padding uses id 0, valid in every vocabulary; it is never scored.
        long realTokens = 0;
        for (int row = 0; row < 2 * b; row++)
        {
            var pair = pairs[row % b];
            var responseIds = row < b ? pair.ChosenIds : pair.RejectedIds;
            int promptLength = pair.PromptIds.Count, total = promptLength + responseIds.Count;
            realTokens += total;
            for (int t = 0; t < total; t++)
                ids[row * length + t] = t < promptLength ? pair.PromptIds[t] : responseIds[t - promptLength];
            for (int t = 0; t + 1 < total; t++)
            {
                int at = row * (length - 1) + t;
                targets[at] = ids[row * length + t + 1];
                bool predictsResponse = t + 1 >= promptLength;
                response[at] = predictsResponse ? 1 : 0;
                if (row < b && (predictsResponse || includePromptInNll)) nll[at] = 1;
            }
        }
        return new PreferenceBatch(
            tensor(ids, device: device).view(2 * b, length),
            tensor(targets, device: device).view(2 * b, length - 1),
            tensor(response, device: device).view(2 * b, length - 1),
            tensor(nll, device: device).view(b, length - 1),
            b, realTokens, pairs.Sum(p => (double)p.NllTokenCount(includePromptInNll)));
    }

    public void Dispose()
    {
        InputIds.Dispose();
        Targets.Dispose();
        ResponseMask.Dispose();
        NllMask.Dispose();
    }
}
