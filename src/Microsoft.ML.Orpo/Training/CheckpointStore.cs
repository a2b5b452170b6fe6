using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using Microsoft.ML.Orpo.ModelFiles;
using Microsoft.ML.Orpo.Modeling;
using Microsoft.ML.Orpo.Preferences;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Training;

/// <summary>
/// Resumable training checkpoints: <c>checkpoint-NNNNNN/</c> holding model.safetensors (the trained weights: every
/// weight, or only the LoRA adapters, whose base is the frozen model itself), optimizer.safetensors and
/// trainer_state.json (step, metrics history, a fingerprint of settings + data, the precision, and SHA-256 of each file).
/// A checkpoint is written into a temporary folder and renamed into place, so a run killed at any moment
/// leaves either the complete new checkpoint or none; a damaged newest checkpoint is skipped on resume.
/// </summary>
internal sealed class CheckpointStore
{
    public const int FormatVersion = 1;
    private const string Prefix = "checkpoint-";
    private static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    private readonly string directory;
    private readonly int keep;

    public CheckpointStore(string directory, int keep)
    {
        this.directory = Path.GetFullPath(directory);
        this.keep = keep;
    }

    public sealed record Resumed(int Step, int Seed, IReadOnlyList<OrpoStepMetrics> History);

    // Precision: the OrpoPrecision name; absent (null) in checkpoints written before the option, which were float32.
    private sealed record State(int FormatVersion, int Step, int OptimizerSteps, int Seed, string Fingerprint,
        Dictionary<string, string> Sha256, List<OrpoStepMetrics> History, string? Precision = null);

    /// <summary>A hash of everything that decides the training trajectory: settings and the encoded data.</summary>
    public static string Fingerprint(TrainingSettings settings, IReadOnlyList<EncodedPair> pairs)
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        hash.AppendData(Encoding.UTF8.GetBytes(FingerprintJson.Of(settings)));
        foreach (var pair in pairs)
            foreach (var ids in new[] { pair.PromptIds, pair.ChosenIds, pair.RejectedIds })
            {
                hash.AppendData(BitConverter.GetBytes(ids.Count));
                foreach (int id in ids) hash.AppendData(BitConverter.GetBytes(id));
            }
        return Convert.ToHexString(hash.GetHashAndReset());
    }

    public void Save(int step, LlamaForCausalLM network, AdamW optimizer, IReadOnlyList<OrpoStepMetrics> history, string fingerprint, int seed,
        OrpoPrecision precision)
    {
        string final = Path.Combine(directory, Prefix + step.ToString("D6", CultureInfo.InvariantCulture));
        string temp = Path.Combine(directory, $".tmp-{Prefix}{step:D6}-{Guid.NewGuid():N}");
        try
        {
            Directory.CreateDirectory(temp);
            var hashes = new Dictionary<string, string>(StringComparer.Ordinal);
            using (var scope = NewDisposeScope())
            {
                var weights = network.TrainableWeights().ToDictionary(p => p.Name, p => (Tensor)p.Parameter, StringComparer.Ordinal);
                hashes["model.safetensors"] = WriteTensors(Path.Combine(temp, "model.safetensors"), weights);
                hashes["optimizer.safetensors"] = WriteTensors(Path.Combine(temp, "optimizer.safetensors"), optimizer.StateTensors());
            }
            var state = new State(FormatVersion, step, optimizer.StepCount, seed, fingerprint, hashes, history.ToList(), precision.ToString());
            WriteDurably(Path.Combine(temp, "trainer_state.json"), JsonSerializer.SerializeToUtf8Bytes(state, Json));
            if (Directory.Exists(final)) Directory.Delete(final, recursive: true);
            Directory.Move(temp, final);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            TryDelete(temp);
            throw new InvalidOperationException(
                $"Could not write the checkpoint for step {step} to '{directory}': {e.Message} Earlier checkpoints are intact.", e);
        }
        Prune();
    }

    /// <summary>Loads the newest intact checkpoint into the network and optimizer; null when there is none.</summary>
    public Resumed? TryResume(LlamaForCausalLM network, AdamW optimizer, string fingerprint, OrpoPrecision precision, Action<string>? log)
    {
        if (!Directory.Exists(directory)) return null;
        foreach (var (step, path) in List().OrderByDescending(c => c.Step))
        {
            State state;
            try
            {
                state = ReadState(path);
            }
            catch (Exception e) when (e is IOException or InvalidDataException or JsonException or UnauthorizedAccessException)
            {
                log?.Invoke($"Skipping damaged checkpoint '{path}': {e.Message}");
                continue;
            }
            // Named apart from the fingerprint check (which covers it too) so the error says which option to change.
            string saved = state.Precision ?? nameof(OrpoPrecision.Float32);
            if (saved != precision.ToString())
                throw new InvalidOperationException(
                    $"CheckpointDirectory '{directory}' holds a checkpoint trained with Precision = {saved}, but this run uses " +
                    $"Precision = {precision}. Resume with OrpoOptions.Precision = {saved}, or use an empty directory to start over.");
            if (state.Fingerprint != fingerprint)
                throw new InvalidOperationException(
                    $"CheckpointDirectory '{directory}' holds a checkpoint of a different run (other options or data). " +
                    "Use an empty directory, or the same options and data to resume.");
            using var scope = NewDisposeScope();
            var weights = SafeTensorsReader.Read(Path.Combine(path, "model.safetensors"));
            var moments = SafeTensorsReader.Read(Path.Combine(path, "optimizer.safetensors"));
            CausalLanguageModel.LoadWeights(network.TrainableWeights(), weights, path);
            optimizer.LoadState(moments, state.OptimizerSteps, path);
            return new Resumed(state.Step, state.Seed, state.History);
        }
        return null;
    }

    private State ReadState(string path)
    {
        var state = JsonSerializer.Deserialize<State>(File.ReadAllBytes(Path.Combine(path, "trainer_state.json")), Json)
            ?? throw new InvalidDataException("trainer_state.json is empty.");
        if (state.FormatVersion > FormatVersion)
            throw new InvalidDataException($"checkpoint format {state.FormatVersion} is newer than this library reads ({FormatVersion}).");
        foreach (var (file, expected) in state.Sha256)
        {
            if (file.Contains('/') || file.Contains('\\') || file.Contains("..", StringComparison.Ordinal))
                throw new InvalidDataException($"invalid file name '{file}' in trainer_state.json.");
            using var stream = File.OpenRead(Path.Combine(path, file));
            if (Convert.ToHexString(SHA256.HashData(stream)) != expected)
                throw new InvalidDataException($"{file} does not match its recorded SHA-256.");
        }
        return state;
    }

    private IEnumerable<(int Step, string Path)> List()
    {
        foreach (string path in Directory.EnumerateDirectories(directory, Prefix + "*"))
            if (int.TryParse(Path.GetFileName(path).AsSpan(Prefix.Length), NumberStyles.None, CultureInfo.InvariantCulture, out int step))
                yield return (step, path);
    }

    private void Prune()
    {
        foreach (var (_, path) in List().OrderByDescending(c => c.Step).Skip(keep)) TryDelete(path);
        foreach (string stale in Directory.EnumerateDirectories(directory, ".tmp-" + Prefix + "*")) TryDelete(stale);
    }

    private static string WriteTensors(string path, IReadOnlyDictionary<string, Tensor> tensors)
    {
        SafeTensorsWriter.Write(path, tensors);
        using var stream = File.OpenRead(path);
        return Convert.ToHexString(SHA256.HashData(stream));
    }

    private static void WriteDurably(string path, byte[] bytes)
    {
        using var stream = new FileStream(path, FileMode.CreateNew, FileAccess.Write);
        stream.Write(bytes);
        stream.Flush(flushToDisk: true);
    }

    private static void TryDelete(string path)
    {
        try
        {
            if (Directory.Exists(path)) Directory.Delete(path, recursive: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // A leftover temporary folder is harmless: it never has the checkpoint- prefix resume reads.
        }
    }
}
