using System.Reflection;
using Microsoft.ML.Data;
using Microsoft.ML.Orpo.Tests.Infrastructure;

namespace Microsoft.ML.Orpo.Tests.MlNet;

/// <summary>Rows, data and helpers shared by the model-zip tests.</summary>
internal static class ModelZipTestSupport
{
    public static readonly string[] Prompts = ["Once upon a time", "", "héllo, wörld ✓", "The end."];
    public static readonly byte[] Blob = [0, 1, 2, 0xFE, 0xFF, 42];
    public const string Prefix = "echo: ";

    public sealed class PromptRow
    {
        public string Prompt { get; set; } = "";
    }

    public sealed class ResponseRow
    {
        public string Response { get; set; } = "";
    }

    public static IDataView PromptData(MLContext ml) => ml.Data.LoadFromEnumerable(Prompts.Select(p => new PromptRow { Prompt = p }));

    public static string[] ExpectedResponses() => Prompts.Select(p => PayloadEchoTransformer.Expected(Prefix, Blob, p)).ToArray();

    public static string[] Responses(ITransformer model, IDataView data, string column = "Response") =>
        model.Transform(data).GetColumn<string>(column).ToArray();

    public static string SaveEcho(MLContext ml, string inputColumn = "Prompt", Action<PayloadEchoTransformer>? configure = null)
    {
        var model = new PayloadEchoTransformer(ml, inputColumn, "Response", Prefix, Blob);
        configure?.Invoke(model);
        string path = Path.Combine(TestAssets.NewTempDirectory("modelzip"), "echo.zip");
        ml.Model.Save(model, PromptData(ml).Schema, path);
        return path;
    }

    /// <summary>All messages in an exception's chain (ML.NET invokes loaders by reflection, so ours are inner exceptions).</summary>
    public static string AllMessages(Exception ex)
    {
        var messages = new List<string>();
        for (Exception? e = ex; e is not null; e = e.InnerException)
            messages.Add($"{e.GetType().Name}: {e.Message}");
        return string.Join(" ---> ", messages);
    }

    /// <summary>The innermost exception of type <typeparamref name="T"/> in the chain, or null.</summary>
    public static T? Find<T>(Exception ex) where T : Exception
    {
        T? found = null;
        for (Exception? e = ex; e is not null; e = e.InnerException)
            if (e is T t && e is not TargetInvocationException)
                found = t;
        return found;
    }
}
