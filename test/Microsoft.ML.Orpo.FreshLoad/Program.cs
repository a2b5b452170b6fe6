using Microsoft.Extensions.AI;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Orpo;

// Usage: Microsoft.ML.Orpo.FreshLoad <model.zip> <plain|register|chat> <inputColumn> <outputColumn> <text>...
// Loads the model with a brand-new MLContext (calling only RegisterOrpo first in "register" and "chat" modes), transforms
// the texts and prints "<loaded type name>" then one output per line. "chat" instead asks the loaded OrpoTransformer's
// IChatClient, greedily and with at most 24 new tokens, each text as a user message, streaming and not, and prints
// "<response>|<streamed response>" per text, newlines escaped. On failure prints the exception to stderr, exits 3.
if (args.Length < 4)
{
    Console.Error.WriteLine("usage: <model.zip> <plain|register> <inputColumn> <outputColumn> <text>...");
    return 2;
}

try
{
    var ml = new MLContext();
    if (args[1] is "register" or "chat")
        ml.RegisterOrpo();
    ITransformer model = ml.Model.Load(args[0], out DataViewSchema _);
    if (args[1] == "chat")
    {
        Console.WriteLine(model.GetType().Name);
        using var client = ((OrpoTransformer)model).AsIChatClient();
        var options = new ChatOptions { Temperature = 0, MaxOutputTokens = 24 };
        foreach (string text in args.Skip(4))
        {
            var messages = new[] { new ChatMessage(ChatRole.User, text) };
            string response = client.GetResponseAsync(messages, options).GetAwaiter().GetResult().Text;
            var streamed = new System.Text.StringBuilder();
            var updates = client.GetStreamingResponseAsync(messages, options).GetAsyncEnumerator();
            while (updates.MoveNextAsync().AsTask().GetAwaiter().GetResult()) streamed.Append(updates.Current.Text);
            Console.WriteLine($"{Escape(response)}|{Escape(streamed.ToString())}");
        }
        return 0;
    }
    SchemaDefinition definition = SchemaDefinition.Create(typeof(TextRow));
    definition[0].ColumnName = args[2];
    IDataView input = ml.Data.LoadFromEnumerable(args.Skip(4).Select(t => new TextRow { Text = t }), definition);
    IDataView output = model.Transform(input);
    Console.WriteLine(model.GetType().Name);
    foreach (string text in output.GetColumn<string>(args[3]))
        Console.WriteLine(text);
    return 0;
}
catch (Exception ex)
{
    Console.Error.WriteLine(ex.ToString());
    return 3;
}

static string Escape(string text) => text.Replace("\\", "\\\\").Replace("\n", "\\n").Replace("|", "\\|");

/// <summary>One input row.</summary>
internal sealed class TextRow
{
    /// <summary>The input text (its column name is set at run time).</summary>
    public string Text { get; set; } = "";
}
