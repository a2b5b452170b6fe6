// A console chat over a saved ORPO model through Microsoft.Extensions.AI's IChatClient, the interface Semantic Kernel
// and the .NET AI templates speak: the model zip is loaded in a fresh process, every reply is streamed as it is
// generated, and each turn prints its token usage and why it ended.
//
//   dotnet run --project examples/Chat -- [--model orpo-output/orpo-model.zip] [--temperature 0.7] [--max-tokens 64]
//
// Type a message and press Enter; an empty line or EOF ends the chat. The Quickstart's story model has no chat
// template, so each line is a conversation of its own there (the model continues the text); a model with a chat
// template gets the whole conversation rendered through it.
using System.Globalization;
using Microsoft.Extensions.AI;
using Microsoft.ML;
using Microsoft.ML.Orpo;

string modelPath = Path.Combine("orpo-output", "orpo-model.zip");
var options = new ChatOptions { Temperature = 0.7f, TopK = 40, MaxOutputTokens = 64, Seed = 1 };
for (int i = 0; i + 1 < args.Length; i += 2)
{
    switch (args[i])
    {
        case "--model": modelPath = args[i + 1]; break;
        case "--temperature": options.Temperature = float.Parse(args[i + 1], CultureInfo.InvariantCulture); break;
        case "--max-tokens": options.MaxOutputTokens = int.Parse(args[i + 1], CultureInfo.InvariantCulture); break;
        default: Console.Error.WriteLine($"Unknown option {args[i]}"); return 2;
    }
}
if (!File.Exists(modelPath))
{
    Console.Error.WriteLine($"No model at '{modelPath}'. Run `dotnet run --project examples/Quickstart` first, or pass --model PATH.");
    return 1;
}

var ml = new MLContext().RegisterOrpo(); // a fresh process's one call before Model.Load
using var model = (OrpoTransformer)ml.Model.Load(modelPath, out _);
using IChatClient client = model.AsIChatClient();
bool keepsHistory = HasChatTemplate(model);
var metadata = client.GetService<ChatClientMetadata>()!;
Console.Error.WriteLine($"{metadata.ProviderName} / {metadata.DefaultModelId} from {modelPath}; " +
    (keepsHistory ? "the conversation goes through the model's chat template." : "no chat template: each line is a new conversation."));

var history = new List<ChatMessage>();
while (true)
{
    Console.Write("> ");
    string? line = Console.ReadLine();
    if (string.IsNullOrEmpty(line)) break;
    if (!keepsHistory) history.Clear();
    history.Add(new ChatMessage(ChatRole.User, line));
    var updates = new List<ChatResponseUpdate>();
    await foreach (var update in client.GetStreamingResponseAsync(history, options))
    {
        Console.Write(update.Text);
        updates.Add(update);
    }
    var response = updates.ToChatResponse();
    Console.WriteLine();
    Console.Error.WriteLine($"  [{response.FinishReason}, {response.Usage?.InputTokenCount} prompt + {response.Usage?.OutputTokenCount} new tokens]");
    history.AddRange(response.Messages);
}
return 0;

static bool HasChatTemplate(OrpoTransformer model)
{
    try
    {
        model.ApplyChatTemplate([new ChatMessage(ChatRole.User, "")]);
        return true;
    }
    catch (InvalidOperationException)
    {
        return false;
    }
}
