using Microsoft.ML.Orpo.Generation;
using Microsoft.ML.Orpo.Training;

namespace Microsoft.ML.Orpo.Benchmarks;

/// <summary>
/// <c>--export-gguf DIR</c>: the two benchmark models as F32 GGUF for benchmarks/llamacpp, each with the batch-1 prompt of
/// the <c>gen.*.b1</c> scenarios and our greedy continuation of it, as space-separated ids:
/// <c>MODEL.f32.gguf</c>, <c>MODEL.prompt.txt</c>, <c>MODEL.ours.txt</c>.
/// </summary>
internal static class GgufExport
{
    public static void Run(string directory, int prompt, int newTokens)
    {
        Directory.CreateDirectory(directory);
        foreach (var name in new[] { "stories260K", "llama41m" })
        {
            var model = BenchModels.Load(name);
            using var transformer = new OrpoTransformer(new MLContext(seed: 1), model, TransformerSettings.ForBaseModel(model.Config),
                Array.Empty<OrpoStepMetrics>());
            string gguf = Path.Combine(directory, $"{name}.f32.gguf");
            transformer.SaveGguf(gguf, GgufTensorType.F32);
            var prompts = Scenarios.GenerationPrompts(model, 1, prompt);
            var ours = TextGenerator.Generate(model.Network, prompts, new GenerationOptions { MaxNewTokens = newTokens, Temperature = 0 }, new HashSet<int>());
            File.WriteAllText(Path.Combine(directory, $"{name}.prompt.txt"), string.Join(' ', prompts[0]) + "\n");
            File.WriteAllText(Path.Combine(directory, $"{name}.ours.txt"), string.Join(' ', ours[0]) + "\n");
            Console.WriteLine($"{gguf}: {new FileInfo(gguf).Length} bytes, {prompts[0].Count} prompt ids, {ours[0].Count} greedy ids");
        }
    }
}
