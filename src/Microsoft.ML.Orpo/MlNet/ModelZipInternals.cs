using System.Reflection;
using Microsoft.ML.Runtime;

namespace Microsoft.ML.Orpo.MlNet;

/// <summary>
/// The non-public ML.NET members that <see cref="ModelZipBridge"/> saves, loads and registers through, bound once by
/// reflection, each by name and by type, and handed out only after <see cref="MlNetVersion"/> confirms the running
/// Microsoft.ML is a release the bridge was verified on. A member that is missing or changed its type fails the whole
/// binding with one error naming the running Microsoft.ML and the verified ones.
/// </summary>
internal sealed class ModelZipInternals
{
    // Lazy's default mode caches a failed binding too, so every later call reports the same clear error.
    private static readonly Lazy<ModelZipInternals> s_bound = new(Bind);

    private ModelZipInternals()
    {
    }

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

    /// <summary>
    /// The bound members, after the version gate: binding by shape cannot tell a member that kept its signature but
    /// changed its meaning, so an unverified release is refused before any member is touched.
    /// </summary>
    /// <param name="action">What is attempted, for the gate's message (e.g. "save a model zip").</param>
    internal static ModelZipInternals ForVerifiedRelease(string action)
    {
        MlNetVersion.EnsureVerified(action);
        return s_bound.Value;
    }

    private static ModelZipInternals Bind()
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
            return new ModelZipInternals
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
