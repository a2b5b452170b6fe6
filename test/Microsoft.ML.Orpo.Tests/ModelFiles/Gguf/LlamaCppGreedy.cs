using LLama;
using TorchSharp;
using LLama.Common;
using LLama.Native;
using Microsoft.ML.Orpo.Generation;

namespace Microsoft.ML.Orpo.Tests.ModelFiles.Gguf;

/// <summary>Greedy decoding from BOS by llama.cpp (LLamaSharp) and by this library, as raw token ids.</summary>
internal static class LlamaCppGreedy
{
    // llama.cpp logs every load in detail; the tests print their own results.
    static LlamaCppGreedy() => NativeLogConfig.llama_log_set((_, _) => { });

    /// <summary>
    /// llama.cpp's greedy ids after BOS: one token per decode, argmax over the full vocabulary, f32 KV cache; with a LoRA
    /// adapter GGUF applied at scale 1 when <paramref name="loraAdapter"/> is given.
    /// </summary>
    public static int[] FromBos(string gguf, int count, string? loraAdapter = null)
    {
        var parameters = new ModelParams(gguf)
        {
            ContextSize = (uint)(count + 1), GpuLayerCount = 0, Threads = 1, BatchSize = 64,
            TypeK = GGMLType.GGML_TYPE_F32, TypeV = GGMLType.GGML_TYPE_F32,
        };
        using var weights = LLamaWeights.LoadFromFile(parameters);
        using var context = weights.CreateContext(parameters);
        if (loraAdapter is not null)
        {
            var adapter = weights.NativeHandle.LoadLoraFromFile(loraAdapter); // freed with the model
            context.NativeHandle.SetLoraAdapters([(adapter, 1f)]);
        }
        LLamaToken token = weights.Vocab.BOS ?? throw new InvalidOperationException("The GGUF has no BOS token.");
        var batch = new LLamaBatch();
        var ids = new int[count];
        for (int i = 0; i < count; i++)
        {
            batch.Clear();
            batch.Add(token, i, LLamaSeqId.Zero, true);
            var result = context.Decode(batch);
            if (result != DecodeResult.Ok) throw new InvalidOperationException($"llama.cpp decode failed: {result}");
            var logits = context.NativeHandle.GetLogitsIth(0);
            int best = 0;
            for (int v = 1; v < logits.Length; v++) if (logits[v] > logits[best]) best = v;
            ids[i] = best;
            token = best;
        }
        return ids;
    }

    /// <summary>This library's greedy ids after BOS, never stopping at EOS (as llama.cpp above).</summary>
    public static int[] Ours(OrpoTransformer model, int count)
    {
        var m = model.Model;
        int bos = m.Tokenizer.BosId ?? throw new InvalidOperationException("No BOS token.");
        var options = new GenerationOptions { MaxNewTokens = count, Temperature = 0 };
        return TextGenerator.Generate(m.Network, [new[] { bos }], options, new HashSet<int>())[0].ToArray();
    }

    /// <summary>|logit(a) - logit(b)| in this library's logits after BOS + <paramref name="generated"/>, relative to the largest |logit|.</summary>
    public static double LogitGap(OrpoTransformer model, int[] generated, int a, int b)
    {
        var m = model.Model;
        using var scope = TorchSharp.torch.NewDisposeScope();
        using var noGrad = TorchSharp.torch.no_grad();
        long[] ids = [m.Tokenizer.BosId!.Value, .. generated.Select(i => (long)i)];
        var last = m.Network.Forward(TorchSharp.torch.tensor(ids).unsqueeze(0))[0, -1];
        return Math.Abs(last[a].ToDouble() - last[b].ToDouble()) / last.abs().max().ToDouble();
    }

    /// <summary>How many leading ids two sequences share.</summary>
    public static int SharedPrefix(IReadOnlyList<int> a, IReadOnlyList<int> b)
    {
        int n = 0;
        while (n < a.Count && n < b.Count && a[n] == b[n]) n++;
        return n;
    }
}
