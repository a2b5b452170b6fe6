using Microsoft.Extensions.AI;
using Microsoft.ML.Orpo.Tests.Infrastructure;
using Microsoft.ML.Orpo.Tests.MlNet;

namespace Microsoft.ML.Orpo.Tests.Chat;

/// <summary>The transformer behind Microsoft.Extensions.AI's IChatClient, against its own Generate.</summary>
[TestClass]
public sealed class OrpoChatClientTests
{
    private const string Prompt = "Once upon a time, there was a little girl named";
    private static OrpoTransformer? shared;

    private static OrpoTransformer Model => shared ??= OrpoTransformer.FromPretrained(new MLContext(seed: 1), TestAssets.Stories260KHf);

    [ClassCleanup]
    public static void Cleanup() => shared?.Dispose();

    private static ChatMessage[] User(string text) => [new ChatMessage(ChatRole.User, text)];

    [TestMethod]
    public async Task AResponseEqualsGenerateWithTheSameOptions()
    {
        using var client = Model.AsIChatClient();
        foreach (var (options, generation) in new[]
        {
            (new ChatOptions { Temperature = 0, MaxOutputTokens = 40 }, new GenerationOptions { MaxNewTokens = 40 }),
            (new ChatOptions { Temperature = 0.9f, TopK = 20, TopP = 0.95f, Seed = 7, MaxOutputTokens = 40 },
                new GenerationOptions { Temperature = 0.9f, TopK = 20, TopP = 0.95f, Seed = 7, MaxNewTokens = 40 }),
            (new ChatOptions { Temperature = 0, MaxOutputTokens = 60, StopSequences = ["."] },
                new GenerationOptions { MaxNewTokens = 60, StopSequences = ["."] }),
        })
        {
            var response = await client.GetResponseAsync(User(Prompt), options);
            string expected = Model.Generate(Prompt, generation);
            Assert.AreEqual(expected, response.Text);
            Assert.AreEqual(ChatRole.Assistant, response.Messages.Single().Role);
            Assert.AreEqual(Model.Encode(Prompt, "x", "y").PromptIds.Count, response.Usage!.InputTokenCount);
            Assert.AreEqual(response.Usage.InputTokenCount + response.Usage.OutputTokenCount, response.Usage.TotalTokenCount);
        }
    }

    [TestMethod]
    public async Task FinishReasonIsLengthAtTheTokenLimitAndStopOtherwise()
    {
        using var client = Model.AsIChatClient();
        var limited = await client.GetResponseAsync(User(Prompt), new ChatOptions { Temperature = 0, MaxOutputTokens = 5 });
        Assert.AreEqual(ChatFinishReason.Length, limited.FinishReason);
        Assert.AreEqual(5, limited.Usage!.OutputTokenCount);

        var stopped = await client.GetResponseAsync(User(Prompt), new ChatOptions { Temperature = 0, MaxOutputTokens = 60, StopSequences = ["."] });
        Assert.AreEqual(ChatFinishReason.Stop, stopped.FinishReason, stopped.Text);
        Assert.IsLessThan(60L, stopped.Usage!.OutputTokenCount!.Value);
        Assert.IsFalse(stopped.Text.Contains('.'), stopped.Text);
    }

    [TestMethod]
    public async Task StreamingConcatenatesToTheSameTextWithUsageAndFinishReasonLast()
    {
        using var client = Model.AsIChatClient();
        foreach (var options in new[]
        {
            new ChatOptions { Temperature = 0, MaxOutputTokens = 48 },
            // Greedy: "Lily. She loved to play outside in the park. One day, ..." - the text that could start "park." is held back.
            new ChatOptions { Temperature = 0, MaxOutputTokens = 80, StopSequences = ["park.", "ball"] },
            new ChatOptions { Temperature = 1.0f, Seed = 3, MaxOutputTokens = 48 },
        })
        {
            var response = await client.GetResponseAsync(User(Prompt), options);
            var updates = new List<ChatResponseUpdate>();
            await foreach (var update in client.GetStreamingResponseAsync(User(Prompt), options)) updates.Add(update);
            Assert.IsGreaterThan(3, updates.Count(u => u.Text.Length > 0), "the text arrives in pieces");
            Assert.AreEqual(response.Text, string.Concat(updates.Select(u => u.Text)));
            Assert.AreEqual(response.FinishReason, updates[^1].FinishReason);
            var merged = updates.ToChatResponse();
            Assert.AreEqual(response.Text, merged.Text);
            Assert.AreEqual(response.Usage!.OutputTokenCount, merged.Usage!.OutputTokenCount);
            Assert.AreEqual(response.Usage.InputTokenCount, merged.Usage.InputTokenCount);
            Assert.IsTrue(updates.All(u => u.ResponseId == updates[0].ResponseId && u.Role == ChatRole.Assistant));
        }
    }

    [TestMethod]
    public async Task CancellationStopsAStreamMidwayAndTheModelStaysUsable()
    {
        using var client = Model.AsIChatClient();
        using var cancel = new CancellationTokenSource();
        int received = 0;
        await Assert.ThrowsAsync<OperationCanceledException>(async () =>
        {
            await foreach (var update in client.GetStreamingResponseAsync(User(Prompt), new ChatOptions { Temperature = 0, MaxOutputTokens = 200 }, cancel.Token))
                if (++received == 2) cancel.Cancel();
        });
        Assert.AreEqual(2, received, "no update after the cancellation");
        await Assert.ThrowsAsync<OperationCanceledException>(() =>
            client.GetResponseAsync(User(Prompt), new ChatOptions { MaxOutputTokens = 10 }, new CancellationToken(canceled: true)));

        // A consumer that just stops reading ends the generation too, and the model serves the next request.
        await foreach (var _ in client.GetStreamingResponseAsync(User(Prompt), new ChatOptions { Temperature = 0, MaxOutputTokens = 200 })) break;
        Assert.AreEqual(Model.Generate(Prompt, new GenerationOptions { MaxNewTokens = 12 }),
            (await client.GetResponseAsync(User(Prompt), new ChatOptions { Temperature = 0, MaxOutputTokens = 12 })).Text);
    }

    [TestMethod]
    public async Task ConcurrentRequestsGetTheSameAnswersAsAlone()
    {
        using var client = Model.AsIChatClient();
        string[] prompts = [Prompt, "The cat", "One day, a little boy named", "Tom and Sue"];
        var options = new ChatOptions { Temperature = 0, MaxOutputTokens = 24 };
        var responses = await Task.WhenAll(Enumerable.Range(0, 8).Select(i => client.GetResponseAsync(User(prompts[i % 4]), options)));
        for (int i = 0; i < responses.Length; i++)
            Assert.AreEqual(Model.Generate(prompts[i % 4], new GenerationOptions { MaxNewTokens = 24 }), responses[i].Text);
    }

    [TestMethod]
    public async Task WhatCannotBeHonouredIsRefusedByName()
    {
        using var client = Model.AsIChatClient();
        async Task Refused(ChatOptions? options, string name, IEnumerable<ChatMessage>? messages = null)
        {
            var ex = await Assert.ThrowsAsync<NotSupportedException>(() => client.GetResponseAsync(messages ?? User(Prompt), options));
            StringAssert.Contains(ex.Message, name);
        }
        await Refused(new ChatOptions { Tools = [AIFunctionFactory.Create(() => 42, "answer")] }, "Tools");
        await Refused(new ChatOptions { ResponseFormat = ChatResponseFormat.Json }, "ResponseFormat");
        await Refused(new ChatOptions { FrequencyPenalty = 0.5f }, "FrequencyPenalty");
        await Refused(new ChatOptions { PresencePenalty = 0.5f }, "PresencePenalty");
        await Refused(new ChatOptions { ConversationId = "c1" }, "ConversationId");
        await Refused(new ChatOptions { AdditionalProperties = new() { ["mirostat"] = 2 } }, "mirostat");
        await Refused(new ChatOptions { ModelId = "gpt-4o" }, "gpt-4o");
        await Refused(new ChatOptions { Seed = long.MaxValue }, "Seed");
        await Refused(null, "tool", [new ChatMessage(ChatRole.Tool, "42")]);
        await Refused(null, "DataContent", [new ChatMessage(ChatRole.User, [new DataContent(new byte[] { 1, 2 }, "image/png")])]);
        await Assert.ThrowsAsync<ArgumentException>(() => client.GetResponseAsync([new ChatMessage(ChatRole.User, Prompt), new ChatMessage(ChatRole.Assistant, " Sue.")]));
        await Assert.ThrowsAsync<ArgumentException>(() => client.GetResponseAsync([]));
        await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => client.GetResponseAsync(User(Prompt), new ChatOptions { MaxOutputTokens = -1 }));

        // What it can honour: ChatResponseFormat.Text, and Instructions as a leading system turn.
        var text = await client.GetResponseAsync(User(Prompt), new ChatOptions { ResponseFormat = ChatResponseFormat.Text, Temperature = 0, MaxOutputTokens = 8 });
        Assert.AreEqual(Model.Generate(Prompt, new GenerationOptions { MaxNewTokens = 8 }), text.Text);
        var instructed = await client.GetResponseAsync(User(Prompt), new ChatOptions { Instructions = "The cat", Temperature = 0, MaxOutputTokens = 8 });
        Assert.AreEqual(Model.Generate("The cat\n" + Prompt, new GenerationOptions { MaxNewTokens = 8 }), instructed.Text);
    }

    [TestMethod]
    public async Task AModelWithAChatTemplateIsAskedThroughIt()
    {
        string dir = TestAssets.NewTempDirectory("orpo-chat-client");
        foreach (var file in Directory.GetFiles(TestAssets.Stories260KHf)) File.Copy(file, Path.Combine(dir, Path.GetFileName(file)));
        File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), System.Text.Json.JsonSerializer.Serialize(new Dictionary<string, string>
        {
            ["bos_token"] = "<s>",
            ["chat_template"] = "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'system' %}{{ m['content'] }}\n{% else %}{{ m['role'] }}: {{ m['content'] }}\n{% endif %}{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}",
        }));
        using var model = OrpoTransformer.FromPretrained(new MLContext(seed: 1), dir);
        using var client = model.AsIChatClient();
        ChatMessage[] conversation = [new(ChatRole.System, "A story."), new(ChatRole.User, "Once upon a time"), new(ChatRole.Assistant, " there was a cat."), new(ChatRole.User, "The cat")];
        string rendered = model.ApplyChatTemplate(conversation);
        Assert.AreEqual("<s>A story.\nuser: Once upon a time\nassistant:  there was a cat.\nuser: The cat\nassistant:", rendered);
        var response = await client.GetResponseAsync(conversation, new ChatOptions { Temperature = 0, MaxOutputTokens = 20 });
        Assert.AreEqual(model.Generate(rendered, new GenerationOptions { MaxNewTokens = 20 }), response.Text, "the rendering, with its one BOS");
        Assert.AreEqual(model.Encode(rendered, "x", "y").PromptIds.Count, response.Usage!.InputTokenCount, "no second BOS before the rendered <s>");
        var streamed = new System.Text.StringBuilder();
        await foreach (var update in client.GetStreamingResponseAsync(conversation, new ChatOptions { Temperature = 0, MaxOutputTokens = 20 })) streamed.Append(update.Text);
        Assert.AreEqual(response.Text, streamed.ToString());
    }

    [TestMethod]
    public void GetServiceDescribesTheClient()
    {
        using var client = Model.AsIChatClient();
        var metadata = client.GetService<ChatClientMetadata>();
        Assert.IsNotNull(metadata);
        Assert.AreEqual("Microsoft.ML.Orpo", metadata.ProviderName);
        Assert.IsFalse(string.IsNullOrEmpty(metadata.DefaultModelId));
        Assert.AreSame(Model, client.GetService<OrpoTransformer>());
        Assert.AreSame(client, client.GetService<IChatClient>());
        Assert.IsNull(client.GetService<ChatClientMetadata>("some key"));
        Assert.IsNull(client.GetService<string>());
    }

    [TestMethod]
    public void AChatSessionRunsInAFreshProcessFromAModelZip()
    {
        var ml = new MLContext(seed: 1);
        string path = Path.Combine(TestAssets.NewTempDirectory("orpo-chat-zip"), "orpo.zip");
        using (var model = OrpoTransformer.FromPretrained(ml, TestAssets.Stories260KHf))
            ml.Model.Save(model, ml.Data.LoadFromEnumerable(new[] { new { Prompt = "" } }).Schema, path);
        string[] prompts = [Prompt, "The cat"];
        var (code, stdout, stderr) = ModelZipFreshProcessTests.RunFresh(path, "chat", "Prompt", "Response", prompts);
        Assert.AreEqual(0, code, stderr);
        var lines = stdout.Split('\n').Select(l => l.TrimEnd('\r')).ToArray();
        Assert.AreEqual(nameof(OrpoTransformer), lines[0]);
        for (int i = 0; i < prompts.Length; i++)
        {
            string expected = Model.Generate(prompts[i], new GenerationOptions { MaxNewTokens = 24 }).Replace("\\", "\\\\").Replace("\n", "\\n").Replace("|", "\\|");
            Assert.AreEqual($"{expected}|{expected}", lines[1 + i], "the fresh process's response and stream");
        }
    }
}
