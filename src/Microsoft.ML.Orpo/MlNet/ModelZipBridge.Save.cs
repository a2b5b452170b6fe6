using Microsoft.ML.Transforms;

namespace Microsoft.ML.Orpo.MlNet;

// Writing a component into a model zip: the ML.NET header (shaped so that ML.NET's custom-mapping loader is the
// fallback when ours is not registered), the bookkeeping strings and numbers in Model.key, and the payload
// as its own binary entry with its length and SHA-256. CreateFromCatalog reads it back in the same order.
internal static partial class ModelZipBridge
{
    // ML.NET's custom-mapping component (LambdaTransform): the fallback loader and the header it accepts.
    private const string FallbackLoaderSignature = "CustomTransformer";
    private const string FallbackModelSignature = "CUSTOMXF";
    private const uint FallbackVersion = 0x00010002;
    private const uint FallbackVersionWeCanRead = 0x00010001;

    /// <summary>
    /// Writes a component into a model zip: the ML.NET header, the bookkeeping in <c>Model.key</c>, and the payload
    /// as the binary entry <see cref="PayloadEntryName"/>. Call from <c>ICanSaveModel.Save</c>.
    /// </summary>
    /// <typeparam name="TLoader">The type that loads it back.</typeparam>
    /// <param name="ctx">The context ML.NET passes to <c>ICanSaveModel.Save</c>.</param>
    /// <param name="format">The format written (normally <c>TLoader.ZipFormat</c>).</param>
    /// <param name="writePayload">Writes the payload. The stream is write-only and must not be kept; disposing it is harmless.</param>
    internal static void Save<TLoader>(ModelSaveContext ctx, ModelZipFormat format, Action<Stream> writePayload)
        where TLoader : class, ITransformer, IModelZipLoadable<TLoader>
    {
        ArgumentNullException.ThrowIfNull(ctx);
        ArgumentNullException.ThrowIfNull(writePayload);
        ArgumentException.ThrowIfNullOrEmpty(format.Name);
        if (format.VersionReadable > format.VersionWritten || format.VersionWeCanRead > format.VersionWritten)
            throw new ArgumentException($"Inconsistent format versions for '{format.Name}'.", nameof(format));
        ModelZipInternals m = ModelZipInternals.ForVerifiedRelease("save a model zip");
        if (!(bool)m.SaveInRepository.GetValue(ctx)!)
            throw new InvalidOperationException("This transformer can only be saved into a model zip (a repository), not a single stream.");

        m.SaveCheckAtModel.Invoke(ctx, null);
        object versionInfo = m.VersionInfoCtor.Invoke([FallbackModelSignature, FallbackVersion, FallbackVersion,
            FallbackVersionWeCanRead, typeof(CustomMappingFactoryAttributeAttribute).Assembly.FullName, LoaderSignature,
            FallbackLoaderSignature]);
        m.SetVersionInfo.Invoke(ctx, [versionInfo]);

        long length = 0;
        byte[] hash = [];
        Action<BinaryWriter> writeEntry = writer =>
        {
            using var hashing = new HashingWriteStream(writer.BaseStream);
            writePayload(hashing);
            (length, hash) = hashing.Finish();
        };
        m.SaveBinaryStream.Invoke(ctx, [PayloadEntryName, writeEntry]);

        var modelWriter = (BinaryWriter)m.SaveWriter.GetValue(ctx)!;
        void SaveString(string s) => m.SaveString.Invoke(ctx, [s]);
        SaveString(NotRegisteredContractName);                       // read by the fallback loader
        SaveString(typeof(ModelZipBridge).Assembly.GetName().Name!); // read by the fallback loader
        SaveString(format.Name);
        SaveString(typeof(TLoader).FullName!);
        SaveString(typeof(TLoader).Assembly.GetName().Name!);
        modelWriter.Write(format.VersionWritten);
        modelWriter.Write(format.VersionReadable);
        modelWriter.Write(length);
        modelWriter.Write(hash);
    }
}
