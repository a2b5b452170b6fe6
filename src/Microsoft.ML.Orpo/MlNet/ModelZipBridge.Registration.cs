using System.Reflection;
using System.Runtime.CompilerServices;
using Microsoft.ML.Runtime;

namespace Microsoft.ML.Orpo.MlNet;

// Registering the bridge's loader with a context's ComponentCatalog (what RegisterOrpo() does):
// ML.NET fills catalogs only from attributes it keeps internal, so one entry for LoaderSignature is
// added by reflection, pointing at CreateFromCatalog.
internal static partial class ModelZipBridge
{
    private static readonly ConditionalWeakTable<ComponentCatalog, object> s_registered = new();

    /// <summary>
    /// Adds the bridge's loader to <paramref name="catalog"/> so that <c>Model.Load</c> on its context finds every
    /// <see cref="IModelZipLoadable{TSelf}"/> transformer. Idempotent and thread-safe; cheap after the first call.
    /// </summary>
    /// <param name="catalog">The catalog of the context that will load (<c>env.ComponentCatalog</c>).</param>
    internal static void RegisterLoader(ComponentCatalog catalog)
    {
        ArgumentNullException.ThrowIfNull(catalog);
        ModelZipInternals m = ModelZipInternals.ForVerifiedRelease("register its model-zip loader");
        if (s_registered.TryGetValue(catalog, out _))
            return;
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
}
