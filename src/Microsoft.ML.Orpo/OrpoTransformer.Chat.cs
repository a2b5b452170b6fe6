using Microsoft.Extensions.AI;
using Microsoft.ML.Orpo.Chat;
using Microsoft.ML.Orpo.Tokenization;

namespace Microsoft.ML.Orpo;

public sealed partial class OrpoTransformer
{
    /// <summary>
    /// Renders a conversation with the model's chat template (<c>chat_template</c> of its <c>tokenizer_config.json</c>)
    /// exactly as transformers' <c>apply_chat_template(messages, tokenize=False, add_generation_prompt=...)</c> does,
    /// with the file's <c>bos_token</c>, <c>eos_token</c> and <c>pad_token</c>, <c>strftime_now</c> on the local clock
    /// and no tools or documents. Messages carry text only: each becomes <c>{"role", "content"}</c>.
    /// </summary>
    /// <param name="messages">The conversation.</param>
    /// <param name="addGenerationPrompt">Whether to end with the prompt that opens the assistant's reply.</param>
    /// <returns>The prompt text, special tokens written out as text.</returns>
    /// <exception cref="InvalidOperationException">The model has no chat template (or several and none named "default").</exception>
    /// <exception cref="NotSupportedException">A message holds content other than text (images, function calls, ...).</exception>
    /// <exception cref="TemplateException">The template rejected the conversation (<see cref="TemplateException.RaisedByTemplate"/>,
    /// with the template's own message), is malformed, uses an unsupported construct or exceeded a render limit.</exception>
    public string ApplyChatTemplate(IEnumerable<ChatMessage> messages, bool addGenerationPrompt = true)
    {
        ArgumentNullException.ThrowIfNull(messages);
        var conversation = new List<object?>();
        foreach (var message in messages)
        {
            if (message is null) throw new ArgumentException("A message is null.", nameof(messages));
            var other = message.Contents.FirstOrDefault(c => c is not TextContent);
            if (other is not null)
                throw new NotSupportedException($"Message {conversation.Count} holds {other.GetType().Name}; chat templates are rendered for text messages only.");
            var item = new Dict { ["role"] = message.Role.Value, ["content"] = message.Text };
            conversation.Add(item);
        }

        var config = ReadTokenizerConfig();
        if (!config.ChatTemplates.TryGetValue("default", out string? source))
            throw new InvalidOperationException(config.ChatTemplates.Count == 0
                ? "This model has no chat template: its tokenizer_config.json has no 'chat_template' (or there is no tokenizer_config.json). Use a PromptTemplate, or a model that ships a chat template."
                : $"This model has several chat templates ({string.Join(", ", config.ChatTemplates.Keys)}) and none named 'default'.");

        var variables = new Dictionary<string, object?>(StringComparer.Ordinal)
        {
            ["messages"] = conversation,
            ["add_generation_prompt"] = addGenerationPrompt,
            ["tools"] = null,
            ["documents"] = null,
        };
        foreach (var (name, value) in new[] { ("bos_token", config.BosToken), ("eos_token", config.EosToken), ("pad_token", config.PadToken) })
            if (value is not null) variables[name] = value;
        return ChatTemplate.Parse(source).Render(variables);
    }

    private TokenizerConfigJson ReadTokenizerConfig()
    {
        using var lease = Acquire();
        return model.Tokenizer.Files.TryGetValue(TokenizerFiles.TokenizerConfig, out byte[]? bytes)
            ? TokenizerConfigJson.Parse(bytes, TokenizerFiles.TokenizerConfig)
            : TokenizerConfigJson.Empty;
    }
}
