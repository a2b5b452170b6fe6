using Microsoft.ML.Data;
using Microsoft.ML.Orpo.MlNet;
using Microsoft.ML.Runtime;

namespace Microsoft.ML.Orpo;

// The ML.NET side of OrpoTransformer: schema propagation, lazy per-row generation, and the model zip.
public sealed partial class OrpoTransformer : ITransformer, IModelZipLoadable<OrpoTransformer>
{
    private TextGenerationMapping? mapping;

    static ModelZipFormat IModelZipLoadable<OrpoTransformer>.ZipFormat => ZipFormat;

    // Readable from payload format 2 on: a plain model is still written as format 2, and a release that reads 2 refuses
    // an adapter model (format 3) itself, with an "upgrade" message.
    internal static ModelZipFormat ZipFormat { get; } = new("OrpoTransformer",
        OrpoModelPayload.FormatVersion, 2, OrpoModelPayload.OldestReadableVersion);

    private TextGenerationMapping Mapping => mapping ??= new TextGenerationMapping(settings.PromptColumnName, settings.OutputColumnName,
        prompt => Generate(prompt, settings.Generation));

    /// <summary>Always true: each output row depends only on the same input row.</summary>
    public bool IsRowToRowMapper => true;

    /// <summary>The input schema plus the text column <see cref="OutputColumnName"/>; the prompt column must be text.</summary>
    public DataViewSchema GetOutputSchema(DataViewSchema inputSchema) => Mapping.GetOutputSchema(inputSchema);

    /// <summary>Adds <see cref="OutputColumnName"/>, generated lazily per row from the prompt column.</summary>
    public IDataView Transform(IDataView input)
    {
        ThrowIfDisposed();
        return Mapping.Transform(input);
    }

    /// <summary>A row-to-row mapper, as <c>PredictionEngine</c> needs.</summary>
    public IRowToRowMapper GetRowToRowMapper(DataViewSchema inputSchema)
    {
        ThrowIfDisposed();
        return Mapping.GetRowToRowMapper(inputSchema);
    }

    void ICanSaveModel.Save(ModelSaveContext ctx)
    {
        using var lease = Acquire();
        ModelZipBridge.RegisterLoader(env.ComponentCatalog); // the saving context can load the zip back at once
        ModelZipBridge.Save<OrpoTransformer>(ctx, ZipFormat, stream => OrpoModelPayload.Write(stream, settings, model, TrainingHistory));
    }

    static OrpoTransformer IModelZipLoadable<OrpoTransformer>.LoadFromZip(IHostEnvironment env, Stream payload, uint writtenVersion)
    {
        var contents = OrpoModelPayload.Read(payload, TorchSharp.torch.CPU);
        return new OrpoTransformer(env, contents.Model, contents.Settings, contents.History);
    }
}
