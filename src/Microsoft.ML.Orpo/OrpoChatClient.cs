using System.Runtime.CompilerServices;
using System.Threading.Channels;
using Microsoft.Extensions.AI;
using Microsoft.ML.Orpo.Generation;
using Microsoft.ML.Orpo.Chat;

namespace Microsoft.ML.Orpo;

/// <summary>
/// An <see cref="OrpoTransformer"/> behind Microsoft.Extensions.AI's <see cref="IChatClient"/>: each request renders
/// the conversation into one prompt and generates with the transformer's own decoding, so a response equals
/// <see cref="OrpoTransformer.Generate(string, GenerationOptions?)"/> on that prompt with the same options. The client
/// keeps no state between calls and may be used from several threads; disposing it leaves the transformer alone.
/// </summary>
internal sealed class OrpoChatClient(OrpoTransformer model) : IChatClient
{
    internal const string ProviderName = "Microsoft.ML.Orpo";

    private readonly ChatClientMetadata metadata = new(ProviderName, providerUri: null, defaultModelId: model.ModelId);

    public async Task<ChatResponse> GetResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null,
        CancellationToken cancellationToken = default)
    {
        var (prompt, rendered, generation) = Prepare(messages, options);
        var result = await Task.Run(() => model.GenerateCore([prompt], generation, onToken: null, cancellationToken, rendered)[0], cancellationToken)
            .ConfigureAwait(false);
        return new ChatResponse(new ChatMessage(ChatRole.Assistant, result.Text))
        {
            ResponseId = NewId(), ModelId = model.ModelId, CreatedAt = DateTimeOffset.UtcNow,
            FinishReason = FinishReason(result), Usage = Usage(result),
        };
    }

    public async IAsyncEnumerable<ChatResponseUpdate> GetStreamingResponseAsync(IEnumerable<ChatMessage> messages,
        ChatOptions? options = null, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        var (prompt, rendered, generation) = Prepare(messages, options);
        string responseId = NewId();
        var created = DateTimeOffset.UtcNow;
        ChatResponseUpdate Update(string? text) => new(ChatRole.Assistant, text)
        {
            ResponseId = responseId, MessageId = responseId, ModelId = model.ModelId, CreatedAt = created,
        };

        // Generation runs on a worker and hands text over as it becomes final; a consumer that stops reading cancels it.
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var channel = Channel.CreateUnbounded<ChatResponseUpdate>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });
        var text = new StreamedText(model.TextOf, generation.StopSequences);
        var producer = Task.Run(() =>
        {
            try
            {
                var result = model.GenerateCore([prompt], generation,
                    (_, ids) => { if (text.Advance(ids) is { } piece) channel.Writer.TryWrite(Update(piece)); }, stop.Token, rendered)[0];
                if (text.Finish(result.Text) is { } rest) channel.Writer.TryWrite(Update(rest));
                var last = Update(null);
                last.FinishReason = FinishReason(result);
                last.Contents.Add(new UsageContent(Usage(result)));
                channel.Writer.TryWrite(last);
                channel.Writer.TryComplete();
            }
            catch (Exception e)
            {
                channel.Writer.TryComplete(e);
            }
        }, CancellationToken.None);
        try
        {
            await foreach (var update in channel.Reader.ReadAllAsync(CancellationToken.None).ConfigureAwait(false))
            {
                cancellationToken.ThrowIfCancellationRequested(); // updates already queued are not handed out after a cancellation
                yield return update;
            }
        }
        finally
        {
            await stop.CancelAsync().ConfigureAwait(false);
            await producer.ConfigureAwait(false); // the generation holds the model until it returns
        }
    }

    public object? GetService(Type serviceType, object? serviceKey = null)
    {
        ArgumentNullException.ThrowIfNull(serviceType);
        if (serviceKey is not null) return null;
        if (serviceType == typeof(ChatClientMetadata)) return metadata;
        if (serviceType == typeof(OrpoTransformer)) return model;
        return serviceType.IsInstanceOfType(this) ? this : null;
    }

    public void Dispose()
    {
    }

    private (string Prompt, bool Rendered, GenerationOptions Generation) Prepare(IEnumerable<ChatMessage> messages, ChatOptions? options)
    {
        if (options?.ModelId is { } id && id != model.ModelId)
            throw new NotSupportedException($"ChatOptions.ModelId is '{id}', but this client serves '{model.ModelId}' only.");
        var generation = ChatRequest.Generation(options, model.GenerationDefaults);
        var (prompt, rendered) = model.ChatPrompt(ChatRequest.Turns(messages, options));
        return (prompt, rendered, generation);
    }

    private static ChatFinishReason FinishReason(GeneratedText result) => result.OutOfRoom ? ChatFinishReason.Length : ChatFinishReason.Stop;

    private static UsageDetails Usage(GeneratedText result) => new()
    {
        InputTokenCount = result.PromptTokens, OutputTokenCount = result.OutputTokens, TotalTokenCount = result.PromptTokens + result.OutputTokens,
    };

    private static string NewId() => Guid.NewGuid().ToString("N");
}
