using Microsoft.Extensions.AI;

namespace Microsoft.ML.Orpo.Chat;

/// <summary>
/// A Microsoft.Extensions.AI request checked against what this library can honour: the conversation becomes one
/// prompt, and <see cref="ChatOptions"/> becomes <see cref="GenerationOptions"/>. Anything that cannot be honoured is a
/// <see cref="NotSupportedException"/> naming it, never silently ignored.
/// </summary>
internal static class ChatRequest
{
    /// <summary>The generation settings: the model's defaults with the options' sampling settings over them.</summary>
    public static GenerationOptions Generation(ChatOptions? options, GenerationOptions defaults)
    {
        var generation = defaults.Clone();
        if (options is null) return generation;
        var unsupported = new List<string>();
        if (options.Tools is { Count: > 0 }) unsupported.Add("Tools");
        if (options.ToolMode is not null) unsupported.Add("ToolMode");
        if (options.AllowMultipleToolCalls is not null) unsupported.Add("AllowMultipleToolCalls");
        if (options.ResponseFormat is not null and not ChatResponseFormatText) unsupported.Add("ResponseFormat (only text)");
        if (options.FrequencyPenalty is not null) unsupported.Add("FrequencyPenalty");
        if (options.PresencePenalty is not null) unsupported.Add("PresencePenalty");
        if (options.Reasoning is not null) unsupported.Add("Reasoning");
        if (options.ConversationId is not null) unsupported.Add("ConversationId (the client keeps no conversation state)");
        if (options.AllowBackgroundResponses is true) unsupported.Add("AllowBackgroundResponses");
        if (options.ContinuationToken is not null) unsupported.Add("ContinuationToken");
        if (options.RawRepresentationFactory is not null) unsupported.Add("RawRepresentationFactory");
        if (options.AdditionalProperties is { Count: > 0 } extra) unsupported.Add($"AdditionalProperties ({string.Join(", ", extra.Keys)})");
        if (unsupported.Count > 0)
            throw new NotSupportedException($"The Microsoft.ML.Orpo chat client cannot honour these ChatOptions: {string.Join("; ", unsupported)}.");

        if (options.Temperature is float temperature) generation.Temperature = temperature;
        if (options.TopP is float topP) generation.TopP = topP;
        if (options.TopK is int topK) generation.TopK = topK;
        if (options.MaxOutputTokens is int maxTokens) generation.MaxNewTokens = maxTokens;
        if (options.Seed is long seed)
            generation.Seed = seed is >= int.MinValue and <= int.MaxValue ? (int)seed
                : throw new NotSupportedException($"ChatOptions.Seed {seed} is outside the 32-bit range the sampler's seed takes.");
        if (options.StopSequences is { Count: > 0 } stops) generation.StopSequences = stops.ToArray();
        generation.Validate();
        return generation;
    }

    /// <summary>
    /// The conversation as (role, text) turns, with <see cref="ChatOptions.Instructions"/> as a leading system turn.
    /// Only text content and the system, user and assistant roles exist for a language model without tools, and the
    /// conversation must end with the user's turn.
    /// </summary>
    public static IReadOnlyList<ChatMessage> Turns(IEnumerable<ChatMessage> messages, ChatOptions? options)
    {
        ArgumentNullException.ThrowIfNull(messages);
        var turns = new List<ChatMessage>();
        if (!string.IsNullOrEmpty(options?.Instructions)) turns.Add(new ChatMessage(ChatRole.System, options.Instructions));
        int index = 0;
        foreach (var message in messages)
        {
            if (message is null) throw new ArgumentException($"Message {index} is null.", nameof(messages));
            if (message.Role != ChatRole.System && message.Role != ChatRole.User && message.Role != ChatRole.Assistant)
                throw new NotSupportedException($"Message {index} has the role '{message.Role}'; only system, user and assistant messages are supported.");
            var other = message.Contents.FirstOrDefault(c => c is not TextContent);
            if (other is not null)
                throw new NotSupportedException($"Message {index} holds {other.GetType().Name}; only text content is supported.");
            turns.Add(message);
            index++;
        }
        if (index == 0) throw new ArgumentException("The conversation has no message.", nameof(messages));
        if (turns[^1].Role != ChatRole.User)
            throw new ArgumentException($"The conversation must end with a user message; the last one is '{turns[^1].Role}'.", nameof(messages));
        return turns;
    }
}
