using Microsoft.ML.Data;
using System.IO.Compression;
using System.Text;
using Microsoft.ML.Orpo.Tests.Infrastructure;

namespace Microsoft.ML.Orpo.Tests.Preferences;

[TestClass]
public sealed class PreferenceJsonlShapeTests
{
    internal sealed class Row
    {
        public string Prompt { get; set; } = "";
        public string Chosen { get; set; } = "";
        public string Rejected { get; set; } = "";
    }

    internal static string WriteFile(string content, string name = "pairs.jsonl")
    {
        string path = Path.Combine(TestAssets.NewTempDirectory("orpo-jsonl"), name);
        File.WriteAllText(path, content, new UTF8Encoding(false));
        return path;
    }

    internal static List<Row> Load(string path)
    {
        var ml = new MLContext(seed: 1);
        return ml.Data.CreateEnumerable<Row>(ml.Data.LoadPreferenceJsonl(path), reuseRowObject: false).ToList();
    }

    [TestMethod]
    public void StringShapeSkipsBlankLinesAndIgnoresExtraProperties()
    {
        var rows = Load(WriteFile(
            "{\"prompt\": \"Once upon a time\", \"chosen\": \" Sue.\", \"rejected\": \" Lily.\", \"kind\": \"name\"}\n" +
            "\n   \r\n" +
            "{\"id\": 7, \"prompt\": \"P2\", \"chosen\": \"C2\", \"rejected\": \"R2\"}\r\n"));
        Assert.HasCount(2, rows);
        Assert.AreEqual("Once upon a time", rows[0].Prompt);
        Assert.AreEqual(" Sue.", rows[0].Chosen);
        Assert.AreEqual(" Lily.", rows[0].Rejected);
        Assert.AreEqual("R2", rows[1].Rejected);
    }

    [TestMethod]
    public void ConversationalShapeWithImplicitPromptUsesTheSharedTurns()
    {
        var rows = Load(WriteFile(
            "{\"chosen\": [{\"role\": \"user\", \"content\": \"Tell a story.\"}, {\"role\": \"assistant\", \"content\": \"Once upon a time.\"}]," +
            " \"rejected\": [{\"role\": \"user\", \"content\": \"Tell a story.\"}, {\"role\": \"assistant\", \"content\": \"No.\"}]}"));
        Assert.AreEqual("Tell a story.", rows.Single().Prompt);
        Assert.AreEqual("Once upon a time.", rows[0].Chosen);
        Assert.AreEqual("No.", rows[0].Rejected);
    }

    [TestMethod]
    public void ConversationalShapeWithExplicitPromptJoinsSystemAndUserTurns()
    {
        var rows = Load(WriteFile(
            "{\"prompt\": [{\"role\": \"system\", \"content\": \"Be kind.\"}, {\"role\": \"user\", \"content\": \"Hi\"}]," +
            " \"chosen\": [{\"role\": \"assistant\", \"content\": \"Hello!\"}], \"rejected\": [{\"role\": \"assistant\", \"content\": \"Go away.\"}]}\n" +
            "{\"prompt\": \"Hi\", \"chosen\": [{\"role\": \"assistant\", \"content\": \"Hello!\"}], \"rejected\": [{\"role\": \"assistant\", \"content\": \"Bye.\"}]}"));
        Assert.AreEqual("Be kind.\n\nHi", rows[0].Prompt);
        Assert.AreEqual("Hello!", rows[0].Chosen);
        Assert.AreEqual("Go away.", rows[0].Rejected);
        Assert.AreEqual("Hi", rows[1].Prompt);
        Assert.AreEqual("Bye.", rows[1].Rejected);
    }

    [TestMethod]
    public void MultiTurnPromptKeepsTheSpeakers()
    {
        var rows = Load(WriteFile(
            "{\"prompt\": [{\"role\": \"user\", \"content\": \"Hi\"}, {\"role\": \"assistant\", \"content\": \"Hello.\"}, {\"role\": \"user\", \"content\": \"A story?\"}]," +
            " \"chosen\": [{\"role\": \"assistant\", \"content\": \"Sure.\"}], \"rejected\": [{\"role\": \"assistant\", \"content\": \"No.\"}]}"));
        Assert.AreEqual("user: Hi\n\nassistant: Hello.\n\nuser: A story?", rows.Single().Prompt);
    }

    [TestMethod]
    public void OpenAiPreferenceShapeIsRead()
    {
        var rows = Load(WriteFile(
            "{\"input\": {\"messages\": [{\"role\": \"system\", \"content\": \"S\"}, {\"role\": \"user\", \"content\": \"U\"}]}," +
            " \"preferred_output\": [{\"role\": \"assistant\", \"content\": \"good\"}], \"non_preferred_output\": [{\"role\": \"assistant\", \"content\": \"bad\"}]}"));
        Assert.AreEqual("S\n\nU", rows.Single().Prompt);
        Assert.AreEqual("good", rows[0].Chosen);
        Assert.AreEqual("bad", rows[0].Rejected);
    }

    [TestMethod]
    public void GzipFilesAreRecognisedByContent()
    {
        string path = Path.Combine(TestAssets.NewTempDirectory("orpo-jsonl"), "pairs.jsonl.gz");
        using (var gz = new GZipStream(File.Create(path), CompressionLevel.Optimal))
            gz.Write(Encoding.UTF8.GetBytes("{\"prompt\": \"P\", \"chosen\": \"C é\", \"rejected\": \"R\"}\n"));
        Assert.AreEqual("C é", Load(path).Single().Chosen);
    }

    [TestMethod]
    public void ColumnNamesAreConfigurableEvenWhenSwapped()
    {
        var ml = new MLContext(seed: 1);
        var data = ml.Data.LoadPreferenceJsonl(WriteFile("{\"prompt\": \"P\", \"chosen\": \"C\", \"rejected\": \"R\"}"),
            promptColumnName: "Chosen", chosenColumnName: "Prompt", rejectedColumnName: "Bad");
        Assert.AreEqual("P", data.GetColumn<string>("Chosen").Single());
        Assert.AreEqual("C", data.GetColumn<string>("Prompt").Single());
        Assert.AreEqual("R", data.GetColumn<string>("Bad").Single());
        Assert.ThrowsExactly<ArgumentException>(() => ml.Data.LoadPreferenceJsonl("x.jsonl", "A", "A", "B"));
    }

    [TestMethod]
    public void BundledStoryPreferencesLoad()
    {
        string dir = Path.Combine(TestAssets.RepoRoot, "data", "stories-preferences");
        var train = Load(Path.Combine(dir, "train.jsonl"));
        var heldOut = Load(Path.Combine(dir, "heldout.jsonl"));
        Assert.IsGreaterThan(50, train.Count);
        Assert.IsGreaterThan(20, heldOut.Count);
        var trainPairs = train.Select(r => (r.Prompt, r.Chosen)).ToHashSet();
        Assert.IsFalse(heldOut.Any(r => trainPairs.Contains((r.Prompt, r.Chosen))), "held-out pairs are not training pairs");
    }
}
