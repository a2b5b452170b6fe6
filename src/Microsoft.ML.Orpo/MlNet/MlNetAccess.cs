using System.Reflection;
using Microsoft.ML.Data;
using Microsoft.ML.Runtime;

namespace Microsoft.ML.Orpo.MlNet;

/// <summary>
/// The three non-public ML.NET members an estimator needs outside the model zip: the environment behind a transforms
/// catalog, a schema-shape column, and the context's cancellation flag. Each is bound by its shape on first use, on
/// any Microsoft.ML version; a missing one is a clear error (or, for cancellation, simply never set).
/// </summary>
internal static class MlNetAccess
{
    private const BindingFlags Instance = BindingFlags.Instance | BindingFlags.Public | BindingFlags.NonPublic;

    private static readonly Lazy<PropertyInfo> s_catalogEnvironment = new(() =>
        typeof(TransformsCatalog).Assembly.GetType("Microsoft.ML.Data.IInternalCatalog")?.GetProperty("Environment", Instance) is { } p
            && typeof(IHostEnvironment).IsAssignableFrom(p.PropertyType)
            ? p
            : throw Missing("IInternalCatalog.Environment"));

    private static readonly Lazy<ConstructorInfo> s_schemaColumnCtor = new(() =>
        typeof(SchemaShape.Column).GetConstructor(Instance, [typeof(string), typeof(SchemaShape.Column.VectorKind), typeof(DataViewType),
            typeof(bool), typeof(SchemaShape)])
        ?? throw Missing("SchemaShape.Column(string, VectorKind, DataViewType, bool, SchemaShape)"));

    private static readonly Lazy<PropertyInfo?> s_isCanceled = new(() =>
        typeof(ComponentCatalog).Assembly.GetType("Microsoft.ML.Runtime.ICancelable")?.GetProperty("IsCanceled") is { } p
            && p.PropertyType == typeof(bool) ? p : null);

    /// <summary>The environment behind a transforms catalog (ML.NET keeps that accessor internal).</summary>
    /// <param name="catalog">For example <c>mlContext.Transforms</c>.</param>
    internal static IHostEnvironment GetEnvironment(TransformsCatalog catalog)
    {
        ArgumentNullException.ThrowIfNull(catalog);
        return (IHostEnvironment)s_catalogEnvironment.Value.GetValue(catalog)!;
    }

    /// <summary>
    /// A scalar, non-key <see cref="SchemaShape.Column"/> (its constructor is internal, yet estimators must return
    /// schema shapes holding the columns they add).
    /// </summary>
    /// <param name="name">Column name.</param>
    /// <param name="itemType">Column type.</param>
    internal static SchemaShape.Column ScalarColumn(string name, DataViewType itemType) =>
        (SchemaShape.Column)s_schemaColumnCtor.Value.Invoke([name, SchemaShape.Column.VectorKind.Scalar, itemType, false, null]);

    /// <summary>
    /// Whether <c>MLContext.CancelExecution()</c> was called on <paramref name="env"/> (ML.NET keeps the
    /// <c>ICancelable</c> interface internal). False when the member cannot be found.
    /// </summary>
    /// <param name="env">The context's environment.</param>
    internal static bool IsCanceled(IHostEnvironment env) =>
        s_isCanceled.Value is { } property && property.DeclaringType!.IsInstanceOfType(env) && (bool)property.GetValue(env)!;

    private static InvalidOperationException Missing(string member) => new(
        $"Microsoft.ML.Orpo cannot find ML.NET's non-public member {member} in Microsoft.ML {MlNetVersion.Loaded} " +
        $"(verified on {string.Join(", ", MlNetVersion.Verified)}).");
}
