using Microsoft.ML.Data;
using Microsoft.ML.Orpo.Preferences;

namespace Microsoft.ML.Orpo;

/// <summary>Loading preference pairs on <c>mlContext.Data</c>.</summary>
public static class PreferenceDataCatalog
{
    /// <summary>
    /// Reads preference pairs from a JSON Lines file (one JSON object per line; blank lines skipped; a gzip-compressed
    /// file, e.g. <c>.jsonl.gz</c>, is recognised by its content) into a data view with three text columns.
    /// </summary>
    /// <remarks>
    /// <para>Accepted line shapes (extra properties are ignored):</para>
    /// <list type="bullet">
    /// <item><c>{"prompt": "...", "chosen": "...", "rejected": "..."}</c> (TRL's standard shape).</item>
    /// <item>Conversational: <c>"chosen"</c> and <c>"rejected"</c> are message lists
    /// (<c>[{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}]</c>) with an optional
    /// <c>"prompt"</c> (a string or a message list placed before them). The response is the last message, which must
    /// be an assistant turn; the messages before it must be the same in both lists and form the prompt.</item>
    /// <item>OpenAI preference fine-tuning: <c>{"input": {"messages": [...]}, "preferred_output": [...],
    /// "non_preferred_output": [...]}</c>, read like the conversational shape.</item>
    /// </list>
    /// <para>A prompt made of system and user turns becomes their contents joined by a blank line (a single user turn
    /// is its content as is); a prompt with an earlier assistant turn is written as <c>"role: content"</c> turns joined
    /// by blank lines. Apply a chat format with <see cref="OrpoOptions.PromptTemplate"/>.</para>
    /// <para>With <paramref name="keepMessages"/> a conversational row keeps its messages instead, as JSON message lists in
    /// the text columns (the prompt's messages; the chosen and the rejected assistant turn, each as a one-message list),
    /// the shape <see cref="OrpoOptions.ChatTemplate"/> renders; every message must then have the role system, user or
    /// assistant and non-empty content. Rows of the string shape stay plain text either way.</para>
    /// <para>The whole file is read and validated now, so a malformed line fails here, not during training.</para>
    /// </remarks>
    /// <param name="catalog">The data catalog of an <see cref="MLContext"/>.</param>
    /// <param name="path">The <c>.jsonl</c> or <c>.jsonl.gz</c> file.</param>
    /// <param name="promptColumnName">Name of the prompt text column.</param>
    /// <param name="chosenColumnName">Name of the preferred-response text column.</param>
    /// <param name="rejectedColumnName">Name of the dispreferred-response text column.</param>
    /// <param name="keepMessages">Keep conversational rows as JSON message lists for <see cref="OrpoOptions.ChatTemplate"/>
    /// (default false: joined into text).</param>
    /// <returns>A data view with the prompt, chosen and rejected text columns, one row per non-blank line.</returns>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    /// <exception cref="InvalidDataException">A line is not valid UTF-8 or JSON or not one of the shapes; the message
    /// names the file and the 1-based line number.</exception>
    public static IDataView LoadPreferenceJsonl(this DataOperationsCatalog catalog, string path,
        string promptColumnName = OrpoOptions.DefaultPromptColumnName, string chosenColumnName = OrpoOptions.DefaultChosenColumnName,
        string rejectedColumnName = OrpoOptions.DefaultRejectedColumnName, bool keepMessages = false)
    {
        ArgumentNullException.ThrowIfNull(catalog);
        ArgumentException.ThrowIfNullOrWhiteSpace(promptColumnName);
        ArgumentException.ThrowIfNullOrWhiteSpace(chosenColumnName);
        ArgumentException.ThrowIfNullOrWhiteSpace(rejectedColumnName);
        if (new[] { promptColumnName, chosenColumnName, rejectedColumnName }.Distinct(StringComparer.Ordinal).Count() != 3)
            throw new ArgumentException($"The prompt, chosen and rejected column names must differ; got '{promptColumnName}', '{chosenColumnName}', '{rejectedColumnName}'.");
        var records = PreferenceJsonlReader.Read(path, keepMessages);
        var schema = SchemaDefinition.Create(typeof(PreferenceRecord));
        // Look every column up before renaming any, so swapped names cannot find an already renamed column.
        var (prompt, chosen, rejected) = (schema[nameof(PreferenceRecord.Prompt)], schema[nameof(PreferenceRecord.Chosen)],
            schema[nameof(PreferenceRecord.Rejected)]);
        (prompt.ColumnName, chosen.ColumnName, rejected.ColumnName) = (promptColumnName, chosenColumnName, rejectedColumnName);
        return catalog.LoadFromEnumerable(records, schema);
    }
}
