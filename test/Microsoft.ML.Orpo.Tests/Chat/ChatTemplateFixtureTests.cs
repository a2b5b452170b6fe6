using System.Globalization;
using System.Text.Json;
using Microsoft.ML.Orpo.Chat;
using Microsoft.ML.Orpo.Tests.Infrastructure;
using Microsoft.ML.Orpo.Templates;

namespace Microsoft.ML.Orpo.Tests.Chat;

/// <summary>Every real template x conversation x add_generation_prompt renders byte-identically to @huggingface/jinja
/// (TestData/chat-templates/fixtures.json, made by eng/chat-template-fixtures; jinja2 agrees on all of them).</summary>
[TestClass]
public sealed class ChatTemplateFixtureTests
{
    public TestContext TestContext { get; set; } = null!;

    internal static string TemplatesDirectory => Path.Combine(TestAssets.RepoRoot, "test", "Microsoft.ML.Orpo.Tests", "TestData", "chat-templates");

    internal static IEnumerable<string> TemplateFiles() => Directory.GetFiles(TemplatesDirectory, "*.jinja").Order(StringComparer.Ordinal);

    [TestMethod]
    public void EveryTemplateRendersEveryConversationAsHuggingFaceJinja()
    {
        using var doc = JsonDocument.Parse(File.ReadAllBytes(Path.Combine(TemplatesDirectory, "fixtures.json")));
        var root = doc.RootElement;
        var date = DateTimeOffset.Parse(root.GetProperty("date").GetString()!, CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal);
        var conversations = root.GetProperty("conversations");
        var templates = new Dictionary<string, ChatTemplate>();
        var identical = new SortedDictionary<string, int>(StringComparer.Ordinal);
        var differences = new List<string>();
        foreach (var c in root.GetProperty("cases").EnumerateArray())
        {
            string name = c.GetProperty("template").GetString()!;
            if (!templates.TryGetValue(name, out var template))
            {
                templates[name] = template = ChatTemplate.Parse(File.ReadAllText(Path.Combine(TemplatesDirectory, name + ".jinja")));
                identical[name] = 0;
            }
            var variables = new Dictionary<string, object?>
            {
                ["messages"] = ChatTemplate.FromJson(conversations.GetProperty(c.GetProperty("conversation").GetString()!)),
                ["add_generation_prompt"] = c.GetProperty("add_generation_prompt").GetBoolean(),
                ["tools"] = null,
                ["documents"] = null,
            };
            foreach (var token in new[] { "bos_token", "eos_token" })
                if (c.TryGetProperty(token, out var value)) variables[token] = value.GetString();

            string wanted, actual;
            if (c.TryGetProperty("expected", out var expected))
            {
                wanted = "output: " + expected.GetString();
                try { actual = "output: " + template.Render(variables, () => date); }
                catch (TemplateException e) { actual = "error: " + e.Message; }
            }
            else
            {
                wanted = "error: " + c.GetProperty("error").GetString();
                try { actual = "output: " + template.Render(variables, () => date); }
                catch (TemplateException e) when (e.RaisedByTemplate) { actual = "error: " + e.Message; }
            }
            if (wanted == actual) identical[name]++;
            else differences.Add($"{name} / {c.GetProperty("conversation").GetString()} / add_generation_prompt={c.GetProperty("add_generation_prompt").GetBoolean()}:\n  expected {JsonSerializer.Serialize(wanted)}\n  actual   {JsonSerializer.Serialize(actual)}");
        }

        foreach (var (name, count) in identical) TestContext.WriteLine($"{name}: {count} renderings identical to {root.GetProperty("generator").GetString()}");
        Assert.AreEqual(TemplateFiles().Count(), identical.Count, "every template in TestData has fixtures");
        Assert.IsTrue(identical.Values.All(n => n >= 12), "at least 6 conversations x add_generation_prompt on/off per template");
        Assert.AreEqual(0, differences.Count, string.Join("\n", differences));
    }
}
