using Microsoft.ML.Orpo.ModelFiles;
using Microsoft.ML.Orpo.ModelFiles.Gguf;

namespace Microsoft.ML.Orpo;

public sealed partial class OrpoTransformer
{
    /// <summary>
    /// Whether the model carries LoRA adapters (<see cref="OrpoOptions.Lora"/>, <see cref="OrpoOptions.AdapterPath"/>,
    /// or <c>FromPretrained</c>'s adapterPath).
    /// </summary>
    public bool HasAdapter => Model.Network.Adapters is not null;

    /// <summary>
    /// Writes the LoRA adapter as a PEFT folder: <c>adapter_config.json</c> (<c>peft_type</c> LORA, <c>r</c>,
    /// <c>lora_alpha</c>, <c>lora_dropout</c>, <c>target_modules</c>, <c>bias</c> "none", <c>base_model_name_or_path</c>,
    /// <c>task_type</c> CAUSAL_LM) and <c>adapter_model.safetensors</c> (float32, PEFT's keys), which
    /// <c>PeftModel.from_pretrained</c> loads onto the base model and <see cref="FromPretrained(MLContext, string, string?, string?)"/>
    /// reads back bit for bit.
    /// </summary>
    /// <param name="directory">The folder to write (created if needed).</param>
    /// <exception cref="InvalidOperationException">The model has no adapter (it was fully fine-tuned or merged).</exception>
    public void SaveAdapter(string directory)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(directory);
        using var lease = Acquire();
        var adapters = model.Network.Adapters ?? throw new InvalidOperationException(
            "This transformer has no LoRA adapter to save: it was fully fine-tuned, merged, or loaded without one. Train with OrpoOptions.Lora, or use SaveHuggingFace for the whole model.");
        PeftAdapterFolder.Save(directory, adapters, settings.BaseModelPath);
    }

    /// <summary>
    /// Writes the LoRA adapter as a llama.cpp GGUF adapter, to run on the base model's GGUF (<see cref="SaveGguf"/> of the
    /// model without the adapter) with <c>llama-cli -m base.gguf --lora adapter.gguf</c>, <c>llama_adapter_lora_init</c>,
    /// or Ollama's <c>ADAPTER</c>: A and B in float32 under llama.cpp's tensor names, and the alpha that gives this
    /// adapter's factor (rsLoRA included). <see cref="SaveGguf"/> instead writes the whole model, the adapter merged.
    /// </summary>
    /// <param name="path">The GGUF file; replaced atomically if it exists.</param>
    /// <param name="baseGguf">The base model's GGUF, if an Ollama <c>Modelfile</c> should be written beside the adapter
    /// (<c>name.Modelfile</c> for <c>name.gguf</c>: <c>FROM</c> the base, <c>ADAPTER</c> this file, and the prompt format,
    /// stop strings and sampling defaults <see cref="SaveGguf"/> writes); relative paths are kept relative to the adapter's folder.</param>
    /// <exception cref="InvalidOperationException">The model has no adapter.</exception>
    /// <exception cref="NotSupportedException">The model is one llama.cpp's llama architecture cannot express, or the adapter
    /// is DoRA (<see cref="LoraOptions.UseDora"/>: llama.cpp adapters have no magnitude; use <see cref="SaveGguf"/>); no file is written.</exception>
    public void SaveAdapterGguf(string path, string? baseGguf = null)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        if (baseGguf is not null) ArgumentException.ThrowIfNullOrWhiteSpace(baseGguf);
        using var lease = Acquire();
        var m = model;
        var adapters = m.Network.Adapters ?? throw new InvalidOperationException(
            "This transformer has no LoRA adapter to save: it was fully fine-tuned, merged, or loaded without one. Use SaveGguf for the whole model.");
        GgufLlamaMetadata.Validate(m.Config);
        string fileName = Path.GetFileName(Path.GetFullPath(path));
        var writer = GgufLoraAdapter.Build(m.Config, adapters, Path.GetFileNameWithoutExtension(fileName));
        string? modelfile = baseGguf is null ? null
            : Modelfile(m, GgufTokenizerMetadata.Build(m.Tokenizer, m.Config.VocabSize), baseGguf, adapter: fileName);
        AtomicFile.Write(path, writer.WriteTo);
        if (modelfile is not null) WriteModelfile(path, modelfile);
    }

    /// <summary>
    /// A plain transformer whose weights are this one's with every adapter folded in (<c>W + s B A</c>, s = alpha / r or rsLoRA's alpha / sqrt(r), in
    /// float32; for DoRA each row of that rescaled to its magnitude, <c>(m / ||W + s B A||) (W + s B A)</c>): the same function without the adapter's extra products, for export (<see cref="SaveHuggingFace"/>,
    /// <see cref="SaveGguf"/>) or faster generation. This transformer is unchanged; dispose both.
    /// </summary>
    /// <exception cref="InvalidOperationException">The model has no adapter.</exception>
    public OrpoTransformer MergeAdapter()
    {
        using var lease = Acquire();
        var m = model;
        if (m.Network.Adapters is null)
            throw new InvalidOperationException("This transformer has no LoRA adapter to merge: its weights already are the whole model.");
        var weights = m.ExportWeights();
        try
        {
            var merged = CausalLanguageModel.Create(m.Config, weights, m.Tokenizer, m.Device, "merged adapter", m.Generation);
            return new OrpoTransformer(env, merged, settings, TrainingHistory);
        }
        finally
        {
            foreach (var t in weights.Values) t.Dispose();
        }
    }
}
