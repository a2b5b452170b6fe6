using Microsoft.ML.Data;

namespace Microsoft.ML.Orpo.MlNet;

/// <summary>
/// The output of <see cref="TextGenerationMapping.Transform"/>: the source view plus the mapped text column, computed
/// lazily per row as cursors read it. Row count, shuffling and parallel cursors are those of the source.
/// </summary>
internal sealed class TextGenerationDataView : IDataView
{
    private readonly TextGenerationMapping _mapping;
    private readonly IDataView _source;
    private readonly DataViewSchema.Column _inputColumn;

    /// <summary>Wraps <paramref name="source"/>; throws if its schema lacks the input text column.</summary>
    /// <param name="mapping">The mapping to apply.</param>
    /// <param name="source">The data to map.</param>
    public TextGenerationDataView(TextGenerationMapping mapping, IDataView source)
    {
        ArgumentNullException.ThrowIfNull(mapping);
        ArgumentNullException.ThrowIfNull(source);
        _mapping = mapping;
        _source = source;
        _inputColumn = mapping.GetInputColumn(source.Schema);
        Schema = mapping.GetOutputSchema(source.Schema);
    }

    /// <inheritdoc/>
    public bool CanShuffle => _source.CanShuffle;

    /// <inheritdoc/>
    public DataViewSchema Schema { get; }

    /// <inheritdoc/>
    public long? GetRowCount() => _source.GetRowCount();

    /// <inheritdoc/>
    public DataViewRowCursor GetRowCursor(IEnumerable<DataViewSchema.Column> columnsNeeded, Random? rand = null)
    {
        var (sourceColumns, outputActive) = SplitColumns(columnsNeeded);
        return new Cursor(this, _source.GetRowCursor(sourceColumns, rand), outputActive);
    }

    /// <inheritdoc/>
    public DataViewRowCursor[] GetRowCursorSet(IEnumerable<DataViewSchema.Column> columnsNeeded, int n, Random? rand = null)
    {
        var (sourceColumns, outputActive) = SplitColumns(columnsNeeded);
        return _source.GetRowCursorSet(sourceColumns, n, rand).Select(c => (DataViewRowCursor)new Cursor(this, c, outputActive)).ToArray();
    }

    private (List<DataViewSchema.Column> SourceColumns, bool OutputActive) SplitColumns(IEnumerable<DataViewSchema.Column> columnsNeeded)
    {
        ArgumentNullException.ThrowIfNull(columnsNeeded);
        int outputIndex = _source.Schema.Count;
        var sourceColumns = new List<DataViewSchema.Column>();
        bool outputActive = false;
        foreach (DataViewSchema.Column column in columnsNeeded)
        {
            if (column.Index == outputIndex)
                outputActive = true;
            else if (column.Index >= 0 && column.Index < outputIndex)
                sourceColumns.Add(_source.Schema[column.Index]);
            else
                throw new ArgumentOutOfRangeException(nameof(columnsNeeded), $"Column '{column.Name}' is not in this view's schema.");
        }
        if (outputActive && !sourceColumns.Any(c => c.Index == _inputColumn.Index))
            sourceColumns.Add(_inputColumn);
        return (sourceColumns, outputActive);
    }

    /// <summary>A cursor over the source cursor; owns and disposes it.</summary>
    private sealed class Cursor : DataViewRowCursor
    {
        private readonly DataViewRowCursor _source;
        private readonly DataViewRow _row;

        public Cursor(TextGenerationDataView parent, DataViewRowCursor source, bool outputActive)
        {
            _source = source;
            _row = parent._mapping.WrapRow(source, parent.Schema, outputActive);
        }

        public override DataViewSchema Schema => _row.Schema;
        public override long Position => _source.Position;
        public override long Batch => _source.Batch;
        public override bool MoveNext() => _source.MoveNext();
        public override ValueGetter<DataViewRowId> GetIdGetter() => _source.GetIdGetter();
        public override bool IsColumnActive(DataViewSchema.Column column) => _row.IsColumnActive(column);
        public override ValueGetter<TValue> GetGetter<TValue>(DataViewSchema.Column column) => _row.GetGetter<TValue>(column);

        protected override void Dispose(bool disposing)
        {
            if (disposing)
                _row.Dispose(); // disposes the source cursor
            base.Dispose(disposing);
        }
    }
}
