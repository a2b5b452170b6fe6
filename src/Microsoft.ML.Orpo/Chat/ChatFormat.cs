using Microsoft.ML.Orpo.Preferences;
using Microsoft.ML.Orpo.Tokenization;
using Microsoft.ML.Orpo.Templates;

namespace Microsoft.ML.Orpo.Chat;

/// <summary>
/// A chat template bound to a tokenizer: renders prompts (with the generation prompt) and responses (the rendering of
/// prompt + response with the prompt's rendering removed), and knows the token that ends an assistant turn.
/// </summary>
internal sealed class ChatFormat
{
    private const string Probe = "\u2063orpo-probe\u2063";
    private readonly ChatTemplate template;
    private readonly TokenizerConfigJson tokens;

    private ChatFormat(string source, TokenizerConfigJson tokens, OrpoTokenizer tokenizer)
    {
        Source = source;
        this.tokens = tokens;
        try
        {
            template = ChatTemplate.Parse(source);
        }
        catch (TemplateException e)
        {
            throw new ArgumentException($"OrpoOptions.ChatTemplate is not a valid chat template: {e.Message}", "ChatTemplate", e);
        }
        (EndOfTurnText, EndOfTurnId) = EndOfTurn(tokenizer);
    }

    /// <summary>The template's Jinja source.</summary>
    public string Source { get; }

    /// <summary>What the template writes after an assistant message's content (trimmed of whitespace); may be empty.</summary>
    public string EndOfTurnText { get; }

    /// <summary>
    /// The token a response ends with and generation stops at: <see cref="EndOfTurnText"/> when it is one special token
    /// (e.g. <c>&lt;|im_end|&gt;</c>, <c>&lt;|eot_id|&gt;</c>), else EOS; null when neither exists.
    /// </summary>
    public int? EndOfTurnId { get; }

    /// <summary>The model's own template (<paramref name="option"/> = <see cref="OrpoOptions.ModelChatTemplate"/>), a custom
    /// template, or null when <paramref name="option"/> is null.</summary>
    public static string? ResolveSource(string? option, OrpoTokenizer tokenizer)
    {
        if (option is null) return null;
        if (option != OrpoOptions.ModelChatTemplate) return option;
        var config = TokenizerConfig(tokenizer);
        if (config.ChatTemplates.TryGetValue("default", out string? source)) return source;
        throw new ArgumentException(config.ChatTemplates.Count == 0
            ? "OrpoOptions.ChatTemplate = \"model\", but the model has no chat template (its tokenizer_config.json has no 'chat_template', or there is none). Set a custom template string, or null for plain prompts."
            : $"OrpoOptions.ChatTemplate = \"model\", but the model has several chat templates ({string.Join(", ", config.ChatTemplates.Keys)}) and none named 'default'. Pass the one to use as a string.",
            "ChatTemplate");
    }

    public static ChatFormat Create(string source, OrpoTokenizer tokenizer) => new(source, TokenizerConfig(tokenizer), tokenizer);

    internal static TokenizerConfigJson TokenizerConfig(OrpoTokenizer tokenizer) =>
        tokenizer.Files.TryGetValue(TokenizerFiles.TokenizerConfig, out byte[]? bytes)
            ? TokenizerConfigJson.Parse(bytes, TokenizerFiles.TokenizerConfig)
            : TokenizerConfigJson.Empty;

    /// <summary>Renders messages as transformers' <c>apply_chat_template(..., tokenize=False)</c> does.</summary>
    public string Render(IEnumerable<ChatTurn> messages, bool addGenerationPrompt)
    {
        var conversation = messages.Select(m => (object?)new Dict { ["role"] = m.Role, ["content"] = m.Content }).ToList();
        var variables = new Dictionary<string, object?>(StringComparer.Ordinal)
        {
            ["messages"] = conversation,
            ["add_generation_prompt"] = addGenerationPrompt,
            ["tools"] = null,
            ["documents"] = null,
        };
        foreach (var (name, value) in new[] { ("bos_token", tokens.BosToken), ("eos_token", tokens.EosToken), ("pad_token", tokens.PadToken) })
            if (value is not null) variables[name] = value;
        return template.Render(variables);
    }

    /// <summary>
    /// The response text of one assistant turn after <paramref name="context"/>: the rendering of context + response
    /// without the generation prompt, less <paramref name="renderedPrompt"/> (the context rendered with it).
    /// </summary>
    /// <exception cref="FormatException">The prompt's rendering is not a prefix of the full rendering.</exception>
    public string ResponseText(IReadOnlyList<ChatTurn> context, string renderedPrompt, string response)
    {
        string full = Render(context.Append(new ChatTurn("assistant", response)), addGenerationPrompt: false);
        if (!full.StartsWith(renderedPrompt, StringComparison.Ordinal))
            throw new FormatException($"the chat template's rendering of the prompt with add_generation_prompt ({Excerpt(renderedPrompt)}) " +
                $"is not a prefix of its rendering of the prompt and the response ({Excerpt(full)}), so the response's tokens cannot be separated from the prompt's.");
        return full[renderedPrompt.Length..];
    }

    private static string Excerpt(string text) =>
        "\"" + (text.Length <= 120 ? text : "..." + text[^120..]).ReplaceLineEndings("\\n") + "\"";

    private (string Text, int? Id) EndOfTurn(OrpoTokenizer tokenizer)
    {
        string text;
        try
        {
            string rendered = Render([new ChatTurn("user", "Hi"), new ChatTurn("assistant", Probe)], addGenerationPrompt: false);
            int at = rendered.LastIndexOf(Probe, StringComparison.Ordinal);
            text = at < 0 ? "" : rendered[(at + Probe.Length)..].Trim();
        }
        catch (TemplateException)
        {
            text = ""; // a template that refuses the probe conversation still ends turns with EOS
        }
        if (text.Length > 0 && tokenizer.Encode(text) is [int id] && tokenizer.IsSkippedOnDecode(id)) return (text, id);
        return (text, tokenizer.EosId);
    }
}
