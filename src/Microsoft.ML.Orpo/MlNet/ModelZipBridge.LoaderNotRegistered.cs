using Microsoft.ML.Transforms;

namespace Microsoft.ML.Orpo.MlNet;

// Explaining a missing registration: when a loading context's catalog lacks LoaderSignature, ML.NET
// falls back to the custom-mapping loader named in the header, which instantiates
// LoaderNotRegisteredFactory; its error names RegistrationCall, the fix that ML.NET's own
// error could not know.
internal static partial class ModelZipBridge
{
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
}
