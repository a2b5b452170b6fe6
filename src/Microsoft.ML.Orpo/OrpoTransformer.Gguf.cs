using System.Text;
using Microsoft.ML.Orpo.ModelFiles;
using Microsoft.ML.Orpo.ModelFiles.Gguf;

namespace Microsoft.ML.Orpo;

public sealed partial class OrpoTransformer
{
    /// <summary>
    /// Writes the model as a GGUF file for llama.cpp, Ollama and LM Studio (llama architecture, with the tokenizer, special
    /// ids and chat template), and an Ollama <c>Modelfile</c> beside it (<c>name.Modelfile</c> for <c>name.gguf</c>).
    /// </summary>
    /// <param name="path">The GGUF file; replaced atomically if it exists.</param>
    /// <param name="type">How matrices are stored; norms and other 1-D tensors are always F32.</param>
    /// <exception cref="NotSupportedException">The model uses something llama.cpp's llama architecture or GGUF tokenizers
    /// cannot express (a rope scaling, a tokenizer pre-tokenizer...); the message names it and no file is written.</exception>
    public void SaveGguf(string path, GgufTensorType type = GgufTensorType.F16)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        if (!Enum.IsDefined(type)) throw new ArgumentOutOfRangeException(nameof(type), type, "Unknown GGUF tensor type.");
        using var lease = Acquire();
        var m = model;
        GgufLlamaMetadata.Validate(m.Config);
        var tokenizer = GgufTokenizerMetadata.Build(m.Tokenizer, m.Config.VocabSize);

        string fileName = Path.GetFileName(Path.GetFullPath(path));
        string name = Path.GetFileNameWithoutExtension(fileName);
        var writer = new GgufWriter();
        GgufLlamaMetadata.Add(writer, m.Config, name, type);
        tokenizer.AddTo(writer);
        var weights = m.ExportWeights();
        try
        {
            foreach (var tensor in GgufLlamaTensors.Map(m.Config, weights, type)) writer.AddTensor(tensor);
        }
        finally
        {
            foreach (var t in weights.Values) t.Dispose();
        }

        string modelfile = Modelfile(m, tokenizer, fileName, adapter: null);
        AtomicFile.Write(path, writer.WriteTo);
        WriteModelfile(path, modelfile);
    }

    /// <summary>The Ollama Modelfile of this model's prompt format, stop strings and sampling defaults.</summary>
    private string Modelfile(CausalLanguageModel m, GgufTokenizerMetadata tokenizer, string from, string? adapter)
    {
        var stops = new List<string>();
        foreach (int id in StopTokenIds(m, ChatFormatOf(m)).Order()) stops.Add(tokenizer.Tokens[id]);
        stops.AddRange(settings.Generation.StopSequences);
        return OllamaModelfile.Create(from, settings.PromptTemplate, tokenizer.ChatTemplate, stops, settings.Generation, adapter);
    }

    /// <summary>Writes <paramref name="modelfile"/> beside <paramref name="gguf"/>: <c>name.Modelfile</c> for <c>name.gguf</c>.</summary>
    private static void WriteModelfile(string gguf, string modelfile)
    {
        string full = Path.GetFullPath(gguf);
        AtomicFile.WriteAllBytes(Path.Combine(Path.GetDirectoryName(full)!, Path.GetFileNameWithoutExtension(full) + ".Modelfile"),
            Encoding.UTF8.GetBytes(modelfile));
    }
}
