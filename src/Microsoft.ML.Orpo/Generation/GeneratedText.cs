namespace Microsoft.ML.Orpo.Generation;

/// <summary>One generated response with the counts a chat client reports.</summary>
/// <param name="Text">The decoded response, cut before the first stop sequence.</param>
/// <param name="PromptTokens">Tokens of the encoded prompt (template, BOS included).</param>
/// <param name="OutputTokens">Tokens generated (a stop token not included).</param>
/// <param name="OutOfRoom">True when the row ended at the new-token limit or the model's context, not at a stop.</param>
internal sealed record GeneratedText(string Text, int PromptTokens, int OutputTokens, bool OutOfRoom);
