using System.Text;
using Microsoft.ML.Data;
using Microsoft.ML.Orpo.MlNet;
using Microsoft.ML.Runtime;

namespace Microsoft.ML.Orpo.Tests.MlNet;

/// <summary>
/// Test double following the <see cref="ModelZipBridge"/> pattern: adds <c>OutputColumn = Prefix + input + " [hex(Blob)]"</c>
/// and saves its prefix, column names and blob through the bridge.
/// </summary>
internal sealed class PayloadEchoTransformer : ITransformer, IModelZipLoadable<PayloadEchoTransformer>
{
    private readonly TextGenerationMapping _mapping;
    private int _mapCalls;

    public PayloadEchoTransformer(IHostEnvironment env, string inputColumn, string outputColumn, string prefix, byte[] blob)
    {
        ModelZipBridge.RegisterLoader(env.ComponentCatalog);
        Prefix = prefix;
        Blob = blob;
        _mapping = new TextGenerationMapping(inputColumn, outputColumn, Map);
    }

    public static ModelZipFormat ZipFormat { get; } = new("PayloadEcho", 0x00010002, 0x00010001, 0x00010001);

    /// <summary>The format written by Save; tests set a newer one to produce a zip this build refuses.</summary>
    public ModelZipFormat WriteFormat { get; set; } = ZipFormat;

    public string Prefix { get; }
    public byte[] Blob { get; }
    public string InputColumn => _mapping.InputColumnName;
    public string OutputColumn => _mapping.OutputColumnName;

    /// <summary>How many times the mapping ran (to check laziness).</summary>
    public int MapCalls => Volatile.Read(ref _mapCalls);

    public bool IsRowToRowMapper => true;

    public static string Expected(string prefix, byte[] blob, string input) => $"{prefix}{input} [{Convert.ToHexString(blob)}]";

    public DataViewSchema GetOutputSchema(DataViewSchema inputSchema) => _mapping.GetOutputSchema(inputSchema);
    public IDataView Transform(IDataView input) => _mapping.Transform(input);
    public IRowToRowMapper GetRowToRowMapper(DataViewSchema inputSchema) => _mapping.GetRowToRowMapper(inputSchema);

    void ICanSaveModel.Save(ModelSaveContext ctx) => ModelZipBridge.Save<PayloadEchoTransformer>(ctx, WriteFormat, stream =>
    {
        using var writer = new BinaryWriter(stream, Encoding.UTF8, leaveOpen: true);
        writer.Write(InputColumn);
        writer.Write(OutputColumn);
        writer.Write(Prefix);
        writer.Write(Blob.Length);
        writer.Write(Blob);
    });

    public static PayloadEchoTransformer LoadFromZip(IHostEnvironment env, Stream payload, uint writtenVersion)
    {
        using var reader = new BinaryReader(payload, Encoding.UTF8, leaveOpen: true);
        string input = reader.ReadString();
        string output = reader.ReadString();
        string prefix = reader.ReadString();
        int length = reader.ReadInt32();
        if (length < 0 || length > 1 << 20)
            throw new InvalidDataException($"Bad blob length {length}.");
        byte[] blob = reader.ReadBytes(length);
        if (blob.Length != length)
            throw new InvalidDataException("Truncated blob.");
        return new PayloadEchoTransformer(env, input, output, prefix, blob);
    }

    private string Map(string input)
    {
        Interlocked.Increment(ref _mapCalls);
        return Expected(Prefix, Blob, input);
    }
}
