using Microsoft.ML.Data;

namespace Microsoft.ML.Orpo.MlNet;

/// <summary>
/// The row mapping of a text-generation transformer: one input text column is mapped by a
/// <see cref="Func{T, TResult}"/> to one new text column appended to the input columns (hiding an input column of
/// the same name). A transformer implements <see cref="ITransformer"/>'s mapping members by delegating to it.
/// </summary>
/// <remarks>
/// The mapping runs lazily, once per row, when the output column's value is first read for that row (the result is
/// kept until the row changes). Each cursor and each <see cref="PredictionEngine{TSrc, TDst}"/> row gets its own cache,
/// so the only shared state is <see cref="Map"/> itself, which must be thread-safe.
/// </remarks>
internal sealed class TextGenerationMapping
{
    /// <summary>Creates the mapping.</summary>
    /// <param name="inputColumnName">The text column read.</param>
    /// <param name="outputColumnName">The text column added.</param>
    /// <param name="map">Maps one input text to one output text; called from several threads at once.</param>
    public TextGenerationMapping(string inputColumnName, string outputColumnName, Func<string, string> map)
    {
        ArgumentException.ThrowIfNullOrEmpty(inputColumnName);
        ArgumentException.ThrowIfNullOrEmpty(outputColumnName);
        ArgumentNullException.ThrowIfNull(map);
        InputColumnName = inputColumnName;
        OutputColumnName = outputColumnName;
        Map = map;
    }

    /// <summary>The text column read.</summary>
    public string InputColumnName { get; }

    /// <summary>The text column added.</summary>
    public string OutputColumnName { get; }

    /// <summary>The per-row mapping.</summary>
    public Func<string, string> Map { get; }

    /// <summary>The input schema plus the output column; throws if the input column is missing or not text.</summary>
    /// <param name="inputSchema">The schema of the data to be transformed.</param>
    public DataViewSchema GetOutputSchema(DataViewSchema inputSchema)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        GetInputColumn(inputSchema);
        var builder = new DataViewSchema.Builder();
        builder.AddColumns(inputSchema);
        builder.AddColumn(OutputColumnName, TextDataViewType.Instance);
        return builder.ToSchema();
    }

    /// <summary>The lazily mapped view of <paramref name="input"/>.</summary>
    /// <param name="input">The data to transform.</param>
    public IDataView Transform(IDataView input) => new TextGenerationDataView(this, input);

    /// <summary>A row-to-row mapper for <paramref name="inputSchema"/> (what <see cref="PredictionEngine{TSrc, TDst}"/> uses).</summary>
    /// <param name="inputSchema">The schema of the rows to be mapped.</param>
    public IRowToRowMapper GetRowToRowMapper(DataViewSchema inputSchema) => new TextGenerationRowMapper(this, inputSchema);

    /// <summary>The input column, checked to exist and to be text.</summary>
    /// <param name="inputSchema">The schema to look in.</param>
    public DataViewSchema.Column GetInputColumn(DataViewSchema inputSchema)
    {
        DataViewSchema.Column column = inputSchema.GetColumnOrNull(InputColumnName)
            ?? throw new ArgumentOutOfRangeException(nameof(inputSchema), $"Input column '{InputColumnName}' was not found in the schema.");
        if (column.Type is not TextDataViewType)
            throw new ArgumentOutOfRangeException(nameof(inputSchema),
                $"Input column '{InputColumnName}' must be of type {TextDataViewType.Instance} (string), but is {column.Type}.");
        return column;
    }

    /// <summary>Wraps an input row: input columns pass through, the output column is mapped on demand.</summary>
    /// <param name="input">The input row (its schema must be the one the output schema was built from).</param>
    /// <param name="outputSchema">The output schema from <see cref="GetOutputSchema"/>.</param>
    /// <param name="outputActive">Whether the output column is active.</param>
    internal DataViewRow WrapRow(DataViewRow input, DataViewSchema outputSchema, bool outputActive) =>
        new MappedRow(this, input, outputSchema, outputActive);

    /// <summary>A row over an input row plus the lazily computed output column (its index is the input column count).</summary>
    private sealed class MappedRow : DataViewRow
    {
        private readonly DataViewRow _input;
        private readonly int _outputIndex;
        private readonly bool _outputActive;
        private readonly ValueGetter<ReadOnlyMemory<char>>? _outputGetter;
        private long _cachedPosition = -1;
        private ReadOnlyMemory<char> _cached;

        public MappedRow(TextGenerationMapping mapping, DataViewRow input, DataViewSchema outputSchema, bool outputActive)
        {
            _input = input;
            Schema = outputSchema;
            _outputIndex = input.Schema.Count;
            _outputActive = outputActive;
            if (!outputActive)
                return;
            DataViewSchema.Column source = mapping.GetInputColumn(input.Schema);
            if (!input.IsColumnActive(source))
                throw new InvalidOperationException($"Input column '{source.Name}' must be active to compute '{mapping.OutputColumnName}'.");
            ValueGetter<ReadOnlyMemory<char>> sourceGetter = input.GetGetter<ReadOnlyMemory<char>>(source);
            Func<string, string> map = mapping.Map;
            _outputGetter = (ref ReadOnlyMemory<char> value) =>
            {
                long position = _input.Position;
                if (position < 0)
                    throw new InvalidOperationException("The row has no current value: move the cursor first.");
                if (position != _cachedPosition)
                {
                    ReadOnlyMemory<char> text = default;
                    sourceGetter(ref text);
                    _cached = (map(text.ToString()) ?? string.Empty).AsMemory();
                    _cachedPosition = position;
                }
                value = _cached;
            };
        }

        public override DataViewSchema Schema { get; }
        public override long Position => _input.Position;
        public override long Batch => _input.Batch;
        public override ValueGetter<DataViewRowId> GetIdGetter() => _input.GetIdGetter();

        public override bool IsColumnActive(DataViewSchema.Column column)
        {
            CheckColumn(column);
            return column.Index == _outputIndex ? _outputActive : _input.IsColumnActive(_input.Schema[column.Index]);
        }

        public override ValueGetter<TValue> GetGetter<TValue>(DataViewSchema.Column column)
        {
            CheckColumn(column);
            if (column.Index != _outputIndex)
                return _input.GetGetter<TValue>(_input.Schema[column.Index]);
            if (_outputGetter is null)
                throw new InvalidOperationException($"Column '{column.Name}' is not active.");
            if (_outputGetter is not ValueGetter<TValue> getter)
                throw new InvalidOperationException(
                    $"Column '{column.Name}' is text: read it as {nameof(ReadOnlyMemory<char>)}<char>, not {typeof(TValue).Name}.");
            return getter;
        }

        protected override void Dispose(bool disposing)
        {
            if (disposing)
                _input.Dispose();
            base.Dispose(disposing);
        }

        private void CheckColumn(DataViewSchema.Column column)
        {
            if (column.Index < 0 || column.Index >= Schema.Count)
                throw new ArgumentOutOfRangeException(nameof(column), $"Column '{column.Name}' is not in this row's schema.");
        }
    }
}
