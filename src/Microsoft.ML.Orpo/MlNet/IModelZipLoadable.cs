using Microsoft.ML.Runtime;

namespace Microsoft.ML.Orpo.MlNet;

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
