using Microsoft.ML.Orpo.Chat;
using Microsoft.ML.Orpo.Training;
using Microsoft.ML.Orpo.Templates;

namespace Microsoft.ML.Orpo.Preferences;

/// <summary>What reading a preference IDataView produced, with a count and the first row for each skip reason.</summary>
internal sealed record PreferenceData(IReadOnlyList<EncodedPair> Pairs, long Rows, IReadOnlyDictionary<PairOutcome, (long Count, long FirstRow)> Outcomes)
{
    public long Count(PairOutcome outcome) => Outcomes.TryGetValue(outcome, out var o) ? o.Count : 0;

    /// <summary>One line per skip/truncation reason, e.g. "3 pairs skipped: identical chosen and rejected (first at row 7)".</summary>
    public IEnumerable<string> Describe()
    {
        foreach (var (outcome, (count, first)) in Outcomes.Where(o => o.Key != PairOutcome.Kept).OrderBy(o => o.Key))
        {
            string what = outcome switch
            {
                PairOutcome.Truncated => "truncated to MaxLength",
                PairOutcome.SkippedEmptyResponse => "skipped: empty chosen or rejected response",
                PairOutcome.SkippedIdenticalResponses => "skipped: chosen and rejected are identical",
                PairOutcome.SkippedEmptyPrompt => "skipped: empty prompt and the tokenizer has no BOS token to start from",
                _ => "dropped: chosen and rejected identical after truncation",
            };
            yield return $"{count} of {Rows} pairs {what} (first at row {first})";
        }
    }
}

/// <summary>
/// Streams an IDataView through a row cursor and keeps only the encoded token ids of each pair, never the whole
/// text of the data set.
/// </summary>
internal static class PreferenceDataReader
{
    public static PreferenceData Read(IDataView data, OrpoOptions options, PairEncoder encoder, string dataName, Func<bool> isCanceled)
    {
        PreferenceColumns.Check(data.Schema, options, dataName);
        var prompt = data.Schema[options.PromptColumnName];
        var chosen = data.Schema[options.ChosenColumnName];
        var rejected = data.Schema[options.RejectedColumnName];
        var pairs = new List<EncodedPair>();
        var outcomes = new Dictionary<PairOutcome, (long Count, long FirstRow)>();
        long row = 0;
        using var cursor = data.GetRowCursor(new[] { prompt, chosen, rejected });
        var getPrompt = cursor.GetGetter<ReadOnlyMemory<char>>(prompt);
        var getChosen = cursor.GetGetter<ReadOnlyMemory<char>>(chosen);
        var getRejected = cursor.GetGetter<ReadOnlyMemory<char>>(rejected);
        ReadOnlyMemory<char> p = default, c = default, r = default;
        while (cursor.MoveNext())
        {
            if ((row & 255) == 0 && isCanceled()) throw new OperationCanceledException("OrpoFineTune was canceled while reading the data.");
            getPrompt(ref p);
            getChosen(ref c);
            getRejected(ref r);
            string promptText = Text(p, options.PromptColumnName, row, dataName);
            string chosenText = Text(c, options.ChosenColumnName, row, dataName);
            string rejectedText = Text(r, options.RejectedColumnName, row, dataName);
            EncodedPair? pair;
            PairOutcome outcome;
            try
            {
                pair = encoder.Encode(promptText, chosenText, rejectedText, out outcome,
                    (options.PromptColumnName, options.ChosenColumnName, options.RejectedColumnName));
            }
            catch (Exception e) when (e is FormatException or TemplateException)
            {
                throw new ArgumentException($"Row {row} of the {dataName}: {e.Message}", e);
            }
            if (outcome == PairOutcome.PromptLongerThanMaxLength)
                throw new ArgumentException($"Row {row} of the {dataName}: the prompt alone is longer than MaxLength ({encoder.MaxLength} tokens). " +
                    "Raise MaxLength, shorten the prompt, or set OrpoOptions.TruncateLongPrompts = true to keep its end.");
            outcomes[outcome] = outcomes.TryGetValue(outcome, out var o) ? (o.Count + 1, o.FirstRow) : (1, row);
            if (pair is not null) pairs.Add(pair);
            row++;
        }
        return new PreferenceData(pairs, row, outcomes);
    }

    /// <summary>The cell as a string; text that is not valid UTF-16 (a lone surrogate) is an error naming the cell.</summary>
    private static string Text(ReadOnlyMemory<char> value, string column, long row, string dataName)
    {
        var span = value.Span;
        for (int i = 0; i < span.Length; i++)
        {
            if (char.IsHighSurrogate(span[i]) && i + 1 < span.Length && char.IsLowSurrogate(span[i + 1])) { i++; continue; }
            if (char.IsSurrogate(span[i]))
                throw new ArgumentException($"Row {row}, column '{column}' of the {dataName}: the text contains an unpaired UTF-16 surrogate at character {i} (invalid Unicode).");
        }
        return value.ToString();
    }
}
