using Microsoft.ML.Data;

namespace Microsoft.ML.Orpo.MlNet;

/// <summary>
/// The <see cref="IRowToRowMapper"/> of a text-generation transformer, used by
/// <see cref="PredictionEngine{TSrc, TDst}"/> and by <see cref="TransformerChain{TLastTransformer}"/>'s composed mapper.
/// Stateless: every <see cref="GetRow"/> call gets its own row and per-row cache.
/// </summary>
internal sealed class TextGenerationRowMapper : IRowToRowMapper
{
    private readonly TextGenerationMapping _mapping;
    private readonly DataViewSchema.Column _inputColumn;

    /// <summary>Creates the mapper for rows of <paramref name="inputSchema"/>.</summary>
    /// <param name="mapping">The mapping to apply.</param>
    /// <param name="inputSchema">The schema of the rows to be mapped; must contain the input text column.</param>
    public TextGenerationRowMapper(TextGenerationMapping mapping, DataViewSchema inputSchema)
    {
        ArgumentNullException.ThrowIfNull(mapping);
        ArgumentNullException.ThrowIfNull(inputSchema);
        _mapping = mapping;
        _inputColumn = mapping.GetInputColumn(inputSchema);
        InputSchema = inputSchema;
        OutputSchema = mapping.GetOutputSchema(inputSchema);
    }

    /// <inheritdoc/>
    public DataViewSchema InputSchema { get; }

    /// <inheritdoc/>
    public DataViewSchema OutputSchema { get; }

    /// <inheritdoc/>
    public IEnumerable<DataViewSchema.Column> GetDependencies(IEnumerable<DataViewSchema.Column> dependingColumns)
    {
        ArgumentNullException.ThrowIfNull(dependingColumns);
        int outputIndex = InputSchema.Count;
        var needed = new SortedDictionary<int, DataViewSchema.Column>();
        foreach (DataViewSchema.Column column in dependingColumns)
        {
            if (column.Index == outputIndex)
                needed[_inputColumn.Index] = _inputColumn;
            else if (column.Index >= 0 && column.Index < outputIndex)
                needed[column.Index] = InputSchema[column.Index];
        }
        return needed.Values.ToArray();
    }

    /// <inheritdoc/>
    public DataViewRow GetRow(DataViewRow input, IEnumerable<DataViewSchema.Column> activeColumns)
    {
        ArgumentNullException.ThrowIfNull(input);
        ArgumentNullException.ThrowIfNull(activeColumns);
        int outputIndex = InputSchema.Count;
        bool outputActive = activeColumns.Any(c => c.Index == outputIndex);
        return _mapping.WrapRow(input, OutputSchema, outputActive);
    }
}
