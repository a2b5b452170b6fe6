using System.Reflection;
using Microsoft.ML.Runtime;

namespace Microsoft.ML.Orpo.MlNet;

/// <summary>
/// The one place that touches ML.NET's non-public model-zip members, by reflection: bound by name and signature, and used
/// only on the Microsoft.ML releases they were verified on (<see cref="MlNetVersion"/>). This part holds the names that
/// tie a zip to this library; the bridge's other jobs each have a file of their own: writing a component
/// (ModelZipBridge.Save.cs), reading it back (ModelZipBridge.Load.cs), adding the loader to a context's catalog
/// (ModelZipBridge.Registration.cs), explaining a missing registration (ModelZipBridge.LoaderNotRegistered.cs), the
/// bound members (<see cref="ModelZipInternals"/>) and the payload's checksum (<see cref="HashingWriteStream"/>,
/// <see cref="VerifyingReadStream"/>).
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
internal static partial class ModelZipBridge
{
    /// <summary>The loader signature in every header this bridge writes (24 characters at most).</summary>
    internal const string LoaderSignature = "MicrosoftMLOrpoZipBridge";

    /// <summary>Name of the binary entry holding the payload, inside the component's folder.</summary>
    internal const string PayloadEntryName = "orpo.payload";

    /// <summary>The custom-mapping contract whose factory explains that registration is missing.</summary>
    internal const string NotRegisteredContractName = "Microsoft.ML.Orpo.LoaderNotRegistered";

    /// <summary>The one public call a process needs before loading, named by the load errors.</summary>
    internal const string RegistrationCall = "mlContext.RegisterOrpo()";
}
