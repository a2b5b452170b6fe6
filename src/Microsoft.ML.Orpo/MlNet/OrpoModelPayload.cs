using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using Microsoft.ML.Orpo.ModelFiles;
using Microsoft.ML.Orpo.Modeling;
using Microsoft.ML.Orpo.Tokenization;
using Microsoft.ML.Orpo.Training;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.MlNet;

/// <summary>
/// The bytes an <see cref="OrpoTransformer"/> stores in a model zip: a magic and format version, then
/// length-prefixed sections (settings JSON, config.json, tokenizer files, weights as safetensors, training history,
/// and from format 2 generation_config.json; a format-1 zip gets the generation config derived from config.json).
/// Every length is checked against a limit before anything is allocated; nothing in it is executable.
/// </summary>
internal static class OrpoModelPayload
{
    /// <summary>
    /// 2: the settings may hold a chat template, and a generation_config.json block follows the tokenizer files (a
    /// format-1 reader would drop both); format 1 still loads. 3: written only for a model with LoRA adapters: the
    /// weights are the base model's, and two blocks follow the generation config, the adapter config (JSON) and the
    /// adapter weights (safetensors, PEFT keys). A model without adapters is still written as format 2, which older
    /// releases read. 4: as 3, written only when the adapters are rank-stabilised (<see cref="LoraOptions.UseRsLora"/>),
    /// so that a format-3 reader, which would ignore the flag and scale the update by alpha / r, refuses the zip. 5: as
    /// 3, written only for DoRA adapters (<see cref="LoraOptions.UseDora"/>), whose weights hold magnitude vectors that
    /// a format-4 reader would refuse or, worse, a reader ignoring the flag would apply as plain LoRA.
    /// </summary>
    public const uint FormatVersion = 5;

    private const uint PlainFormatVersion = 2;
    private const uint AdapterFormatVersion = 3;
    private const uint RsLoraFormatVersion = 4;

    /// <summary>The oldest format this version reads.</summary>
    public const uint OldestReadableVersion = 1;
    private const uint Magic = 0x4F50524F; // "ORPO"
    private const int MaxJsonBytes = 64 << 20;
    private const int MaxTokenizerFiles = 16;
    private static readonly JsonSerializerOptions Json = new() { NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals };

    public sealed record Contents(TransformerSettings Settings, CausalLanguageModel Model, IReadOnlyList<OrpoStepMetrics> History);

    public static void Write(Stream stream, TransformerSettings settings, CausalLanguageModel model, IReadOnlyList<OrpoStepMetrics> history)
    {
        using var writer = new BinaryWriter(stream, Encoding.UTF8, leaveOpen: true);
        var adapters = model.Network.Adapters;
        writer.Write(Magic);
        writer.Write(adapters is null ? PlainFormatVersion
            : adapters.Config.UseDora ? FormatVersion
            : adapters.Config.UseRsLora ? RsLoraFormatVersion : AdapterFormatVersion);
        WriteBlock(writer, JsonSerializer.SerializeToUtf8Bytes(settings, Json));
        WriteBlock(writer, Encoding.UTF8.GetBytes(model.Config.ToJson()));
        writer.Write(model.Tokenizer.Files.Count);
        foreach (var (name, bytes) in model.Tokenizer.Files.OrderBy(f => f.Key, StringComparer.Ordinal))
        {
            writer.Write(name);
            WriteBlock(writer, bytes);
        }
        WriteTensorsBlock(writer, model.ExportBaseWeights());
        WriteBlock(writer, JsonSerializer.SerializeToUtf8Bytes(history, Json));
        WriteBlock(writer, Encoding.UTF8.GetBytes(model.Generation.ToJson()));
        if (adapters is null) return;
        WriteBlock(writer, JsonSerializer.SerializeToUtf8Bytes(adapters.Config, Json));
        WriteTensorsBlock(writer, adapters.Export());
    }

    /// <summary>The tensors as one safetensors block; disposes them.</summary>
    private static void WriteTensorsBlock(BinaryWriter writer, Dictionary<string, Tensor> tensors)
    {
        try
        {
            using var buffer = new MemoryStream();
            SafeTensorsWriter.Write(buffer, tensors);
            WriteBlock(writer, buffer.ToArray());
        }
        finally
        {
            foreach (var t in tensors.Values) t.Dispose();
        }
    }

    public static Contents Read(Stream stream, Device device)
    {
        using var reader = new BinaryReader(stream, Encoding.UTF8, leaveOpen: true);
        try
        {
            if (reader.ReadUInt32() != Magic) throw Corrupt("it does not start with the Microsoft.ML.Orpo payload marker");
            uint version = reader.ReadUInt32();
            if (version < OldestReadableVersion) throw Corrupt($"it holds payload format {version}, which no release wrote");
            if (version > FormatVersion)
                throw new InvalidDataException(
                    $"The model zip holds Microsoft.ML.Orpo payload format {version}; this version of the library reads up to {FormatVersion}. Upgrade Microsoft.ML.Orpo to load it.");
            var settings = JsonSerializer.Deserialize<TransformerSettings>(ReadBlock(reader, MaxJsonBytes, "settings"), Json)
                ?? throw Corrupt("the settings are empty");
            var config = LlamaConfig.FromJson(Encoding.UTF8.GetString(ReadBlock(reader, MaxJsonBytes, "config.json")), "model zip config.json");
            int fileCount = reader.ReadInt32();
            if (fileCount is < 1 or > MaxTokenizerFiles) throw Corrupt($"it lists {fileCount} tokenizer files");
            var files = new Dictionary<string, byte[]>(StringComparer.Ordinal);
            for (int i = 0; i < fileCount; i++)
            {
                string name = reader.ReadString();
                files[name] = ReadBlock(reader, MaxJsonBytes, "tokenizer file " + name);
            }
            var tokenizer = OrpoTokenizer.FromFiles(files, config);
            var weightBytes = ReadBlock(reader, Array.MaxLength, "weights");
            var history = JsonSerializer.Deserialize<List<OrpoStepMetrics>>(ReadBlock(reader, MaxJsonBytes, "training history"), Json)
                ?? new List<OrpoStepMetrics>();
            var generation = version >= 2
                ? GenerationConfig.FromJson(Encoding.UTF8.GetString(ReadBlock(reader, MaxJsonBytes, "generation_config.json")), "model zip generation_config.json")
                : null;
            LoraConfig? loraConfig = null;
            byte[]? adapterBytes = null;
            if (version >= 3)
            {
                loraConfig = JsonSerializer.Deserialize<LoraConfig>(ReadBlock(reader, MaxJsonBytes, "adapter config"), Json)
                    ?? throw Corrupt("the adapter config is empty");
                if (loraConfig.Rank <= 0 || !(loraConfig.Alpha > 0) || !(loraConfig.Dropout is >= 0 and < 1) || loraConfig.TargetModules is not { Count: > 0 })
                    throw Corrupt("its adapter config is out of range");
                adapterBytes = ReadBlock(reader, Array.MaxLength, "adapter weights");
            }
            var weights = SafeTensorsReader.Read(weightBytes, "model zip weights");
            try
            {
                var model = CausalLanguageModel.Create(config, weights, tokenizer, device, "model zip", generation,
                    loraConfig?.BFloat16Base == true ? ScalarType.BFloat16 : null);
                if (loraConfig is null) return new Contents(settings, model, history);
                try
                {
                    var adapterWeights = SafeTensorsReader.Read(adapterBytes!, "model zip adapter weights");
                    try
                    {
                        LoraAdapters.Load(model.Network, loraConfig, adapterWeights, "model zip adapter");
                    }
                    finally
                    {
                        foreach (var t in adapterWeights.Values) t.Dispose();
                    }
                    return new Contents(settings, model, history);
                }
                catch
                {
                    model.Dispose();
                    throw;
                }
            }
            finally
            {
                foreach (var t in weights.Values) t.Dispose();
            }
        }
        catch (Exception e) when (e is EndOfStreamException or JsonException or DecoderFallbackException or FormatException
                                   || (e is IOException && e is not InvalidDataException))
        {
            throw Corrupt("it is truncated or malformed", e);
        }
    }

    private static void WriteBlock(BinaryWriter writer, byte[] bytes)
    {
        writer.Write((long)bytes.Length);
        writer.Write(bytes);
    }

    private static byte[] ReadBlock(BinaryReader reader, long limit, string what)
    {
        long length = reader.ReadInt64();
        if (length < 0 || length > limit) throw Corrupt($"its {what} section claims {length} bytes");
        // Read in chunks: memory grows with the bytes actually present, never with the claimed length alone.
        using var bytes = new MemoryStream();
        var chunk = new byte[(int)Math.Min(length, 1 << 20)];
        while (bytes.Length < length)
        {
            int got = reader.Read(chunk, 0, (int)Math.Min(chunk.Length, length - bytes.Length));
            if (got == 0) throw Corrupt($"its {what} section is truncated ({bytes.Length} of {length} bytes)");
            bytes.Write(chunk, 0, got);
        }
        return bytes.ToArray();
    }

    private static InvalidDataException Corrupt(string why, Exception? inner = null) =>
        new($"The Microsoft.ML.Orpo model in this zip cannot be read: {why}.", inner);
}
