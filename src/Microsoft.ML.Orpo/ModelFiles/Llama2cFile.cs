using System.Buffers.Binary;
using Microsoft.ML.Orpo.Modeling;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.ModelFiles;

/// <summary>
/// Reads llama2.c "v0" checkpoints (<c>run.c</c>'s format): a 7 x int32 header (dim, hidden_dim, n_layers, n_heads,
/// n_kv_heads, vocab_size, seq_len) followed by fp32 arrays, mapped to Hugging Face names with q/k rows permuted from
/// the interleaved-pair RoPE layout to the rotate_half layout.
/// </summary>
internal static class Llama2cFile
{
    private const int HeaderBytes = 7 * sizeof(int);

    /// <summary>The parsed header.</summary>
    internal readonly record struct Header(int Dim, int HiddenDim, int Layers, int Heads, int KvHeads, int Vocab, bool Tied, int SeqLen)
    {
        public int HeadDim => Dim / Heads;
        public int KvDim => KvHeads * HeadDim;
    }

    /// <summary>Loads the checkpoint at <paramref name="binPath"/> as a config and float32 weights keyed by Hugging Face name.</summary>
    /// <exception cref="InvalidDataException">The header is implausible or the file size does not match it exactly.</exception>
    public static (LlamaConfig Config, Dictionary<string, Tensor> Weights) Load(string binPath)
    {
        ArgumentNullException.ThrowIfNull(binPath);
        if (!File.Exists(binPath)) throw new FileNotFoundException($"llama2.c checkpoint '{binPath}' does not exist.", binPath);
        if (!BitConverter.IsLittleEndian)
            throw new PlatformNotSupportedException("llama2.c checkpoints are little-endian; big-endian hosts are not supported.");

        using var stream = new FileStream(binPath, FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize: 1 << 16);
        if (stream.Length < HeaderBytes)
            throw Invalid(binPath, $"the file is {stream.Length} bytes, shorter than the {HeaderBytes}-byte header.");
        Span<byte> raw = stackalloc byte[HeaderBytes];
        stream.ReadExactly(raw);
        Header h = ParseHeader(raw, binPath);
        long expected = ExpectedFileLength(h, binPath);
        if (stream.Length != expected)
            throw Invalid(binPath, $"the header (dim {h.Dim}, hidden_dim {h.HiddenDim}, n_layers {h.Layers}, n_heads {h.Heads}, n_kv_heads {h.KvHeads}, vocab_size {h.Vocab}{(h.Tied ? "" : " untied")}, seq_len {h.SeqLen}) implies {expected} bytes but the file has {stream.Length}{(stream.Length < expected ? " (truncated)" : "")}.");

        LlamaConfig config = ToConfig(h, binPath);
        var weights = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        try
        {
            ReadAll(stream, h, weights, binPath);
            ModelWeights.ValidateStrict(config, weights, binPath);
            return (config, weights);
        }
        catch
        {
            foreach (Tensor t in weights.Values) t.Dispose();
            throw;
        }
    }

    /// <summary>Parses and bounds-checks the header.</summary>
    internal static Header ParseHeader(ReadOnlySpan<byte> raw, string source)
    {
        // llama2.c's newer exports (export.py --version 1/2) start with the magic "ak42".
        if (raw.Length >= 4 && BinaryPrimitives.ReadUInt32LittleEndian(raw) == 0x616b3432)
            throw Invalid(source, $"this is a llama2.c export of version {(raw.Length >= 8 ? BinaryPrimitives.ReadInt32LittleEndian(raw[4..]) : -1)}; " +
                "only the legacy v0 format (export.py --version 0) is supported. Convert it, or use a Hugging Face folder.");
        var f = new int[7];
        for (int i = 0; i < f.Length; i++) f[i] = BinaryPrimitives.ReadInt32LittleEndian(raw[(i * 4)..]);
        int dim = f[0], hidden = f[1], layers = f[2], heads = f[3], kvHeads = f[4], vocab = f[5], seq = f[6];
        void Require(bool ok, string message)
        {
            if (!ok) throw Invalid(source, "implausible header: " + message);
        }
        Require(dim is > 0 and <= 1 << 16, $"dim {dim} must be in 1..65536.");
        Require(hidden is > 0 and <= 1 << 18, $"hidden_dim {hidden} must be in 1..262144.");
        Require(layers is > 0 and <= 1024, $"n_layers {layers} must be in 1..1024.");
        Require(heads is > 0 and <= 1024, $"n_heads {heads} must be in 1..1024.");
        Require(kvHeads > 0 && kvHeads <= heads && heads % kvHeads == 0, $"n_kv_heads {kvHeads} must divide n_heads {heads}.");
        Require(dim % heads == 0 && dim / heads % 2 == 0, $"dim {dim} must be an even multiple of n_heads {heads} (even head size).");
        Require(vocab != 0 && vocab != int.MinValue && Math.Abs(vocab) <= 1 << 22, $"vocab_size {vocab} must be non-zero with magnitude at most 4194304.");
        Require(seq is > 0 and <= 1 << 24, $"seq_len {seq} must be in 1..16777216.");
        return new Header(dim, hidden, layers, heads, kvHeads, Math.Abs(vocab), vocab > 0, seq);
    }

    /// <summary>The exact file length the header implies, in checked 64-bit arithmetic.</summary>
    internal static long ExpectedFileLength(Header h, string source)
    {
        try
        {
            checked
            {
                long d = h.Dim, l = h.Layers, kv = h.KvDim, i = h.HiddenDim, v = h.Vocab;
                long floats = v * d                        // token_embedding
                    + l * d                                // rms_att
                    + l * d * d + 2 * l * kv * d + l * d * d // wq, wk, wv, wo
                    + l * d                                // rms_ffn
                    + 3 * l * i * d                        // w1, w2, w3
                    + d                                    // rms_final
                    + (long)h.SeqLen * h.HeadDim           // freq_cis_real + freq_cis_imag, seq x head_dim/2 each
                    + (h.Tied ? 0 : v * d);                // wcls
                return HeaderBytes + floats * sizeof(float);
            }
        }
        catch (OverflowException e)
        {
            throw new InvalidDataException($"{source}: implausible llama2.c header: the implied file size overflows.", e);
        }
    }

    private static LlamaConfig ToConfig(Header h, string source)
    {
        try
        {
            return new LlamaConfig
            {
                Architecture = ModelArchitecture.Llama,
                HiddenSize = h.Dim,
                IntermediateSize = h.HiddenDim,
                NumHiddenLayers = h.Layers,
                NumAttentionHeads = h.Heads,
                NumKeyValueHeads = h.KvHeads,
                HeadDim = h.HeadDim,
                VocabSize = h.Vocab,
                MaxPositionEmbeddings = h.SeqLen,
                RmsNormEps = 1e-5,
                RopeTheta = 10000,
                TieWordEmbeddings = h.Tied,
                BosTokenId = 1,
                EosTokenId = 2,
                EosTokenIds = [2],
            }.Validate();
        }
        catch (InvalidDataException e)
        {
            throw Invalid(source, e.Message);
        }
    }

    private static void ReadAll(Stream s, Header h, Dictionary<string, Tensor> w, string source)
    {
        int d = h.Dim, l = h.Layers, kv = h.KvDim, hid = h.HiddenDim;
        w["model.embed_tokens.weight"] = ReadFloats(s, [h.Vocab, d], source);
        ReadPerLayer(s, w, l, "input_layernorm.weight", [d], source);
        ReadPerLayer(s, w, l, "self_attn.q_proj.weight", [d, d], source, t => PermuteRope(t, h.Heads, h.HeadDim, d));
        ReadPerLayer(s, w, l, "self_attn.k_proj.weight", [kv, d], source, t => PermuteRope(t, h.KvHeads, h.HeadDim, d));
        ReadPerLayer(s, w, l, "self_attn.v_proj.weight", [kv, d], source);
        ReadPerLayer(s, w, l, "self_attn.o_proj.weight", [d, d], source);
        ReadPerLayer(s, w, l, "post_attention_layernorm.weight", [d], source);
        ReadPerLayer(s, w, l, "mlp.gate_proj.weight", [hid, d], source);   // w1
        ReadPerLayer(s, w, l, "mlp.down_proj.weight", [d, hid], source);   // w2
        ReadPerLayer(s, w, l, "mlp.up_proj.weight", [hid, d], source);     // w3
        w["model.norm.weight"] = ReadFloats(s, [d], source);
        s.Seek(2L * h.SeqLen * (h.HeadDim / 2) * sizeof(float), SeekOrigin.Current); // freq_cis_real, freq_cis_imag: unused
        if (!h.Tied) w["lm_head.weight"] = ReadFloats(s, [h.Vocab, d], source);
    }

    private static void ReadPerLayer(Stream s, Dictionary<string, Tensor> w, int layers, string suffix, long[] shape, string source,
        Func<Tensor, Tensor>? transform = null)
    {
        for (int layer = 0; layer < layers; layer++)
        {
            Tensor t = ReadFloats(s, shape, source);
            if (transform is not null)
            {
                Tensor original = t;
                try
                {
                    using var scope = NewDisposeScope();
                    t = transform(original).MoveToOuterDisposeScope();
                }
                finally
                {
                    original.Dispose();
                }
            }
            w[$"model.layers.{layer}.{suffix}"] = t;
        }
    }

    /// <summary>llama2.c interleaved-pair rows to Hugging Face rotate_half rows.</summary>
    internal static Tensor PermuteRope(Tensor w, int heads, int headDim, int dim) =>
        w.view(heads, headDim / 2, 2, dim).transpose(1, 2).reshape(heads * headDim, dim).contiguous();

    private static Tensor ReadFloats(Stream s, long[] shape, string source)
    {
        long count = shape.Aggregate(1L, (a, b) => a * b);
        // The file length was matched exactly against the header, so this size is bounded by the file.
        if (count * sizeof(float) > Array.MaxLength)
            throw Invalid(source, $"an array of {count} floats is larger than one read of this loader supports.");
        byte[] buffer = GC.AllocateUninitializedArray<byte>((int)(count * sizeof(float)));
        try
        {
            s.ReadExactly(buffer);
        }
        catch (EndOfStreamException e)
        {
            throw new InvalidDataException($"{source}: unexpected end of file.", e);
        }
        Tensor t = empty(shape, ScalarType.Float32);
        t.bytes = buffer;
        return t;
    }

    private static InvalidDataException Invalid(string source, string message) => new($"{source}: invalid llama2.c checkpoint: {message}");
}
