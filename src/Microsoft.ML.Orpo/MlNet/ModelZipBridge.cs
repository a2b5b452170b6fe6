using System.Reflection;
using System.Runtime.CompilerServices;
using System.Security.Cryptography;
using Microsoft.ML.Data;
using Microsoft.ML.Runtime;
using Microsoft.ML.Transforms;

namespace Microsoft.ML.Orpo.MlNet;

/// <summary>
/// Name and version triple of one component's format inside a model zip (same rules as ML.NET's own
/// <c>VersionInfo</c>): a reader whose <see cref="VersionWritten"/> is below a zip's recorded
/// <see cref="VersionReadable"/> refuses the zip as too new; a zip whose recorded <see cref="VersionWritten"/> is below
/// the reader's <see cref="VersionWeCanRead"/> is refused as too old.
/// </summary>
/// <param name="Name">Stable format name, checked on load (e.g. <c>"OrpoTransformer"</c>).</param>
/// <param name="VersionWritten">The version this build writes (and the newest it understands).</param>
/// <param name="VersionReadable">The oldest reader version able to read what this build writes.</param>
/// <param name="VersionWeCanRead">The oldest written version this build can still read.</param>
internal readonly record struct ModelZipFormat(string Name, uint VersionWritten, uint VersionReadable, uint VersionWeCanRead);

/// <summary>
/// A transformer that can come back out of a model zip through <see cref="ModelZipBridge"/>. The static members are
/// reached by reflection from the loader, so the implementing type needs no registration of its own.
/// </summary>
/// <typeparam name="TSelf">The implementing transformer type.</typeparam>
internal interface IModelZipLoadable<TSelf> where TSelf : class, ITransformer, IModelZipLoadable<TSelf>
{
    /// <summary>The format this build writes and reads.</summary>
    static abstract ModelZipFormat ZipFormat { get; }

    /// <summary>
    /// Rebuilds the transformer from its payload. <paramref name="payload"/> is a read-only, forward-only stream over
    /// exactly the bytes the save callback wrote; it is checked against a SHA-256 after this returns.
    /// </summary>
    /// <param name="env">The environment of the <see cref="MLContext"/> doing the load.</param>
    /// <param name="payload">The payload bytes.</param>
    /// <param name="writtenVersion">The format version recorded in the zip (already range-checked).</param>
    static abstract TSelf LoadFromZip(IHostEnvironment env, Stream payload, uint writtenVersion);
}

/// <summary>
/// The one place that touches ML.NET's non-public model-zip members, by reflection: bound by name and signature, and used
/// only on the Microsoft.ML releases they were verified on (<see cref="MlNetVersion"/>).
/// </summary>
/// <remarks>
/// <para><b>Pattern for a transformer</b> (see <c>PayloadEchoTransformer</c> in the tests for a complete example):</para>
/// <code>
/// internal/public sealed class MyTransformer : ITransformer, IModelZipLoadable&lt;MyTransformer&gt;
/// {
///     public static ModelZipFormat ZipFormat { get; } = new("MyTransformer", 0x00010001, 0x00010001, 0x00010001);
///     void ICanSaveModel.Save(ModelSaveContext ctx)
///     {
///         ModelZipBridge.RegisterLoader(env.ComponentCatalog); // the saving context can load it back at once
///         ModelZipBridge.Save&lt;MyTransformer&gt;(ctx, ZipFormat, stream =&gt; ...);
///     }
///     public static MyTransformer LoadFromZip(IHostEnvironment env, Stream payload, uint writtenVersion) =&gt; ...;
///     // Transform / GetOutputSchema / GetRowToRowMapper: delegate to TextGenerationMapping.
/// }
/// </code>
/// <para><b>What goes into the zip.</b> The component's folder gets the usual <c>Model.key</c> stream and one binary
/// entry, <see cref="PayloadEntryName"/>, holding the bytes the save callback writes. <c>Model.key</c> holds the
/// loader type's name, the format name and versions, the payload length and its SHA-256.</para>
/// <para><b>How ML.NET finds the loader.</b> <c>Model.Load</c> looks the header's loader signature
/// (<see cref="LoaderSignature"/>) up in the loading context's <see cref="ComponentCatalog"/>. ML.NET only fills a
/// catalog from <c>[LoadableClass]</c> assembly attributes, which it declares <c>internal</c>, so this bridge adds one
/// entry for <see cref="LoaderSignature"/> by reflection (<see cref="RegisterLoader"/>). That entry dispatches on the
/// loader type recorded in <c>Model.key</c>, which must implement <see cref="IModelZipLoadable{TSelf}"/>.</para>
/// <para><b>A fresh process.</b> Nothing of this library runs in a fresh process before <c>Model.Load</c> with an
/// environment in hand: ML.NET loads the header's assembly and scans it for <c>[LoadableClass]</c> attributes and
/// extension attributes only, and each <see cref="MLContext"/> has its own catalog. So a process must call
/// <c>mlContext.RegisterOrpo()</c> once (a context that saved one of our transformers is registered already). Nothing
/// else registers: generation, training and export never touch these members, so they work on any Microsoft.ML.
/// To make forgetting it explain itself, the header names ML.NET's <c>CustomTransformer</c> loader as the
/// alternative loader, with this library's contract <see cref="NotRegisteredContractName"/>: when our signature is
/// missing, ML.NET falls back to it, instantiates <see cref="LoaderNotRegisteredFactory"/> and its exception names
/// the call. For that fallback the header's model signature and versions are those of ML.NET's custom-mapping
/// component (<c>CUSTOMXF</c>, 0x00010002) and its first two strings are the contract name and assembly; our own
/// versions live after them.</para>
/// <para>Every load error thrown here is an <see cref="InvalidDataException"/> or <see cref="InvalidOperationException"/>;
/// ML.NET invokes loaders by reflection, so callers see it as the inner exception of a
/// <see cref="TargetInvocationException"/>.</para>
/// </remarks>
internal static class ModelZipBridge
{
    /// <summary>The loader signature in every header this bridge writes (24 characters at most).</summary>
    internal const string LoaderSignature = "MicrosoftMLOrpoZipBridge";

    /// <summary>Name of the binary entry holding the payload, inside the component's folder.</summary>
    internal const string PayloadEntryName = "orpo.payload";

    /// <summary>The custom-mapping contract whose factory explains that registration is missing.</summary>
    internal const string NotRegisteredContractName = "Microsoft.ML.Orpo.LoaderNotRegistered";

    /// <summary>The one public call a process needs before loading, named by the load errors.</summary>
    internal const string RegistrationCall = "mlContext.RegisterOrpo()";

    // ML.NET's custom-mapping component (LambdaTransform): the fallback loader and the header it accepts.
    private const string FallbackLoaderSignature = "CustomTransformer";
    private const string FallbackModelSignature = "CUSTOMXF";
    private const uint FallbackVersion = 0x00010002;
    private const uint FallbackVersionWeCanRead = 0x00010001;
    private const int HashLength = 32;

    private static readonly ConditionalWeakTable<ComponentCatalog, object> s_registered = new();
    private static readonly Lazy<Internals> s_internals = new(Internals.Bind);

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
        MlNetVersion.EnsureVerified("save a model zip");
        Internals m = s_internals.Value;
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

    /// <summary>
    /// Adds the bridge's loader to <paramref name="catalog"/> so that <c>Model.Load</c> on its context finds every
    /// <see cref="IModelZipLoadable{TSelf}"/> transformer. Idempotent and thread-safe; cheap after the first call.
    /// </summary>
    /// <param name="catalog">The catalog of the context that will load (<c>env.ComponentCatalog</c>).</param>
    internal static void RegisterLoader(ComponentCatalog catalog)
    {
        ArgumentNullException.ThrowIfNull(catalog);
        MlNetVersion.EnsureVerified("register its model-zip loader");
        if (s_registered.TryGetValue(catalog, out _))
            return;
        Internals m = s_internals.Value;
        object gate = m.CatalogLock.GetValue(catalog)!;
        lock (gate)
        {
            if (m.GetLoadableClassInfo.Invoke(catalog, [LoaderSignature.ToLowerInvariant(), m.SignatureLoadModel]) is null)
            {
                MethodInfo create = typeof(ModelZipBridge).GetMethod(nameof(CreateFromCatalog), BindingFlags.NonPublic | BindingFlags.Static)!;
                object attribute = m.LoadableClassAttributeCtor.Invoke([typeof(ITransformer), typeof(ModelZipBridge), null,
                    m.SignatureLoadModel, "Microsoft.ML.Orpo model-zip bridge", new[] { LoaderSignature }]);
                object info = m.LoadableClassInfoCtor.Invoke([attribute, null, null, create, true]);
                m.AddClass.Invoke(catalog, [info, new[] { LoaderSignature }, false]);
            }
            s_registered.AddOrUpdate(catalog, gate);
        }
    }

    /// <summary>The loader registered in the catalog; ML.NET calls it by reflection with a <c>ModelLoadContext</c>.</summary>
    private static ITransformer CreateFromCatalog(IHostEnvironment env, object ctx)
    {
        ArgumentNullException.ThrowIfNull(env);
        MlNetVersion.EnsureVerified("load a model zip");
        Internals m = s_internals.Value;
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
            [env, ctx, formatName, written, readable, length, hash], null)!;
    }

    private static ITransformer LoadTyped<T>(IHostEnvironment env, object ctx, string formatName, uint written, uint readable,
        long length, byte[] hash) where T : class, ITransformer, IModelZipLoadable<T>
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
        bool found = (bool)s_internals.Value.TryLoadBinaryStream.Invoke(ctx, BindingFlags.DoNotWrapExceptions, null,
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

    /// <summary>
    /// ML.NET's fallback when <see cref="LoaderSignature"/> is not in the loading context's catalog: it creates this
    /// factory (found through its public custom-mapping attribute) and asks for its mapping, which explains the fix.
    /// </summary>
    [CustomMappingFactoryAttribute(NotRegisteredContractName)]
    internal sealed class LoaderNotRegisteredFactory : CustomMappingFactory<LoaderNotRegisteredFactory.NoColumns, LoaderNotRegisteredFactory.NoColumns>
    {
        /// <summary>Always throws: the real loader is not registered in this context.</summary>
        public override Action<NoColumns, NoColumns> GetMapping() => throw new InvalidOperationException(
            "This model zip contains a Microsoft.ML.Orpo component, but the MLContext loading it has not registered the " +
            $"Microsoft.ML.Orpo loader. Call {RegistrationCall} (using Microsoft.ML.Orpo;) once on that MLContext before " +
            "mlContext.Model.Load(...).");

        /// <summary>Placeholder row type required by <see cref="CustomMappingFactory{TSrc, TDst}"/>.</summary>
        internal sealed class NoColumns;
    }

    /// <summary>Write-only pass-through stream that counts and hashes what goes through it; disposing it leaves the target open.</summary>
    private sealed class HashingWriteStream(Stream inner) : Stream
    {
        private readonly IncrementalHash _hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        private long _length;

        public (long Length, byte[] Hash) Finish() => (_length, _hash.GetHashAndReset());
        public override bool CanRead => false;
        public override bool CanSeek => false;
        public override bool CanWrite => true;
        public override long Length => _length;
        public override long Position { get => _length; set => throw new NotSupportedException(); }
        public override void Flush() => inner.Flush();
        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));

        public override void Write(ReadOnlySpan<byte> buffer)
        {
            inner.Write(buffer);
            _hash.AppendData(buffer);
            _length += buffer.Length;
        }

        protected override void Dispose(bool disposing)
        {
            if (disposing)
                inner.Flush();
            base.Dispose(disposing);
        }
    }

    /// <summary>Read-only stream over exactly <c>length</c> bytes that hashes what is read; <see cref="VerifyRest"/> checks it.</summary>
    private sealed class VerifyingReadStream(Stream inner, long length, byte[] expectedHash) : Stream
    {
        private readonly IncrementalHash _hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        private long _position;
        private bool? _verified;

        /// <summary>Reads whatever the loader left, then compares the hash; false when the bytes do not match.</summary>
        public bool VerifyRest()
        {
            if (_verified is bool done)
                return done;
            var buffer = new byte[81920];
            while (Read(buffer, 0, buffer.Length) > 0)
            {
            }
            if (_position != length || inner.ReadByte() != -1)
                return (_verified = false).Value;
            _verified = CryptographicOperations.FixedTimeEquals(_hash.GetHashAndReset(), expectedHash);
            return _verified.Value;
        }

        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => false;
        public override long Length => length;
        public override long Position { get => _position; set => throw new NotSupportedException(); }
        public override void Flush() { }
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));

        public override int Read(Span<byte> buffer)
        {
            if (_verified is not null)
                return 0;
            int want = (int)Math.Min(buffer.Length, length - _position);
            if (want <= 0)
                return 0;
            int got = inner.Read(buffer[..want]);
            if (got == 0)
                return 0; // truncated; VerifyRest reports it
            _hash.AppendData(buffer[..got]);
            _position += got;
            return got;
        }
    }

    /// <summary>The non-public ML.NET members used, bound once; binding fails with one clear message.</summary>
    private sealed class Internals
    {
        public required FieldInfo SaveWriter { get; init; }
        public required PropertyInfo SaveInRepository { get; init; }
        public required MethodInfo SaveCheckAtModel { get; init; }
        public required MethodInfo SetVersionInfo { get; init; }
        public required MethodInfo SaveBinaryStream { get; init; }
        public required MethodInfo SaveString { get; init; }
        public required ConstructorInfo VersionInfoCtor { get; init; }
        public required Type ModelLoadContext { get; init; }
        public required FieldInfo LoadReader { get; init; }
        public required PropertyInfo LoadInRepository { get; init; }
        public required MethodInfo LoadString { get; init; }
        public required MethodInfo TryLoadBinaryStream { get; init; }
        public required Type SignatureLoadModel { get; init; }
        public required ConstructorInfo LoadableClassAttributeCtor { get; init; }
        public required ConstructorInfo LoadableClassInfoCtor { get; init; }
        public required MethodInfo AddClass { get; init; }
        public required MethodInfo GetLoadableClassInfo { get; init; }
        public required FieldInfo CatalogLock { get; init; }

        public static Internals Bind()
        {
            try
            {
                const BindingFlags I = BindingFlags.Instance | BindingFlags.Public | BindingFlags.NonPublic;
                Assembly core = typeof(ComponentCatalog).Assembly;
                Type save = typeof(ModelSaveContext);
                Type load = Need(core.GetType("Microsoft.ML.ModelLoadContext"), "ModelLoadContext");
                Type versionInfo = Need(core.GetType("Microsoft.ML.VersionInfo"), "VersionInfo");
                Type signature = Need(core.GetType("Microsoft.ML.SignatureLoadModel"), "SignatureLoadModel");
                Type attribute = Need(core.GetType("Microsoft.ML.LoadableClassAttribute"), "LoadableClassAttribute");
                Type attributeBase = Need(core.GetType("Microsoft.ML.LoadableClassAttributeBase"), "LoadableClassAttributeBase");
                Type info = Need(typeof(ComponentCatalog).GetNestedType("LoadableClassInfo", BindingFlags.NonPublic), "LoadableClassInfo");
                return new Internals
                {
                    SaveWriter = Need(save.GetField("Writer", I), "ModelSaveContext.Writer", typeof(BinaryWriter)),
                    SaveInRepository = Need(save.GetProperty("InRepository", I), "ModelSaveContext.InRepository", typeof(bool)),
                    SaveCheckAtModel = Need(save.GetMethod("CheckAtModel", I, Type.EmptyTypes), "ModelSaveContext.CheckAtModel", typeof(void)),
                    SetVersionInfo = Need(save.GetMethod("SetVersionInfo", I, [versionInfo]), "ModelSaveContext.SetVersionInfo", typeof(void)),
                    SaveBinaryStream = Need(save.GetMethod("SaveBinaryStream", I, [typeof(string), typeof(Action<BinaryWriter>)]), "ModelSaveContext.SaveBinaryStream", typeof(void)),
                    SaveString = Need(save.GetMethod("SaveString", I, [typeof(string)]), "ModelSaveContext.SaveString", typeof(void)),
                    VersionInfoCtor = Need(versionInfo.GetConstructor(I, [typeof(string), typeof(uint), typeof(uint), typeof(uint),
                        typeof(string), typeof(string), typeof(string)]), "VersionInfo..ctor"),
                    ModelLoadContext = load,
                    LoadReader = Need(load.GetField("Reader", I), "ModelLoadContext.Reader", typeof(BinaryReader)),
                    LoadInRepository = Need(load.GetProperty("InRepository", I), "ModelLoadContext.InRepository", typeof(bool)),
                    LoadString = Need(load.GetMethod("LoadString", I, Type.EmptyTypes), "ModelLoadContext.LoadString", typeof(string)),
                    TryLoadBinaryStream = Need(load.GetMethod("TryLoadBinaryStream", I, [typeof(string), typeof(Action<BinaryReader>)]), "ModelLoadContext.TryLoadBinaryStream", typeof(bool)),
                    SignatureLoadModel = signature,
                    LoadableClassAttributeCtor = Need(attribute.GetConstructor(I, [typeof(Type), typeof(Type), typeof(Type), typeof(Type),
                        typeof(string), typeof(string[])]), "LoadableClassAttribute..ctor"),
                    LoadableClassInfoCtor = Need(info.GetConstructor(I, [attributeBase, typeof(MethodInfo), typeof(ConstructorInfo),
                        typeof(MethodInfo), typeof(bool)]), "LoadableClassInfo..ctor"),
                    AddClass = Need(typeof(ComponentCatalog).GetMethod("AddClass", I, [info, typeof(string[]), typeof(bool)]), "ComponentCatalog.AddClass", typeof(void)),
                    GetLoadableClassInfo = Need(typeof(ComponentCatalog).GetMethod("GetLoadableClassInfo", I, [typeof(string), typeof(Type)]), "ComponentCatalog.GetLoadableClassInfo", info),
                    CatalogLock = Need(typeof(ComponentCatalog).GetField("_lock", I), "ComponentCatalog._lock", typeof(object)),
                };
            }
            catch (MissingMemberException ex)
            {
                throw new InvalidOperationException(
                    $"Microsoft.ML.Orpo cannot bind to ML.NET's model-zip internals in Microsoft.ML {MlNetVersion.Loaded} ({ex.Message}); " +
                    $"they were verified on Microsoft.ML {string.Join(" and ", MlNetVersion.Verified)}.", ex);
            }
        }

        private static T Need<T>(T? member, string name) where T : class =>
            member ?? throw new MissingMemberException(name);

        // Shape as well as name: a member whose type changed is as unusable as a missing one.
        private static T Need<T>(T? member, string name, Type type) where T : MemberInfo
        {
            Type? actual = Need(member, name) switch
            {
                FieldInfo f => f.FieldType,
                PropertyInfo p => p.PropertyType,
                MethodInfo m => m.ReturnType,
                _ => null,
            };
            return actual == type ? member! : throw new MissingMemberException($"{name} of type {type.Name} (found {actual?.Name})");
        }
    }
}
