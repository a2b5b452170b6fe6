using System.Text.Json;
using Microsoft.ML.Orpo.Chat;
using Message = Microsoft.ML.Orpo.Chat.ChatTurn;
using Microsoft.ML.Orpo.Tests.Infrastructure;
using Microsoft.ML.Orpo.Tokenization;
using Microsoft.ML.Orpo.Training;
using Microsoft.ML.Orpo.Preferences;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Tests.Chat;

/// <summary>Conversational preference rows rendered with OrpoOptions.ChatTemplate, and the end-of-turn token.</summary>
[TestClass]
public sealed class ChatPreferenceDataTests
{
    /// <summary>A plain-text template: stories260K's tokenizer has no chat tokens, so EOS ends a turn.</summary>
    internal const string PlainTemplate =
        "{% for m in messages %}{% if m['role'] == 'user' %}User: {{ m['content'] }}\n{% elif m['role'] == 'system' %}{{ m['content'] }}\n" +
        "{% else %}Assistant: {{ m['content'] }}\n{% endif %}{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}";

    private static readonly MLContext Ml = new(seed: 1);

    private static string Json(params (string Role, string Content)[] messages) =>
        JsonSerializer.Serialize(messages.Select(m => new Dictionary<string, string> { ["role"] = m.Role, ["content"] = m.Content }));

    private static (OrpoTokenizer Tokenizer, PairEncoder Encoder) Qwen()
    {
        var tokenizer = OrpoTokenizer.Load(Path.Combine(TestAssets.RepoRoot, "test", "Microsoft.ML.Orpo.Tests", "TestData", "tokenizers", "qwen3"));
        string template = File.ReadAllText(Path.Combine(ChatTemplateFixtureTests.TemplatesDirectory, "Qwen-Qwen2.5-7B-Instruct.jinja"));
        return (tokenizer, new PairEncoder(tokenizer, null, 512, 256, chat: ChatFormat.Create(template, tokenizer)));
    }

    private static OrpoOptions Options(string? chatTemplate = PlainTemplate) => new()
    {
        BaseModelPath = TestAssets.Stories260KHf, ChatTemplate = chatTemplate, Epochs = 1, BatchSize = 2, LearningRate = 1e-3, Seed = 1,
    };

    [TestMethod]
    public void TheTemplatesEndOfTurnTokenIsAScoredTokenOfTheNllAndTheOdds()
    {
        var (tokenizer, encoder) = Qwen();
        int imEnd = tokenizer.Encode("<|im_end|>").Single();
        Assert.AreEqual("<|im_end|>", encoder.Chat!.EndOfTurnText);
        Assert.AreEqual(imEnd, encoder.Chat.EndOfTurnId);

        var pair = encoder.Encode(Json(("user", "Tell a story.")), "Once upon a time.", "No.", out var outcome)!;
        Assert.AreEqual(PairOutcome.Kept, outcome);
        Assert.Contains(imEnd, pair.ChosenIds);
        Assert.Contains(imEnd, pair.RejectedIds);
        Assert.DoesNotContain(imEnd, pair.PromptIds.Skip(pair.PromptIds.Count - 3).ToList(), "the prompt ends with the generation prompt, not a turn end");

        using var batch = PreferenceBatch.Create([pair], includePromptInNll: false, CPU);
        var targets = batch.Targets.data<long>().ToArray();
        var response = batch.ResponseMask.data<float>().ToArray();
        var nll = batch.NllMask.data<float>().ToArray();
        int width = (int)batch.Targets.shape[1];
        for (int row = 0; row < 2; row++)
        {
            var responseIds = row == 0 ? pair.ChosenIds : pair.RejectedIds;
            int at = pair.PromptIds.Count + responseIds.ToList().IndexOf(imEnd) - 1; // the position that predicts it
            Assert.AreEqual(imEnd, targets[row * width + at]);
            Assert.AreEqual(1f, response[row * width + at], $"row {row}: the end-of-turn token is scored in the odds");
            if (row == 0) Assert.AreEqual(1f, nll[at], "the end-of-turn token is scored in the NLL");
        }
    }

    [TestMethod]
    public void TheResponseIsTheFullRenderingLessThePromptsRendering()
    {
        var (tokenizer, encoder) = Qwen();
        var context = new[] { new Message("system", "Be brief."), new Message("user", "Hi") };
        string prompt = encoder.Chat!.Render(context, addGenerationPrompt: true);
        string full = encoder.Chat.Render(context.Append(new Message("assistant", "Hello!")), addGenerationPrompt: false);
        StringAssert.EndsWith(prompt, "<|im_start|>assistant\n");

        var pair = encoder.Encode(Json(("system", "Be brief."), ("user", "Hi")), Json(("assistant", "Hello!")), "Go away.", out _)!;
        CollectionAssert.AreEqual(tokenizer.Encode(prompt).ToList(), pair.PromptIds.ToList());
        CollectionAssert.AreEqual(tokenizer.Encode(full[prompt.Length..]).ToList(), pair.ChosenIds.ToList());
        Assert.AreEqual("Hello!<|im_end|>\n", full[prompt.Length..]);
    }

    [TestMethod]
    public void TheImplicitPromptFormEqualsTheExplicitOne()
    {
        var (_, encoder) = Qwen();
        var explicitPair = encoder.Encode(Json(("user", "Hi")), Json(("assistant", "Hello!")), Json(("assistant", "Bye.")), out _)!;
        var implicitPair = encoder.Encode("", Json(("user", "Hi"), ("assistant", "Hello!")), Json(("user", "Hi"), ("assistant", "Bye.")), out _)!;
        var plainPair = encoder.Encode("Hi", "Hello!", "Bye.", out _)!;
        foreach (var other in new[] { implicitPair, plainPair })
        {
            CollectionAssert.AreEqual(explicitPair.PromptIds.ToList(), other.PromptIds.ToList());
            CollectionAssert.AreEqual(explicitPair.ChosenIds.ToList(), other.ChosenIds.ToList());
            CollectionAssert.AreEqual(explicitPair.RejectedIds.ToList(), other.RejectedIds.ToList());
        }
    }

    [TestMethod]
    public void APlainTextTemplateEndsTurnsWithEos()
    {
        using var model = OrpoTransformer.FromPretrained(Ml, Options());
        var tokenizer = model.Model.Tokenizer;
        var pair = model.Encode("Once upon a time", " Sue.", " Lily.");
        Assert.AreEqual(tokenizer.EosId, pair.ChosenIds[^1]);
        Assert.AreEqual(tokenizer.EosId, pair.RejectedIds[^1]);
        CollectionAssert.AreEqual(tokenizer.Encode(" Sue.\n").Append(tokenizer.EosId!.Value).ToList(), pair.ChosenIds.ToList());
        Assert.AreEqual(tokenizer.BosId, pair.PromptIds[0]);
        CollectionAssert.AreEqual(tokenizer.Encode("User: Once upon a time\nAssistant:").ToList(), pair.PromptIds.Skip(1).ToList());
        Assert.AreEqual(PlainTemplate, model.ChatTemplate);
    }

    [TestMethod]
    public void GenerateRendersThePromptAsOneUserMessage()
    {
        using var chat = OrpoTransformer.FromPretrained(Ml, Options());
        using var plain = OrpoTransformer.FromPretrained(Ml, Options(chatTemplate: null));
        var greedy = new GenerationOptions { MaxNewTokens = 12, Temperature = 0 };
        Assert.AreEqual(plain.Generate("User: Once upon a time\nAssistant:", greedy), chat.Generate("Once upon a time", greedy));
        Assert.AreEqual(chat.Generate("Once upon a time", greedy), chat.Generate(Json(("user", "Once upon a time")), greedy));
    }

    [TestMethod]
    public void BadConversationalRowsAreErrorsNamingTheRowAndTheProblem()
    {
        var rows = new[]
        {
            (Json(("user", "Hi")), Json(("assistant", "Hello")), Json(("assistant", "Bye")), ""),
            (Json(("robot", "Hi")), Json(("assistant", "Hello")), Json(("assistant", "Bye")), "unknown role \"robot\""),
            (Json(("user", "")), Json(("assistant", "Hello")), Json(("assistant", "Bye")), "the content is empty"),
            (Json(("user", "Hi")), Json(("user", "Hello")), Json(("assistant", "Bye")), "must be an \"assistant\" turn"),
            (Json(("user", "Hi")), Json(("assistant", "")), Json(("assistant", "Bye")), "the content is empty"),
            ("", Json(("user", "A"), ("assistant", "Hello")), Json(("user", "B"), ("assistant", "Bye")), "differ before their last message"),
            (Json(("user", "Hi")), "[]", Json(("assistant", "Bye")), "no response message"),
            (Json(("user", "Hi")), "[{\"role\": \"assistant\"}]", Json(("assistant", "Bye")), "needs a string \"content\""),
        };
        for (int i = 1; i < rows.Length; i++)
        {
            var data = Ml.Data.LoadFromEnumerable(new[] { rows[0], rows[i] }.Select(r => new PreferenceJsonlShapeRow { Prompt = r.Item1, Chosen = r.Item2, Rejected = r.Item3 }));
            var e = Assert.ThrowsExactly<ArgumentException>(() => Ml.Transforms.OrpoFineTune(Options()).Fit(data).Dispose(), $"case {i}");
            StringAssert.Contains(e.Message, "Row 1 of the training data", e.Message);
            StringAssert.Contains(e.Message, rows[i].Item4, e.Message);
        }
    }

    [TestMethod]
    public void ATemplateWhosePromptIsNotAPrefixIsAnErrorNamingTheRow()
    {
        const string Unstable = "{% for m in messages %}{{ m['content'] }}|{% endfor %}{% if add_generation_prompt %}<reply>{% endif %}";
        var data = Ml.Data.LoadFromEnumerable(new[] { new PreferenceJsonlShapeRow { Prompt = "Hi", Chosen = "Hello", Rejected = "Bye" } });
        var e = Assert.ThrowsExactly<ArgumentException>(() => Ml.Transforms.OrpoFineTune(Options(Unstable)).Fit(data).Dispose());
        StringAssert.Contains(e.Message, "Row 0 of the training data");
        StringAssert.Contains(e.Message, "is not a prefix");
    }

    [TestMethod]
    public void BadTemplateOptionsAreClearErrors()
    {
        var both = Options();
        both.PromptTemplate = "Q: {prompt}\nA:";
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(() => OrpoTransformer.FromPretrained(Ml, both)).Message, "both set");
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(() => OrpoTransformer.FromPretrained(Ml, Options(" "))).Message, "ChatTemplate is empty");
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(() => OrpoTransformer.FromPretrained(Ml, Options(OrpoOptions.ModelChatTemplate))).Message,
            "has no chat template");
        var syntax = Assert.ThrowsExactly<ArgumentException>(() => OrpoTransformer.FromPretrained(Ml, Options("{% for m in messages %}")));
        StringAssert.Contains(syntax.Message, "not a valid chat template");
        var prompt = Assert.ThrowsExactly<ArgumentException>(() => OrpoTransformer.FromPretrained(Ml, Options()).Generate(Json(("user", "Hi"), ("assistant", "Hello"))));
        StringAssert.Contains(prompt.Message, "ends with an assistant message");
    }

    [TestMethod]
    public void TheTemplateTravelsInTheZipAndTheHuggingFaceExport()
    {
        using var model = OrpoTransformer.FromPretrained(Ml, Options());
        var greedy = new GenerationOptions { MaxNewTokens = 8, Temperature = 0 };
        string dir = TestAssets.NewTempDirectory("orpo-chat-zip");
        string zip = Path.Combine(dir, "m.zip");
        var schema = Ml.Data.LoadFromEnumerable(new[] { new PreferenceJsonlShapeRow() }).Schema;
        Ml.Model.Save(model, schema, zip);
        using (var loaded = (OrpoTransformer)Ml.Model.Load(zip, out _))
        {
            Assert.AreEqual(PlainTemplate, loaded.ChatTemplate);
            Assert.AreEqual(model.Generate("Once upon a time", greedy), loaded.Generate("Once upon a time", greedy));
        }

        string hf = Path.Combine(dir, "hf");
        model.SaveHuggingFace(hf);
        using var config = JsonDocument.Parse(File.ReadAllBytes(Path.Combine(hf, "tokenizer_config.json")));
        Assert.AreEqual(PlainTemplate, config.RootElement.GetProperty("chat_template").GetString());
        var reloaded = Options(OrpoOptions.ModelChatTemplate);
        reloaded.BaseModelPath = hf;
        using var fromHf = OrpoTransformer.FromPretrained(Ml, reloaded);
        Assert.AreEqual(PlainTemplate, fromHf.ChatTemplate);
        CollectionAssert.AreEqual(model.Encode("Hi", "A", "B").ChosenIds.ToList(), fromHf.Encode("Hi", "A", "B").ChosenIds.ToList());
    }

    [TestMethod]
    public void JsonlConversationsKeepTheirMessagesWhenAsked()
    {
        string path = Tests.Preferences.PreferenceJsonlShapeTests.WriteFile(
            "{\"prompt\": [{\"role\": \"system\", \"content\": \"S\"}, {\"role\": \"user\", \"content\": \"U\"}]," +
            " \"chosen\": [{\"role\": \"assistant\", \"content\": \"good\"}], \"rejected\": [{\"role\": \"assistant\", \"content\": \"bad\"}]}\n" +
            "{\"prompt\": \"P\", \"chosen\": \"C\", \"rejected\": \"R\"}\n");
        var rows = Ml.Data.CreateEnumerable<PreferenceJsonlShapeRow>(Ml.Data.LoadPreferenceJsonl(path, keepMessages: true), reuseRowObject: false).ToList();
        Assert.AreEqual(Json(("system", "S"), ("user", "U")), rows[0].Prompt);
        Assert.AreEqual(Json(("assistant", "good")), rows[0].Chosen);
        Assert.AreEqual(Json(("assistant", "bad")), rows[0].Rejected);
        Assert.AreEqual(("P", "C", "R"), (rows[1].Prompt, rows[1].Chosen, rows[1].Rejected));

        string bad = Tests.Preferences.PreferenceJsonlShapeTests.WriteFile(
            "{\"prompt\": \"P\", \"chosen\": \"C\", \"rejected\": \"R\"}\n" +
            "{\"prompt\": [{\"role\": \"tool\", \"content\": \"U\"}], \"chosen\": [{\"role\": \"assistant\", \"content\": \"a\"}], \"rejected\": [{\"role\": \"assistant\", \"content\": \"b\"}]}\n");
        var e = Assert.ThrowsExactly<InvalidDataException>(() => Ml.Data.LoadPreferenceJsonl(bad, keepMessages: true));
        StringAssert.Contains(e.Message, "line 2");
        StringAssert.Contains(e.Message, "unknown role \"tool\"");
        Assert.AreEqual("U", Ml.Data.CreateEnumerable<PreferenceJsonlShapeRow>(Ml.Data.LoadPreferenceJsonl(bad), false).Last().Prompt, "without keepMessages the text is as before");
    }
}

/// <summary>A prompt/chosen/rejected text row.</summary>
internal sealed class PreferenceJsonlShapeRow
{
    public string Prompt { get; set; } = "";
    public string Chosen { get; set; } = "";
    public string Rejected { get; set; } = "";
}
