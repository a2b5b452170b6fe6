using System.Globalization;
using System.Text.Json;
using Microsoft.ML.Orpo.Chat;
using Microsoft.ML.Orpo.Templates;

namespace Microsoft.ML.Orpo.Tests.Chat;

/// <summary>Mutated real templates (TestData/chat-templates/differential.json, made by
/// eng/chat-template-fixtures/differential.py with jinja2 3.1.6 in transformers' configuration): the interpreter renders
/// the same string where jinja2 renders, and fails where jinja2 fails.</summary>
[TestClass]
public sealed class ChatTemplateDifferentialTests
{
    public TestContext TestContext { get; set; } = null!;

    [TestMethod]
    public void MutatedTemplatesRenderAsJinja2()
    {
        using var doc = JsonDocument.Parse(File.ReadAllBytes(Path.Combine(ChatTemplateFixtureTests.TemplatesDirectory, "differential.json")));
        var root = doc.RootElement;
        var date = DateTimeOffset.Parse(root.GetProperty("date").GetString()!, CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal);
        var variables = new Dictionary<string, object?>
        {
            ["messages"] = ChatTemplate.FromJson(root.GetProperty("conversation")),
            ["add_generation_prompt"] = true,
            ["tools"] = null,
            ["documents"] = null,
            ["bos_token"] = "<s>",
            ["eos_token"] = "</s>",
        };
        int same = 0;
        var differences = new List<string>();
        foreach (var c in root.GetProperty("cases").EnumerateArray())
        {
            string template = c.GetProperty("template").GetString()!;
            string wanted = c.TryGetProperty("expected", out var e) ? "output: " + e.GetString() : "error";
            string actual, ours = "";
            try { actual = "output: " + ChatTemplate.Parse(template).Render(variables, () => date); }
            catch (TemplateException ex) { actual = "error"; ours = ex.Message; }
            if (wanted == actual) same++;
            else differences.Add($"jinja2 {c.GetProperty(wanted == "error" ? "error" : "expected")}\nours   {JsonSerializer.Serialize(actual)} {ours}\ntemplate {JsonSerializer.Serialize(template)}");
        }
        TestContext.WriteLine($"{same} of {same + differences.Count} mutated templates agree with {root.GetProperty("generator").GetString()}");
        Assert.AreEqual(0, differences.Count, string.Join("\n\n", differences.Take(6)));
    }
}
