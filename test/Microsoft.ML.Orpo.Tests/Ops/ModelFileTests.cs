using System.Text.RegularExpressions;
using Microsoft.ML.Orpo.Tests.Infrastructure;

namespace Microsoft.ML.Orpo.Tests.Ops;

/// <summary>
/// The model file holds only math: every tensor operation goes through the operation layer (Ops/), so no CPU kernel,
/// native-interop type, size threshold, device or vendor check appears in it.
/// </summary>
[TestClass]
public sealed class ModelFileTests
{
    private static string Source(params string[] path) => Path.Combine([TestAssets.RepoRoot, "src", "Microsoft.ML.Orpo", .. path]);

    /// <summary>The top-level types declared in a source folder.</summary>
    private static IEnumerable<string> TypesDeclaredIn(string folder) =>
        Directory.EnumerateFiles(Source(folder), "*.cs", SearchOption.AllDirectories)
            .SelectMany(f => Regex.Matches(File.ReadAllText(f), @"^(?:\w+ )*(?:class|record|struct|enum|interface) (\w+)", RegexOptions.Multiline))
            .Select(m => m.Groups[1].Value).Distinct();

    /// <summary>Code without comments and strings: what the file does, not what it says.</summary>
    private static string Code(string file)
    {
        string text = File.ReadAllText(file);
        text = Regex.Replace(text, @"//.*", "");
        return Regex.Replace(text, "\"(?:\\\\.|[^\"\\\\])*\"", "\"\"");
    }

    [TestMethod]
    public void TheModelFileNamesNoKernelThresholdDeviceOrVendor()
    {
        var kernelTypes = TypesDeclaredIn("Kernels").Concat(TypesDeclaredIn("Native")).ToList();
        Assert.IsGreaterThan(10, kernelTypes.Count, "the kernel folders were read");
        CollectionAssert.Contains(kernelTypes, "PackedGemm");
        string code = Code(Source("Modeling", "LlamaForCausalLM.cs"));
        StringAssert.Contains(code, "Op.Attention(", "the model calls the operation layer");
        var forbidden = kernelTypes.Select(t => $@"\b{t}\b")
            .Concat([@"\bSupports\w*\(", @"Threshold", @"DeviceType", @"device_type", @"Vendor", @"Avx", @"is_cuda", @"\bCPU\b", @"MinWeight", @"MaxRows"]);
        var found = forbidden.Where(pattern => Regex.IsMatch(code, pattern)).ToList();
        Assert.AreEqual(0, found.Count, "LlamaForCausalLM.cs names: " + string.Join(", ", found));
    }

    [TestMethod]
    public void TheCheckFindsAKernelNameWhereOneIs()
    {
        // The same patterns against a file that does dispatch: the check above can fail.
        string code = Code(Source("Ops", "Op.Attention.cs"));
        Assert.IsTrue(TypesDeclaredIn("Kernels").Any(t => Regex.IsMatch(code, $@"\b{t}\b")));
    }
}
