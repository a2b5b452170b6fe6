using Microsoft.Extensions.AI;
using Microsoft.ML.Orpo.Chat;

namespace Microsoft.ML.Orpo;

// Microsoft.Extensions.AI: the transformer as an IChatClient.
public sealed partial class OrpoTransformer
{
    /// <summary>
    /// This model as a Microsoft.Extensions.AI <see cref="IChatClient"/> (Semantic Kernel, the .NET AI templates and
    /// other clients speak it). A response equals <see cref="Generate(string, GenerationOptions?)"/> on the rendered
    /// conversation with the same options; <see cref="ChatOptions"/>' <c>Temperature</c>, <c>TopP</c>, <c>TopK</c>,
    /// <c>MaxOutputTokens</c>, <c>StopSequences</c> and <c>Seed</c> override <see cref="GenerationDefaults"/>, and
    /// options it cannot honour (tools, response formats, penalties, ...) throw <see cref="NotSupportedException"/>.
    /// The conversation is rendered with <see cref="ChatTemplate"/>, else the model's chat template where it has one (<see cref="ApplyChatTemplate"/>,
    /// encoded as rendered: the template replaces <see cref="PromptTemplate"/>); otherwise its texts are joined by
    /// newlines into one prompt (<see cref="PromptTemplate"/> applied), so a single user message is exactly that prompt. The client is stateless and thread-safe; disposing it does not dispose this transformer.
    /// </summary>
    public IChatClient AsIChatClient()
    {
        ThrowIfDisposed();
        return new OrpoChatClient(this);
    }

    /// <summary>How the chat client names this model (<c>ChatResponse.ModelId</c>, <c>ChatClientMetadata</c>).</summary>
    internal string ModelId => $"orpo-{Model.Config.Architecture.ToString().ToLowerInvariant()}-{Model.Config.NumHiddenLayers}x{Model.Config.HiddenSize}";

    /// <summary>
    /// The prompt a conversation (ending with a user turn) becomes: with a chat template (<see cref="ChatTemplate"/>, else
    /// the model's own) its rendering with the generation prompt, encoded as it stands (<paramref name="turns"/> are the
    /// template's messages, so no prompt template and no second BOS), or without one the texts joined by newlines,
    /// encoded as <see cref="Generate(string, GenerationOptions?)"/> encodes a prompt.
    /// </summary>
    internal (string Prompt, bool Rendered) ChatPrompt(IReadOnlyList<ChatMessage> turns) =>
        (ChatFormatOf(Model) ?? ModelChatFormat(Model)) is not null
            ? (ApplyChatTemplate(turns, addGenerationPrompt: true), true)
            : (string.Join("\n", turns.Select(t => t.Text)), false);

    /// <summary>The text of generated ids, as <see cref="Generate(string, GenerationOptions?)"/> decodes them.</summary>
    internal string TextOf(IReadOnlyList<int> ids) => Model.Tokenizer.Decode(ids);
}
