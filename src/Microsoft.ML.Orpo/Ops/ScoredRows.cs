using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Ops;

/// <summary>
/// The scored predictions of a micro-batch listed pair by pair, for <see cref="FusedOrpoLoss"/>: where each one's
/// hidden state is, the token it predicts, and its group: 3 x pair + kind (0 chosen response, 1 rejected response,
/// 2 chosen prompt counted in the NLL). Built on the device from either layout's index tensors.
/// </summary>
internal sealed class ScoredRows : IDisposable
{
    public const int ChosenResponse = 0, RejectedResponse = 1, PromptNll = 2, Kinds = 3;

    private ScoredRows(Tensor sources, Tensor targets, Tensor groups, int[] pairStarts)
    {
        Sources = sources;
        Targets = targets;
        Groups = groups;
        PairStarts = pairStarts;
    }

    /// <summary>(N) flat index into the layout's (rows x D) hidden states.</summary>
    public Tensor Sources { get; }
    /// <summary>(N) the token each prediction predicts.</summary>
    public Tensor Targets { get; }
    /// <summary>(N) 3 x pair + kind.</summary>
    public Tensor Groups { get; }
    /// <summary>(pairs + 1) host offsets: pair p's predictions are entries PairStarts[p] .. PairStarts[p + 1] - 1.</summary>
    public int[] PairStarts { get; }
    public int Pairs => PairStarts.Length - 1;

    /// <param name="sources">(N) flat hidden-state index of each scored prediction, in any order.</param>
    /// <param name="targets">(N) predicted tokens.</param>
    /// <param name="sequence">(N) 0..B-1 for the chosen sequence of a pair, B..2B-1 for the rejected one.</param>
    /// <param name="isResponse">(N) true for response tokens (false: a chosen prompt token scored in the NLL).</param>
    /// <param name="pairs">B.</param>
    public static ScoredRows Create(Tensor sources, Tensor targets, Tensor sequence, Tensor isResponse, int pairs)
    {
        using var scope = NewDisposeScope();
        var pair = sequence.remainder(pairs);
        var kind = where(sequence >= pairs, full_like(sequence, RejectedResponse),
            where(isResponse, full_like(sequence, ChosenResponse), full_like(sequence, PromptNll)));
        var order = pair.sort(stable: true).Indices;                                   // group by pair, keep order inside
        var counts = pair.bincount(null, pairs).cpu().data<long>().ToArray();
        var starts = new int[pairs + 1];
        for (int p = 0; p < pairs; p++) starts[p + 1] = starts[p] + (int)counts[p];
        return new ScoredRows(
            sources.index_select(0, order).MoveToOuterDisposeScope(),
            targets.index_select(0, order).MoveToOuterDisposeScope(),
            (pair * Kinds + kind).index_select(0, order).MoveToOuterDisposeScope(),
            starts);
    }

    public void Dispose()
    {
        Sources.Dispose();
        Targets.Dispose();
        Groups.Dispose();
    }
}
