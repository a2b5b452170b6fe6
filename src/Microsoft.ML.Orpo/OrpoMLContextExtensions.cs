using Microsoft.ML.Orpo.MlNet;

namespace Microsoft.ML.Orpo;

/// <summary>Registration of Microsoft.ML.Orpo's model loader with an <see cref="MLContext"/>.</summary>
public static class OrpoMLContextExtensions
{
    /// <summary>
    /// Lets <c>mlContext.Model.Load</c> read Microsoft.ML.Orpo components (such as <see cref="ITransformer"/>s saved
    /// by this library, alone or inside a <see cref="Microsoft.ML.Data.TransformerChain{TLastTransformer}"/>) from a model zip.
    /// </summary>
    /// <remarks>
    /// Call it once per <see cref="MLContext"/> before loading, typically right after creating the context in a
    /// process that did not train the model. A context that created or fitted a Microsoft.ML.Orpo transformer is
    /// registered already. Calling it again is harmless. Without it, loading fails with an error that names this call.
    /// </remarks>
    /// <param name="mlContext">The context that will load the model.</param>
    /// <returns>The same context, for chaining.</returns>
    public static MLContext RegisterOrpo(this MLContext mlContext)
    {
        ArgumentNullException.ThrowIfNull(mlContext);
        ModelZipBridge.RegisterLoader(mlContext.ComponentCatalog);
        return mlContext;
    }
}
