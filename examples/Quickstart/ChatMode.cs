using System.Text.Json;
using Microsoft.Extensions.AI;
using Microsoft.ML.Orpo;

namespace Quickstart;

/// <summary>
/// The Quickstart's chat mode: the preference set in TRL's conversational form, trained with a chat template. The
/// template is plain text because stories260K's tokenizer (a 512-piece SentencePiece model) has no chat tokens: an
/// assistant turn ends with EOS, which is then the token the model must learn to stop at.
/// </summary>
internal static class ChatMode
{
    public const string Template =
        "{% for m in messages %}{% if m['role'] == 'user' %}User: {{ m['content'] }}\n{% elif m['role'] == 'system' %}{{ m['content'] }}\n" +
        "{% else %}Assistant: {{ m['content'] }}\n{% endif %}{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}";

    /// <summary>New tokens a held-out generation may use: the longest chosen response is about 25 tokens.</summary>
    public const int MaxNewTokens = 64;

    /// <summary>
    /// The share of greedy generations for <paramref name="prompts"/> (conversational prompt cells) that end with the
    /// stop token rather than running out of new tokens, through the model's chat client (its chat template).
    /// </summary>
    public static double StopShare(OrpoTransformer model, IReadOnlyList<string> prompts)
    {
        var client = model.AsIChatClient();
        var options = new ChatOptions { Temperature = 0, MaxOutputTokens = MaxNewTokens };
        int stopped = prompts.Count(prompt =>
            client.GetResponseAsync(Messages(prompt), options).GetAwaiter().GetResult().FinishReason == ChatFinishReason.Stop);
        return prompts.Count == 0 ? 0 : (double)stopped / prompts.Count;
    }

    private static List<ChatMessage> Messages(string cell)
    {
        using var document = JsonDocument.Parse(cell);
        return document.RootElement.EnumerateArray()
            .Select(m => new ChatMessage(new ChatRole(m.GetProperty("role").GetString()!), m.GetProperty("content").GetString()))
            .ToList();
    }
}
