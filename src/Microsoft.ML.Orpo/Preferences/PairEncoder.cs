using Microsoft.ML.Orpo.Chat;
using Microsoft.ML.Orpo.Tokenization;

namespace Microsoft.ML.Orpo.Preferences;

/// <summary>The token ids ORPO trains on for one pair.</summary>
/// <param name="PromptIds">[BOS] + encode(template(prompt)), possibly truncated (keeping BOS and the end).</param>
/// <param name="ChosenIds">encode(chosen) + [EOS], possibly truncated.</param>
/// <param name="RejectedIds">encode(rejected) + [EOS], possibly truncated.</param>
public sealed record EncodedPair(IReadOnlyList<int> PromptIds, IReadOnlyList<int> ChosenIds, IReadOnlyList<int> RejectedIds)
{
    /// <summary>Tokens of the longer of the two full sequences.</summary>
    public int LongestLength => PromptIds.Count + Math.Max(ChosenIds.Count, RejectedIds.Count);

    /// <summary>Chosen-sequence predictions the NLL term scores: the response, plus the prompt after its first token.</summary>
    internal int NllTokenCount(bool includePrompt) => includePrompt ? PromptIds.Count + ChosenIds.Count - 1 : ChosenIds.Count;
}

/// <summary>What happened to a pair during encoding.</summary>
internal enum PairOutcome
{
    Kept,
    Truncated,
    SkippedEmptyResponse,
    SkippedIdenticalResponses,
    DroppedIdenticalAfterTruncation,
    /// <summary>The prompt alone (template, BOS) is at least MaxLength tokens: nothing of a response would fit.</summary>
    PromptLongerThanMaxLength,
    /// <summary>The prompt gives no token at all (empty text and a tokenizer without BOS): nothing predicts the response's first token.</summary>
    SkippedEmptyPrompt,
}

/// <summary>
/// Encodes pairs per the project convention: prompt and responses are encoded separately and joined as ids
/// (no BPE merge across the boundary); the same template is used at generation time. With a chat template the cells
/// are conversations (<see cref="ConversationCells"/>): the prompt is their rendering with the generation prompt, a
/// response the rendering of prompt + response less that prefix, ending with the template's end-of-turn token.
/// </summary>
internal sealed class PairEncoder
{
    private static readonly (string, string, string) DefaultColumns =
        (OrpoOptions.DefaultPromptColumnName, OrpoOptions.DefaultChosenColumnName, OrpoOptions.DefaultRejectedColumnName);
    private readonly OrpoTokenizer tokenizer;
    private readonly string? template;

    public PairEncoder(OrpoTokenizer tokenizer, string? template, int maxLength, int maxPromptLength, bool truncateLongPrompts = false,
        ChatFormat? chat = null)
    {
        this.tokenizer = tokenizer;
        this.template = template;
        Chat = chat;
        MaxLength = maxLength;
        MaxPromptLength = maxPromptLength;
        TruncateLongPrompts = truncateLongPrompts;
    }


    /// <summary>The chat template prompts and responses are rendered with, or null (plain text).</summary>
    public ChatFormat? Chat { get; }

    public int MaxLength { get; }
    public int MaxPromptLength { get; }
    /// <summary>Whether a prompt of MaxLength tokens or more is cut to its end (true) or refused (false).</summary>
    public bool TruncateLongPrompts { get; }

    /// <summary>Applies the template (its <c>{prompt}</c> placeholder) to a prompt.</summary>
    public static string ApplyTemplate(string? template, string prompt) =>
        string.IsNullOrEmpty(template) ? prompt : template.Replace("{prompt}", prompt, StringComparison.Ordinal);

    /// <summary>The text a prompt cell is encoded from: with a chat template its messages (a plain text is one user
    /// message) rendered with the generation prompt, else the prompt template applied.</summary>
    public string PromptText(string prompt, string column = OrpoOptions.DefaultPromptColumnName) =>
        Chat is null ? ApplyTemplate(template, prompt) : Chat.Render(ConversationCells.Prompt(prompt, column), addGenerationPrompt: true);

    /// <summary>[BOS] + encode(template(prompt)); BOS only where the text does not already produce one.</summary>
    public List<int> EncodePrompt(string prompt) => EncodeText(PromptText(prompt));

    /// <summary>[BOS] + encode(text) for a finished prompt text; BOS only where the text does not already produce one.</summary>
    public List<int> EncodeText(string text)
    {
        var ids = new List<int>();
        var encoded = text.Length == 0 ? Array.Empty<int>() : tokenizer.Encode(text);
        if (tokenizer.BosId is int bos && (encoded.Count == 0 || encoded[0] != bos)) ids.Add(bos);
        ids.AddRange(encoded);
        return ids;
    }

    /// <summary>encode(response) + [EOS]; EOS only where the text does not already end with one.</summary>
    public List<int> EncodeResponse(string response)
    {
        var ids = new List<int>(tokenizer.Encode(response));
        if (Chat is not null)
        {
            // The rendering decides where the turn ends (e.g. "<|im_end|>\n"); only a template that writes no
            // end-of-turn token gets one appended.
            if (Chat.EndOfTurnId is int endOfTurn && !ids.Contains(endOfTurn)) ids.Add(endOfTurn);
            return ids;
        }
        if (tokenizer.EosId is int eos && (ids.Count == 0 || ids[^1] != eos)) ids.Add(eos);
        return ids;
    }

    /// <summary>Encodes and truncates one pair; returns null (with the reason) when the pair cannot be trained on.</summary>
    /// <exception cref="FormatException">With a chat template: a conversational cell is malformed (the message names the
    /// column and what is wrong) or the template's prompt rendering is not a prefix of its response rendering.</exception>
    public EncodedPair? Encode(string prompt, string chosen, string rejected, out PairOutcome outcome,
        (string Prompt, string Chosen, string Rejected)? columns = null)
    {
        string promptText;
        if (Chat is not null)
        {
            var (context, chosenContent, rejectedContent) = ConversationCells.Pair(prompt, chosen, rejected, columns ?? DefaultColumns);
            if (string.Equals(chosenContent, rejectedContent, StringComparison.Ordinal))
            {
                outcome = PairOutcome.SkippedIdenticalResponses;
                return null;
            }
            promptText = Chat.Render(context, addGenerationPrompt: true);
            (chosen, rejected) = (Chat.ResponseText(context, promptText, chosenContent), Chat.ResponseText(context, promptText, rejectedContent));
        }
        else
        {
            promptText = ApplyTemplate(template, prompt);
        }
        if (string.IsNullOrEmpty(chosen) || string.IsNullOrEmpty(rejected))
        {
            outcome = PairOutcome.SkippedEmptyResponse;
            return null;
        }
        if (string.Equals(chosen, rejected, StringComparison.Ordinal))
        {
            outcome = PairOutcome.SkippedIdenticalResponses;
            return null;
        }
        var promptIds = EncodeText(promptText);
        if (promptIds.Count == 0)
        {
            outcome = PairOutcome.SkippedEmptyPrompt;
            return null;
        }
        if (promptIds.Count >= MaxLength && !TruncateLongPrompts)
        {
            // Checked before truncation, which would otherwise keep only the prompt's end without being asked to.
            outcome = PairOutcome.PromptLongerThanMaxLength;
            return null;
        }
        var chosenIds = EncodeResponse(chosen);
        var rejectedIds = EncodeResponse(rejected);
        outcome = PairOutcome.Kept;
        if (promptIds.Count + Math.Max(chosenIds.Count, rejectedIds.Count) > MaxLength)
        {
            outcome = PairOutcome.Truncated;
            if (promptIds.Count > MaxPromptLength) promptIds = KeepEnd(promptIds, MaxPromptLength);
            int room = MaxLength - promptIds.Count;
            if (chosenIds.Count > room) chosenIds.RemoveRange(room, chosenIds.Count - room);
            if (rejectedIds.Count > room) rejectedIds.RemoveRange(room, rejectedIds.Count - room);
            if (chosenIds.SequenceEqual(rejectedIds))
            {
                outcome = PairOutcome.DroppedIdenticalAfterTruncation;
                return null;
            }
        }
        return new EncodedPair(promptIds, chosenIds, rejectedIds);
    }

    /// <summary>Keeps the last tokens of a prompt, and its BOS when it had one, within <paramref name="limit"/>.</summary>
    public List<int> KeepEnd(List<int> ids, int limit)
    {
        bool keepBos = tokenizer.BosId is int bos && ids.Count > 0 && ids[0] == bos;
        var kept = new List<int>(limit);
        if (keepBos) kept.Add(ids[0]);
        kept.AddRange(ids.Skip(ids.Count - (limit - kept.Count)));
        return kept;
    }
}
