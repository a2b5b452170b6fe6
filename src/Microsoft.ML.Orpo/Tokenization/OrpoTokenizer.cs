using Microsoft.ML.Orpo.Modeling;

namespace Microsoft.ML.Orpo.Tokenization;

/// <summary>
/// The tokenizer of a language model: a SentencePiece <c>tokenizer.model</c> (run by Microsoft.ML.Tokenizers) or a
/// Hugging Face BPE <c>tokenizer.json</c>, byte-level or SentencePiece-style (run by this library, exactly as
/// Hugging Face's tokenizers runs it). <see cref="Encode"/> never adds BOS/EOS; callers add
/// <see cref="BosId"/> / <see cref="EosId"/> where the training or generation convention wants them.
/// </summary>
public sealed class OrpoTokenizer
{
    /// <summary>The <see cref="Kind"/> of a SentencePiece tokenizer.</summary>
    public const string SentencePieceKind = "sentencepiece";
    /// <summary>The <see cref="Kind"/> of a Hugging Face BPE <c>tokenizer.json</c> tokenizer.</summary>
    public const string BpeKind = "bpe";

    private readonly HashSet<int> _skippedOnDecode;
    private readonly Func<IEnumerable<int>, string> _decode;
    private readonly Func<string, IReadOnlyList<int>> _encode;

    internal OrpoTokenizer(Func<string, IReadOnlyList<int>> encode, string kind, IReadOnlyDictionary<string, byte[]> files, int vocabularySize,
        SpecialTokenIds ids, IEnumerable<int> controlIds, Func<IEnumerable<int>, string> decode)
    {
        _encode = encode;
        Kind = kind;
        Files = files;
        VocabularySize = vocabularySize;
        (BosId, EosId, PadId) = (ids.Bos, ids.Eos, ids.Pad);
        _decode = decode;
        _skippedOnDecode = new HashSet<int>(controlIds);
        foreach (int? id in new[] { BosId, EosId, PadId })
            if (id is int i) _skippedOnDecode.Add(i);
    }

    /// <summary>Beginning-of-sequence id, or null when neither the tokenizer nor the model config defines one.</summary>
    public int? BosId { get; }

    /// <summary>End-of-sequence id, or null when neither the tokenizer nor the model config defines one.</summary>
    public int? EosId { get; }

    /// <summary>Padding id, or null when neither the tokenizer nor the model config defines one.</summary>
    public int? PadId { get; }

    /// <summary>Number of ids the tokenizer can produce (its largest id + 1).</summary>
    public int VocabularySize { get; }

    /// <summary><c>"sentencepiece"</c> or <c>"bpe"</c> (Hugging Face <c>tokenizer.json</c>).</summary>
    public string Kind { get; }

    /// <summary>
    /// The files this tokenizer was built from, under their canonical names (<c>tokenizer.model</c> or
    /// <c>tokenizer.json</c>, plus <c>tokenizer_config.json</c> when one was read), so it can be embedded in a
    /// model zip or exported and rebuilt with <see cref="FromFiles"/>. The arrays must not be modified.
    /// </summary>
    public IReadOnlyDictionary<string, byte[]> Files { get; }

    /// <summary>Encodes plain text to ids; never adds BOS/EOS. Added tokens written literally in the text of a
    /// <c>tokenizer.json</c> map to their ids; a SentencePiece model treats text such as "&lt;s&gt;" as ordinary characters.</summary>
    /// <param name="text">The text.</param>
    public IReadOnlyList<int> Encode(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        return text.Length == 0 ? Array.Empty<int>() : _encode(text);
    }

    /// <summary>Whether <see cref="Decode"/> leaves this id out (BOS, EOS, padding, control tokens).</summary>
    internal bool IsSkippedOnDecode(int id) => _skippedOnDecode.Contains(id);

    /// <summary>Decodes ids to text, leaving out BOS, EOS, padding and special (control) tokens.</summary>
    /// <param name="ids">The ids, each in [0, <see cref="VocabularySize"/>).</param>
    /// <exception cref="ArgumentOutOfRangeException">An id is outside the vocabulary.</exception>
    public string Decode(IEnumerable<int> ids)
    {
        ArgumentNullException.ThrowIfNull(ids);
        var kept = new List<int>();
        foreach (int id in ids)
        {
            if (id < 0 || id >= VocabularySize)
                throw new ArgumentOutOfRangeException(nameof(ids), id, $"Token id {id} is outside the vocabulary (0..{VocabularySize - 1}).");
            if (!_skippedOnDecode.Contains(id)) kept.Add(id);
        }
        return kept.Count == 0 ? string.Empty : _decode(kept);
    }

    /// <summary>
    /// Loads a tokenizer from a file (<c>tokenizer.model</c> or <c>tokenizer.json</c>; a <c>tokenizer_config.json</c>
    /// beside it is read too) or from a folder holding one (a <c>tokenizer.model</c> is preferred).
    /// </summary>
    /// <param name="path">The file or folder.</param>
    /// <param name="config">Model config whose BOS/EOS/pad ids apply when the tokenizer files define none.</param>
    /// <exception cref="FileNotFoundException">The file is missing, or the folder holds no tokenizer.</exception>
    /// <exception cref="DirectoryNotFoundException">The folder is missing.</exception>
    /// <exception cref="InvalidDataException">A tokenizer file is malformed; the message names it.</exception>
    /// <exception cref="NotSupportedException">The file uses a tokenizer feature this library does not implement.</exception>
    public static OrpoTokenizer Load(string path, LlamaConfig? config = null)
    {
        var (files, sources) = TokenizerFiles.Read(path);
        return TokenizerFactory.Create(files, sources, config);
    }

    /// <summary>Rebuilds a tokenizer from <see cref="Files"/> (file name to bytes).</summary>
    /// <param name="files">Must hold <c>tokenizer.model</c> or <c>tokenizer.json</c>; <c>tokenizer_config.json</c> is optional.</param>
    /// <param name="config">Model config whose BOS/EOS/pad ids apply when the tokenizer files define none.</param>
    /// <exception cref="ArgumentException">No tokenizer file is among <paramref name="files"/>.</exception>
    /// <exception cref="InvalidDataException">A tokenizer file is malformed; the message names it.</exception>
    public static OrpoTokenizer FromFiles(IReadOnlyDictionary<string, byte[]> files, LlamaConfig? config = null)
    {
        ArgumentNullException.ThrowIfNull(files);
        var copy = files.ToDictionary(kv => kv.Key, kv => kv.Value ?? throw new ArgumentException($"File '{kv.Key}' has no content.", nameof(files)),
            StringComparer.Ordinal);
        return TokenizerFactory.Create(copy, new Dictionary<string, string>(), config);
    }
}
