using Microsoft.ML.Orpo.Modeling;
using Microsoft.ML.Orpo.ModelFiles;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Evaluation;

/// <summary>
/// Text embeddings from a causal language model: final-layer hidden states averaged over the text's tokens.
/// Texts run right-padded in batches; with causal attention, padding after a text never changes its states.
/// </summary>
internal static class HiddenStateEmbedder
{
    private const int BatchSize = 16;

    public static float[][] Embed(CausalLanguageModel model, IReadOnlyList<string> texts)
    {
        ArgumentNullException.ThrowIfNull(texts);
        var network = model.Network;
        int context = network.Config.MaxPositionEmbeddings;
        var encoded = new List<(int[] Ids, int First)>(texts.Count);
        for (int i = 0; i < texts.Count; i++)
        {
            if (texts[i] is null) throw new ArgumentException($"Text {i} is null.", nameof(texts));
            var ids = new List<int>();
            if (model.Tokenizer.BosId is int bos) ids.Add(bos);
            ids.AddRange(texts[i].Length == 0 ? Array.Empty<int>() : model.Tokenizer.Encode(texts[i]));
            if (ids.Count == 0) throw new InvalidOperationException("The tokenizer has no BOS token, so an empty text cannot be embedded.");
            if (ids.Count > context) ids.RemoveRange(context, ids.Count - context);
            // Pool over the text's own tokens; BOS only stands in for an empty text.
            int first = ids.Count > 1 && model.Tokenizer.BosId is not null ? 1 : 0;
            encoded.Add((ids.ToArray(), first));
        }

        var result = new float[texts.Count][];
        // The module's train/eval flag is left alone: these decoders have no dropout, and flipping shared state
        // would race with generation on other threads.
        using var noGrad = no_grad();
        var device = network.LmHeadWeight.device;
        for (int start = 0; start < encoded.Count; start += BatchSize)
        {
            using var scope = NewDisposeScope();
            var chunk = encoded.Skip(start).Take(BatchSize).ToList();
            int length = chunk.Max(c => c.Ids.Length);
            var ids = new long[chunk.Count * length];
            var weights = new float[chunk.Count * length];
            for (int row = 0; row < chunk.Count; row++)
            {
                var (rowIds, first) = chunk[row];
                for (int j = 0; j < rowIds.Length; j++) ids[row * length + j] = rowIds[j];
                for (int j = first; j < rowIds.Length; j++) weights[row * length + j] = 1f / (rowIds.Length - first);
            }
            var hidden = network.HiddenStates(tensor(ids, device: device).view(chunk.Count, length))
                .to_type(ScalarType.Float32);                                                       // (B, T, D)
            var mask = tensor(weights, device: device).view(chunk.Count, length, 1);
            var pooled = (hidden * mask).sum(1).cpu();                                              // (B, D)
            float[] flat = pooled.data<float>().ToArray();
            int dim = (int)pooled.shape[1];
            for (int row = 0; row < chunk.Count; row++) result[start + row] = flat.AsSpan(row * dim, dim).ToArray();
        }
        return result;
    }
}
