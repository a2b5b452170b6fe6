using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.ModelFiles;

/// <summary>
/// The tensors of a safetensors checkpoint (one file or shards), located by their validated headers but not read: a
/// tensor is read when asked for, so a model can be filled one tensor at a time instead of from a state dict that
/// holds the whole checkpoint beside the network (twice the model's float32 size at the peak).
/// </summary>
internal sealed class CheckpointTensors : IDisposable
{
    private readonly Dictionary<string, (string Path, long DataStart, SafeTensorsEntry Entry)> entries = new(StringComparer.Ordinal);
    private readonly Dictionary<string, FileStream> streams = new(StringComparer.Ordinal);

    /// <summary>The tensors' names.</summary>
    public IReadOnlyCollection<string> Names => entries.Keys;

    /// <summary>Every tensor's shape by name, from the headers.</summary>
    public IReadOnlyDictionary<string, long[]> Shapes => entries.ToDictionary(e => e.Key, e => e.Value.Entry.Shape, StringComparer.Ordinal);

    /// <summary>Adds the entries of a validated header of the file at <paramref name="path"/> (<paramref name="names"/> null: all).</summary>
    public void Add(string path, SafeTensorsHeader header, IReadOnlySet<string>? names = null)
    {
        foreach (SafeTensorsEntry entry in header.Entries)
            if (names is null || names.Contains(entry.Name))
                if (!entries.TryAdd(entry.Name, (path, header.DataStart, entry)))
                    throw new InvalidDataException($"{path}: tensor '{entry.Name}' appears in more than one file of the checkpoint.");
    }

    /// <summary>Forgets a tensor (one the model does not use).</summary>
    public void Remove(string name) => entries.Remove(name);

    /// <summary>Reads one tensor, converted to <paramref name="dtype"/>; the caller owns it.</summary>
    public Tensor Read(string name, ScalarType dtype = ScalarType.Float32) => Read(name, (ScalarType?)dtype);

    /// <summary>
    /// Reads one tensor in the type it is stored in; the caller owns it. Copied into a parameter of another type, it
    /// is converted there, without a converted copy beside it (a bfloat16 embedding of a 0.5B model is 272 MB, its
    /// float32 copy 544 MB more at the load's peak).
    /// </summary>
    public Tensor ReadAsStored(string name) => Read(name, null);

    private Tensor Read(string name, ScalarType? dtype)
    {
        if (!entries.TryGetValue(name, out var located)) throw new KeyNotFoundException($"The checkpoint has no tensor '{name}'.");
        if (!streams.TryGetValue(located.Path, out var stream))
            streams[located.Path] = stream = new FileStream(located.Path, FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize: 1 << 16);
        return SafeTensorsReader.ReadTensor(stream, located.DataStart, located.Entry, located.Path,
            dtype ?? SafeTensorsDTypes.ToScalarType(located.Entry.DType));
    }

    public void Dispose()
    {
        foreach (var stream in streams.Values) stream.Dispose();
        streams.Clear();
    }
}
