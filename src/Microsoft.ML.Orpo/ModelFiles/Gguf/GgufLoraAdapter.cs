using Microsoft.ML.Orpo.Modeling;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.ModelFiles.Gguf;

/// <summary>
/// LoRA adapters as llama.cpp's GGUF adapter file, the format its <c>convert_lora_to_gguf.py</c> writes and
/// <c>llama_adapter_lora_init</c> (<c>llama-cli --lora</c>, Ollama's <c>ADAPTER</c>) loads onto the base model's GGUF:
/// metadata <c>general.type</c> "adapter", <c>adapter.type</c> "lora" and <c>adapter.lora.alpha</c>; per adapted
/// projection <c>blk.N.attn_q.weight.lora_a</c> (r x in) and <c>.lora_b</c> (out x r), float32, with B's rows of the q and
/// k projections in the base GGUF's rotary order. llama.cpp scales the update by alpha / r (r read from B), so the alpha
/// written is Scale x r: the adapter's own alpha, or alpha sqrt(r) for rsLoRA's alpha / sqrt(r).
/// </summary>
internal static class GgufLoraAdapter
{
    public static GgufWriter Build(LlamaConfig config, LoraAdapters adapters, string name)
    {
        if (adapters.Config.UseDora)
            throw new NotSupportedException(
                "This is a DoRA adapter (use_dora): llama.cpp's GGUF adapter format holds only A and B, not DoRA's magnitude vectors, so it would run as plain LoRA with wrong outputs. " +
                "Write the model with the adapter merged instead (SaveGguf, or MergeAdapter then SaveGguf).");
        var w = new GgufWriter();
        w.AddString("general.architecture", GgufLlamaMetadata.Architecture);
        w.AddString("general.type", "adapter");
        w.AddString("general.name", name);
        w.AddUInt32("general.alignment", GgufWriter.Alignment);
        w.AddString("adapter.type", "lora");
        w.AddFloat32("adapter.lora.alpha", (float)(adapters.Config.Scale * adapters.Config.Rank));
        foreach (var (path, adapter) in adapters.ByPath)
        {
            string weight = GgufLlamaTensors.GgufName(path + ".weight");
            w.AddTensor(new GgufTensor(weight + ".lora_a", adapter.A.shape, GgmlType.F32, Values(adapter.A)));
            w.AddTensor(new GgufTensor(weight + ".lora_b", adapter.B.shape, GgmlType.F32, GgufLlamaTensors.InRotaryOrder(weight, Values(adapter.B), config)));
        }
        return w;
    }

    private static float[] Values(Tensor t)
    {
        using var scope = NewDisposeScope();
        return t.detach().cpu().to_type(ScalarType.Float32).contiguous().data<float>().ToArray();
    }
}
