using System.Reflection;
using Microsoft.ML.Runtime;

namespace Microsoft.ML.Orpo.MlNet;

// Reading a component back out of a model zip: the loader ML.NET calls through the catalog entry reads what
// Save{TLoader} wrote to Model.key, resolves the recorded loader type, refuses a format that is
// too new or too old for it, and hands it the payload entry, whose length and SHA-256 are checked whatever it read.
internal static partial class ModelZipBridge
{
    private const int HashLength = 32;

    /// <summary>The loader registered in the catalog; ML.NET calls it by reflection with a <c>ModelLoadContext</c>.</summary>
    private static ITransformer CreateFromCatalog(IHostEnvironment env, object ctx)
    {
        ArgumentNullException.ThrowIfNull(env);
        ModelZipInternals m = ModelZipInternals.ForVerifiedRelease("load a model zip");
        if (!m.ModelLoadContext.IsInstanceOfType(ctx))
            throw new InvalidOperationException("The model-zip bridge was called without an ML.NET ModelLoadContext.");
        if (!(bool)m.LoadInRepository.GetValue(ctx)!)
            throw new InvalidDataException("An Orpo component can only be loaded from a model zip (a repository), not a single stream.");

        string LoadString() => (string)m.LoadString.Invoke(ctx, BindingFlags.DoNotWrapExceptions, null, null, null)!;
        var reader = (BinaryReader)m.LoadReader.GetValue(ctx)!;
        string contract = LoadString();
        _ = LoadString(); // contract assembly, used only by the fallback loader
        if (contract != NotRegisteredContractName)
            throw Corrupt($"unexpected contract '{contract}'");
        string formatName = LoadString();
        string typeName = LoadString();
        string assemblyName = LoadString();
        uint written = reader.ReadUInt32();
        uint readable = reader.ReadUInt32();
        long length = reader.ReadInt64();
        byte[] hash = reader.ReadBytes(HashLength);
        if (hash.Length != HashLength || length < 0)
            throw Corrupt("the payload length or checksum is missing");

        Type loaderType = ResolveLoaderType(assemblyName, typeName);
        MethodInfo load = typeof(ModelZipBridge).GetMethod(nameof(LoadTyped), BindingFlags.NonPublic | BindingFlags.Static)!
            .MakeGenericMethod(loaderType);
        return (ITransformer)load.Invoke(null, BindingFlags.DoNotWrapExceptions, null,
            [env, ctx, m, formatName, written, readable, length, hash], null)!;
    }

    private static ITransformer LoadTyped<T>(IHostEnvironment env, object ctx, ModelZipInternals m, string formatName, uint written,
        uint readable, long length, byte[] hash) where T : class, ITransformer, IModelZipLoadable<T>
    {
        ModelZipFormat format = T.ZipFormat;
        if (formatName != format.Name)
            throw Corrupt($"the component's format is '{formatName}' but its loader {typeof(T).Name} reads '{format.Name}'");
        if (readable > written)
            throw Corrupt($"the format versions of '{formatName}' are inconsistent (0x{readable:X8} > 0x{written:X8})");
        string ours = typeof(ModelZipBridge).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion ?? "?";
        if (readable > format.VersionWritten)
            throw new InvalidDataException(
                $"The model zip's '{formatName}' component has format version 0x{written:X8} and needs a reader of version 0x{readable:X8} or later, " +
                $"but this Microsoft.ML.Orpo ({ours}) reads versions up to 0x{format.VersionWritten:X8}: it was written by a newer Microsoft.ML.Orpo. " +
                "Upgrade Microsoft.ML.Orpo to load it.");
        if (written < format.VersionWeCanRead)
            throw new InvalidDataException(
                $"The model zip's '{formatName}' component has format version 0x{written:X8}, older than this Microsoft.ML.Orpo ({ours}) " +
                $"can read (0x{format.VersionWeCanRead:X8} or later). Load it with an older Microsoft.ML.Orpo and save it again.");

        T? result = null;
        Action<BinaryReader> read = entry =>
        {
            using var payload = new VerifyingReadStream(entry.BaseStream, length, hash);
            try
            {
                result = T.LoadFromZip(env, payload, written);
            }
            catch (Exception ex) when (ex is not InvalidDataException)
            {
                if (!payload.VerifyRest())
                    throw Corrupt("the payload does not match its checksum", ex);
                throw;
            }
            if (!payload.VerifyRest())
                throw Corrupt("the payload does not match its checksum");
        };
        bool found = (bool)m.TryLoadBinaryStream.Invoke(ctx, BindingFlags.DoNotWrapExceptions, null,
            [PayloadEntryName, read], null)!;
        if (!found)
            throw Corrupt($"the entry '{PayloadEntryName}' is missing");
        return result ?? throw Corrupt($"{typeof(T).Name}.LoadFromZip returned null");
    }

    private static Type ResolveLoaderType(string assemblyName, string typeName)
    {
        Type? type;
        try
        {
            type = Assembly.Load(new AssemblyName(assemblyName)).GetType(typeName, throwOnError: false);
        }
        catch (Exception ex) when (ex is FileNotFoundException or FileLoadException or BadImageFormatException or ArgumentException)
        {
            throw Corrupt($"its loader assembly '{assemblyName}' could not be loaded", ex);
        }
        if (type is null)
            throw Corrupt($"its loader type '{typeName}' is not in '{assemblyName}'");
        bool loadable = type.GetInterfaces().Any(i =>
            i.IsGenericType && i.GetGenericTypeDefinition() == typeof(IModelZipLoadable<>) && i.GetGenericArguments()[0] == type);
        if (!loadable)
            throw Corrupt($"'{typeName}' is not a model-zip loadable type");
        return type;
    }

    private static InvalidDataException Corrupt(string what, Exception? inner = null) =>
        new($"The model zip is corrupt or was not written by Microsoft.ML.Orpo: {what}.", inner);
}
