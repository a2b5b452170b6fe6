using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Orpo;

// Usage: Microsoft.ML.Orpo.FreshLoad <model.zip> <plain|register> <inputColumn> <outputColumn> <text>...
// Loads the model with a brand-new MLContext (calling only RegisterOrpo first in "register" mode), transforms the
// texts and prints "<loaded type name>" then one output per line. On failure prints the exception to stderr, exits 3.
if (args.Length < 4)
{
    Console.Error.WriteLine("usage: <model.zip> <plain|register> <inputColumn> <outputColumn> <text>...");
    return 2;
}

try
{
    var ml = new MLContext();
    if (args[1] == "register")
        ml.RegisterOrpo();
    ITransformer model = ml.Model.Load(args[0], out DataViewSchema _);
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

/// <summary>One input row.</summary>
internal sealed class TextRow
{
    /// <summary>The input text (its column name is set at run time).</summary>
    public string Text { get; set; } = "";
}
