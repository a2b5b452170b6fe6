using Microsoft.ML.Orpo.Tests.Infrastructure;
using static Microsoft.ML.Orpo.Tests.Preferences.PreferenceJsonlShapeTests;

namespace Microsoft.ML.Orpo.Tests.Preferences;

[TestClass]
public sealed class PreferenceJsonlErrorTests
{
    private const string Good = "{\"prompt\": \"P\", \"chosen\": \"C\", \"rejected\": \"R\"}\n";

    private static string ErrorOn(string content)
    {
        string path = WriteFile(content);
        var e = Assert.ThrowsExactly<InvalidDataException>(() => Load(path));
        StringAssert.Contains(e.Message, path);
        Console.WriteLine(e.Message);
        return e.Message;
    }

    [TestMethod]
    public void InvalidJsonNamesTheLine() =>
        StringAssert.Contains(ErrorOn(Good + "\n" + "{\"prompt\": \"P\", \"chosen\": \n" + Good), "line 3");

    [TestMethod]
    public void MissingFieldIsNamed()
    {
        string message = ErrorOn(Good + "{\"prompt\": \"P\", \"chosen\": \"C\"}\n");
        StringAssert.Contains(message, "line 2");
        StringAssert.Contains(message, "\"rejected\"");
    }

    [TestMethod]
    public void StringShapeNeedsAPrompt() =>
        StringAssert.Contains(ErrorOn("{\"chosen\": \"C\", \"rejected\": \"R\"}"), "missing \"prompt\"");

    [TestMethod]
    public void NonObjectLineIsRejected() => StringAssert.Contains(ErrorOn("[1, 2]"), "expected a JSON object");

    [TestMethod]
    public void MixedShapesAreRejected() =>
        StringAssert.Contains(ErrorOn("{\"prompt\": \"P\", \"chosen\": \"C\", \"rejected\": [{\"role\": \"assistant\", \"content\": \"R\"}]}"),
            "both be strings or both be message lists");

    [TestMethod]
    public void ResponseMustBeAnAssistantTurn() =>
        StringAssert.Contains(ErrorOn("{\"chosen\": [{\"role\": \"user\", \"content\": \"C\"}], \"rejected\": [{\"role\": \"assistant\", \"content\": \"R\"}]}"),
            "must be an \"assistant\" message");

    [TestMethod]
    public void ConversationsMayDifferOnlyInTheLastTurn() =>
        StringAssert.Contains(ErrorOn(
            "{\"chosen\": [{\"role\": \"user\", \"content\": \"A\"}, {\"role\": \"assistant\", \"content\": \"C\"}]," +
            " \"rejected\": [{\"role\": \"user\", \"content\": \"B\"}, {\"role\": \"assistant\", \"content\": \"R\"}]}"), "differ before their last message");

    [TestMethod]
    public void MessageWithoutContentIsRejected() =>
        StringAssert.Contains(ErrorOn("{\"prompt\": \"P\", \"chosen\": [{\"role\": \"assistant\"}], \"rejected\": [{\"role\": \"assistant\", \"content\": \"R\"}]}"),
            "\"chosen\"[0] needs a string \"content\"");

    [TestMethod]
    public void InvalidUtf8NamesTheFile()
    {
        string path = WriteFile("");
        File.WriteAllBytes(path, [.. System.Text.Encoding.UTF8.GetBytes(Good + Good), (byte)'"', 0xff, (byte)'"', (byte)'\n']);
        var e = Assert.ThrowsExactly<InvalidDataException>(() => Load(path));
        StringAssert.Contains(e.Message, "line 3: invalid UTF-8");
    }

    [TestMethod]
    public void MissingFileIsAFileNotFoundException() =>
        Assert.ThrowsExactly<FileNotFoundException>(() => Load(Path.Combine(TestAssets.NewTempDirectory("orpo-jsonl"), "none.jsonl")));

    [TestMethod]
    public void GzipBombWithoutLineBreaksIsRefusedWithoutExhaustingMemory()
    {
        string path = Path.Combine(Infrastructure.TestAssets.NewTempDirectory("jsonl"), "bomb.jsonl.gz");
        using (var file = File.Create(path))
        using (var gzip = new System.IO.Compression.GZipStream(file, System.IO.Compression.CompressionLevel.SmallestSize))
        {
            var block = new byte[1 << 20];
            Array.Fill(block, (byte)'a');
            for (int i = 0; i < 65; i++) gzip.Write(block);
        }
        Assert.IsLessThan(1L << 20, new FileInfo(path).Length, "a small file that expands to 65 MiB");
        var e = Assert.ThrowsExactly<InvalidDataException>(() => new MLContext().Data.LoadPreferenceJsonl(path));
        StringAssert.Contains(e.Message, "line 1");
        StringAssert.Contains(e.Message, "longer than 64 MiB");
    }
}
