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
