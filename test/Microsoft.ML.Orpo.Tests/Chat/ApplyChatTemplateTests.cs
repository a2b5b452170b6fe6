using System.Text.Json;
using Microsoft.Extensions.AI;
using Microsoft.ML.Orpo.Chat;
using Microsoft.ML.Orpo.Tests.Infrastructure;
using Microsoft.ML.Orpo.Templates;

namespace Microsoft.ML.Orpo.Tests.Chat;

[TestClass]
public sealed class ApplyChatTemplateTests
{
    private static readonly MLContext Ml = new(seed: 1);

    /// <summary>stories260K's HF folder with a tokenizer_config.json carrying a real template (or none).</summary>
    private static string ModelWithTemplate(string? templateName)
    {
        string dir = TestAssets.NewTempDirectory("orpo-chat");
        foreach (var file in Directory.GetFiles(TestAssets.Stories260KHf)) File.Copy(file, Path.Combine(dir, Path.GetFileName(file)));
        if (templateName is not null)
        {
            var config = new Dictionary<string, object?>
            {
                ["bos_token"] = "<s>",
                ["eos_token"] = "</s>",
                ["chat_template"] = File.ReadAllText(Path.Combine(ChatTemplateFixtureTests.TemplatesDirectory, templateName + ".jinja")),
            };
            File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), JsonSerializer.Serialize(config));
        }
        return dir;
    }

    private static string Expected(string template, string conversation, bool addGenerationPrompt)
    {
        using var doc = JsonDocument.Parse(File.ReadAllBytes(Path.Combine(ChatTemplateFixtureTests.TemplatesDirectory, "fixtures.json")));
        var match = doc.RootElement.GetProperty("cases").EnumerateArray().Single(c =>
            c.GetProperty("template").GetString() == template && c.GetProperty("conversation").GetString() == conversation
            && c.GetProperty("add_generation_prompt").GetBoolean() == addGenerationPrompt);
        return match.TryGetProperty("expected", out var e) ? e.GetString()! : "error: " + match.GetProperty("error").GetString();
    }

    private static ChatMessage[] Messages(string conversation)
    {
        using var doc = JsonDocument.Parse(File.ReadAllBytes(Path.Combine(ChatTemplateFixtureTests.TemplatesDirectory, "fixtures.json")));
        return doc.RootElement.GetProperty("conversations").GetProperty(conversation).EnumerateArray()
            .Select(m => new ChatMessage(new ChatRole(m.GetProperty("role").GetString()!), m.GetProperty("content").GetString())).ToArray();
    }

    [TestMethod]
    [DataRow("system-multi-turn", true)]
    [DataRow("unicode-newlines", false)]
    [DataRow("unicode-newlines", true)]
    public void RendersTheModelsTemplateAsTransformersDoes(string conversation, bool addGenerationPrompt)
    {
        const string Template = "mistralai-Mistral-Nemo-Instruct-2407";
        using var model = OrpoTransformer.FromPretrained(Ml, ModelWithTemplate(Template));
        Assert.AreEqual(Expected(Template, conversation, addGenerationPrompt), model.ApplyChatTemplate(Messages(conversation), addGenerationPrompt));
    }

    [TestMethod]
    public void AddGenerationPromptDefaultsToTrue()
    {
        using var model = OrpoTransformer.FromPretrained(Ml, ModelWithTemplate("Qwen-Qwen2.5-7B-Instruct"));
        string rendered = model.ApplyChatTemplate([new ChatMessage(ChatRole.User, "Hi")]);
        StringAssert.EndsWith(rendered, "<|im_start|>assistant\n");
    }

    [TestMethod]
    public void ATemplatesRejectionIsItsOwnMessage()
    {
        using var model = OrpoTransformer.FromPretrained(Ml, ModelWithTemplate("mistralai-Mistral-Nemo-Instruct-2407"));
        var e = Assert.ThrowsExactly<TemplateException>(() => model.ApplyChatTemplate(Messages("consecutive-users")));
        Assert.IsTrue(e.RaisedByTemplate);
        Assert.AreEqual(Expected("mistralai-Mistral-Nemo-Instruct-2407", "consecutive-users", true), "error: " + e.Message);
    }

    [TestMethod]
    public void AModelWithoutAChatTemplateSaysSo()
    {
        using var model = OrpoTransformer.FromPretrained(Ml, ModelWithTemplate(null));
        var e = Assert.ThrowsExactly<InvalidOperationException>(() => model.ApplyChatTemplate([new ChatMessage(ChatRole.User, "Hi")]));
        StringAssert.Contains(e.Message, "no chat template");
    }

    [TestMethod]
    public void NonTextContentIsRefused()
    {
        using var model = OrpoTransformer.FromPretrained(Ml, ModelWithTemplate("Qwen-Qwen2.5-7B-Instruct"));
        var call = new ChatMessage(ChatRole.Assistant, [new FunctionCallContent("c1", "lookup")]);
        var e = Assert.ThrowsExactly<NotSupportedException>(() => model.ApplyChatTemplate([new ChatMessage(ChatRole.User, "Hi"), call]));
        StringAssert.Contains(e.Message, "FunctionCallContent");
    }
}
