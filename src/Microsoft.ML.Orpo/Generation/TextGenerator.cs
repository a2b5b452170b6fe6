using Microsoft.ML.Orpo.Modeling;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Generation;

/// <summary>
/// Batched autoregressive decoding with a pre-allocated key/value cache. Prompts are left-padded; each row's
/// positions count only its real tokens, so a batch decodes the same tokens as each prompt alone.
/// State lives in locals, so one network can serve concurrent calls.
/// </summary>
internal static class TextGenerator
{
    /// <param name="network">The model (not modified).</param>
    /// <param name="prompts">Token ids per prompt (each non-empty).</param>
    /// <param name="options">Sampling settings.</param>
    /// <param name="stopTokenIds">Ids that end a row (EOS); not included in the output.</param>
    /// <param name="shouldStop">Called with a row's index and generated ids after each token; true ends that row.</param>
    /// <param name="vocabularyLimit">Ids at or above this (padding rows of a larger model vocabulary) are never sampled.</param>
    /// <returns>The generated ids of each row.</returns>
    public static List<int>[] Generate(LlamaForCausalLM network, IReadOnlyList<IReadOnlyList<int>> prompts,
        GenerationOptions options, IReadOnlySet<int> stopTokenIds, Func<int, IReadOnlyList<int>, bool>? shouldStop = null,
        int? vocabularyLimit = null)
    {
        int batch = prompts.Count;
        var generated = Enumerable.Range(0, batch).Select(_ => new List<int>()).ToArray();
        if (batch == 0 || options.MaxNewTokens == 0) return generated;

        var config = network.Config;
        int promptLength = prompts.Max(p => p.Count);
        if (prompts.Any(p => p.Count == 0)) throw new ArgumentException("Every prompt needs at least one token (BOS).", nameof(prompts));
        if (promptLength >= config.MaxPositionEmbeddings)
            throw new ArgumentException($"A prompt of {promptLength} tokens leaves no room to generate within the model's {config.MaxPositionEmbeddings} positions.", nameof(prompts));
        int maxNew = Math.Min(options.MaxNewTokens, config.MaxPositionEmbeddings - promptLength);
        long total = promptLength + maxNew;

        // Inference mode, not just no_grad: libtorch skips view and version tracking for the tensors made here, which
        // counts where decoding is per-op overhead (small models). No tensor made here outlives the call.
        // (benchmarks/README.md, "Measurements behind the code: TextGenerator inference mode")
        using var inference = inference_mode();
        using var scope = NewDisposeScope();
        using var doraFactors = network.Adapters?.HoldDoraFactors(network); // A, B and m are fixed for the call: one norm per projection, not one a token
        var device = network.LmHeadWeight.device;
        var dtype = network.LmHeadWeight.dtype;
        using var generator = options.Temperature > 0 ? new Generator((ulong)options.Seed, device) : null;
        using var cache = network.CreateCache(batch, total, dtype, device);

        // Left-padded prompt ids and the per-row "real token" flags for the whole decode.
        var ids = new long[batch * promptLength];
        var keepHost = new bool[batch * total];
        for (int row = 0; row < batch; row++)
        {
            int pad = promptLength - prompts[row].Count;
            for (int j = 0; j < prompts[row].Count; j++) ids[row * promptLength + pad + j] = prompts[row][j];
            for (long j = pad; j < total; j++) keepHost[row * total + j] = true;
        }
        var keep = tensor(keepHost, device: device).view(batch, total);                        // (B, total)
        var promptKeep = keep.narrow(1, 0, promptLength);
        var positions = (promptKeep.to_type(ScalarType.Int64).cumsum(1) - 1).clamp_min(0);      // (B, P)
        var nextPosition = positions.narrow(1, promptLength - 1, 1) + 1;                          // (B, 1)

        var inputIds = tensor(ids, device: device).view(batch, promptLength);
        // Only the last prompt position's logits are needed: the LM head skips the others.
        var lastHidden = network.HiddenStates(inputIds, positions, AttentionMasks.Causal(promptKeep, promptLength, dtype), cache)
            .narrow(1, promptLength - 1, 1);                                                       // (B, 1, D)
        var logits = network.Logits(lastHidden).select(1, 0);                                       // (B, V)
        var decodeMask = AttentionMasks.KeyPadding(keep, dtype);                                  // (B, 1, 1, total)
        var finished = new bool[batch];
        for (int step = 0; step < maxNew; step++)
        {
            using var stepScope = NewDisposeScope();
            if (vocabularyLimit is int limit && limit < logits.shape[1])
                logits.narrow(1, limit, logits.shape[1] - limit).fill_(float.NegativeInfinity);
            var next = TokenSampler.Next(logits, options, generator);                              // (B)
            long[] nextHost = next.cpu().data<long>().ToArray();   // the one host copy per token (a no-op on CPU)
            for (int row = 0; row < batch; row++)
            {
                if (finished[row]) continue;
                int token = (int)nextHost[row];
                if (stopTokenIds.Contains(token)) { finished[row] = true; continue; }
                generated[row].Add(token);
                if (shouldStop?.Invoke(row, generated[row]) == true) finished[row] = true;
            }
            if (finished.All(f => f) || step == maxNew - 1) break;

            var mask = decodeMask.narrow(3, 0, promptLength + step + 1);                           // a view: no per-token mask build
            var stepLogits = network.Forward(next.view(batch, 1), nextPosition, mask, cache).select(1, 0);
            nextPosition.add_(1);
            logits.Dispose();
            logits = stepLogits.MoveToOuterDisposeScope();
        }
        return generated;
    }
}
