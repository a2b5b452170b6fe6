using System.Runtime.CompilerServices;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.Extensions.AI;
using Microsoft.ML.Orpo.Chat;
using Microsoft.ML.Orpo.Modeling;
using Microsoft.ML.Orpo.Tokenization;
using Microsoft.ML.Orpo.ModelFiles;
using Microsoft.ML.Orpo.Preferences;
using Microsoft.ML.Orpo.Templates;

namespace Microsoft.ML.Orpo;

public sealed partial class OrpoTransformer
{
    /// <summary>
    /// Renders a conversation with the transformer's chat template (<see cref="ChatTemplate"/>, the one training used,
    /// or else the model's own <c>chat_template</c> of its <c>tokenizer_config.json</c>) exactly as transformers'
    /// <c>apply_chat_template(messages, tokenize=False, add_generation_prompt=...)</c> does, with the file's
    /// <c>bos_token</c>, <c>eos_token</c> and <c>pad_token</c>, <c>strftime_now</c> on the local clock and no tools or
    /// documents. Messages carry text only: each becomes <c>{"role", "content"}</c>.
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
        var conversation = new List<Chat.ChatTurn>();
        foreach (var message in messages)
        {
            if (message is null) throw new ArgumentException("A message is null.", nameof(messages));
            var other = message.Contents.FirstOrDefault(c => c is not TextContent);
            if (other is not null)
                throw new NotSupportedException($"Message {conversation.Count} holds {other.GetType().Name}; chat templates are rendered for text messages only.");
            conversation.Add(new Chat.ChatTurn(message.Role.Value, message.Text));
        }
        using var lease = Acquire();
        var format = ChatFormatOf(model) ?? ModelChatFormat(model) ?? throw new InvalidOperationException(ModelTemplates(model).Count == 0
            ? "This model has no chat template: its tokenizer_config.json has no 'chat_template' (or there is no tokenizer_config.json). Use a PromptTemplate, or a model that ships a chat template."
            : $"This model has several chat templates ({string.Join(", ", ModelTemplates(model).Keys)}) and none named 'default'.");
        return format.Render(conversation, addGenerationPrompt);
    }

    private StrongBox<ChatFormat?>? modelChatFormat;

    /// <summary>The model's own default chat template, or null; read and parsed once (every chat request renders with it).</summary>
    private ChatFormat? ModelChatFormat(CausalLanguageModel m) =>
        (modelChatFormat ??= new(ModelTemplates(m).TryGetValue("default", out string? source) ? ChatFormat.Create(source, m.Tokenizer) : null)).Value;

    private static IReadOnlyDictionary<string, string> ModelTemplates(CausalLanguageModel m) => ChatFormat.TokenizerConfig(m.Tokenizer).ChatTemplates;

    /// <summary>The tokenizer files, with <see cref="ChatTemplate"/> as the <c>chat_template</c> of <c>tokenizer_config.json</c>.</summary>
    private IReadOnlyDictionary<string, byte[]> ExportedTokenizerFiles(CausalLanguageModel m)
    {
        if (settings.ChatTemplate is null) return m.Tokenizer.Files;
        var files = new Dictionary<string, byte[]>(m.Tokenizer.Files, StringComparer.Ordinal);
        var config = files.TryGetValue(TokenizerFiles.TokenizerConfig, out byte[]? bytes)
            ? JsonNode.Parse(bytes) as JsonObject ?? new JsonObject()
            : new JsonObject();
        config["chat_template"] = settings.ChatTemplate;
        files[TokenizerFiles.TokenizerConfig] = Encoding.UTF8.GetBytes(config.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        return files;
    }
}
