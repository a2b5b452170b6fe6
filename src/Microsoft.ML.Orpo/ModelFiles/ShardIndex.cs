using System.Text.Json;

namespace Microsoft.ML.Orpo.ModelFiles;

/// <summary>
/// A parsed <c>model.safetensors.index.json</c>: which shard file holds each tensor. Shard names must be plain file
/// names inside the checkpoint folder (no separators, no <c>..</c>, no rooted paths) and end in <c>.safetensors</c>.
/// </summary>
internal sealed class ShardIndex
{
    /// <summary>Largest index file accepted.</summary>
    public const long MaxIndexLength = 64L << 20;

    private static ReadOnlySpan<byte> Utf8Bom => [0xEF, 0xBB, 0xBF];

    private ShardIndex(IReadOnlyDictionary<string, IReadOnlySet<string>> tensorsByShard) => TensorsByShard = tensorsByShard;

    /// <summary>Shard file name to the tensor names the index places in it (shards in ordinal order).</summary>
    public IReadOnlyDictionary<string, IReadOnlySet<string>> TensorsByShard { get; }

    /// <summary>Reads and validates the index at <paramref name="path"/>.</summary>
    public static ShardIndex Read(string path)
    {
        var info = new FileInfo(path);
        if (!info.Exists) throw new FileNotFoundException($"Shard index '{path}' does not exist.", path);
        if (info.Length > MaxIndexLength)
            throw new InvalidDataException($"{path}: the shard index is {info.Length} bytes, more than the {MaxIndexLength}-byte limit.");
        return Parse(File.ReadAllBytes(path), path);
    }

    /// <summary>Parses index JSON; <paramref name="source"/> labels error messages.</summary>
    public static ShardIndex Parse(byte[] json, string source)
    {
        JsonDocument document;
        try
        {
            ReadOnlyMemory<byte> text = json.AsSpan().StartsWith(Utf8Bom) ? json.AsMemory(Utf8Bom.Length) : json;
            document = JsonDocument.Parse(text, new JsonDocumentOptions { MaxDepth = 16 });
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{source}: the shard index is not valid JSON ({e.Message}).", e);
        }
        using (document)
        {
            if (document.RootElement.ValueKind != JsonValueKind.Object
                || !document.RootElement.TryGetProperty("weight_map", out JsonElement map) || map.ValueKind != JsonValueKind.Object)
                throw new InvalidDataException($"{source}: the shard index has no 'weight_map' object.");

            var byShard = new SortedDictionary<string, HashSet<string>>(StringComparer.Ordinal);
            var seen = new HashSet<string>(StringComparer.Ordinal);
            foreach (JsonProperty entry in map.EnumerateObject())
            {
                if (!seen.Add(entry.Name))
                    throw new InvalidDataException($"{source}: tensor '{entry.Name}' appears twice in 'weight_map'.");
                if (entry.Value.ValueKind != JsonValueKind.String)
                    throw new InvalidDataException($"{source}: tensor '{entry.Name}': the shard file name must be a string.");
                string shard = entry.Value.GetString()!;
                if (!IsPlainShardName(shard))
                    throw new InvalidDataException(
                        $"{source}: tensor '{entry.Name}' points at shard '{shard}', which is not a plain '.safetensors' file name inside the checkpoint folder.");
                if (!byShard.TryGetValue(shard, out HashSet<string>? names))
                    byShard.Add(shard, names = new HashSet<string>(StringComparer.Ordinal));
                names.Add(entry.Name);
            }
            if (byShard.Count == 0)
                throw new InvalidDataException($"{source}: 'weight_map' is empty.");
            return new ShardIndex(byShard.ToDictionary(p => p.Key, p => (IReadOnlySet<string>)p.Value, StringComparer.Ordinal));
        }
    }

    private static bool IsPlainShardName(string name) =>
        name.Length is > 0 and <= 255
        && name.EndsWith(".safetensors", StringComparison.Ordinal)
        && name.IndexOfAny(['/', '\\', ':', '\0']) < 0
        && !Path.IsPathRooted(name)
        && name.IndexOfAny(Path.GetInvalidFileNameChars()) < 0;
}
