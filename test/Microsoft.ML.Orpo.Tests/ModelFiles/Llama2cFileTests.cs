using System.Buffers.Binary;
using Microsoft.ML.Orpo.ModelFiles;
using Microsoft.ML.Orpo.Modeling;
using Microsoft.ML.Orpo.Tests.Infrastructure;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Tests.ModelFiles;

[TestClass]
public sealed class Llama2cFileTests
{
    [TestMethod]
    public void Stories260KBinMatchesHuggingFaceCopyExactly()
    {
        using var scope = NewDisposeScope();
        var (binConfig, bin) = Llama2cFile.Load(TestAssets.Stories260KBin);
        var (hfConfig, hf) = HuggingFaceFolder.Load(TestAssets.Stories260KHf);

        Assert.AreEqual(47, bin.Count);
        CollectionAssert.AreEquivalent(hf.Keys.ToList(), bin.Keys.ToList());
        CollectionAssert.AreEqual(
            ModelWeights.ExpectedShapes(binConfig).Select(s => s.ToString()).ToArray(),
            ModelWeights.ExpectedShapes(hfConfig).Select(s => s.ToString()).ToArray());
        foreach (WeightShape e in ModelWeights.ExpectedShapes(binConfig))
        {
            CollectionAssert.AreEqual(e.Shape, bin[e.Name].shape, e.Name);
            double maxDiff = (bin[e.Name] - hf[e.Name]).abs().max().item<float>();
            Assert.AreEqual(0.0, maxDiff, $"{e.Name} differs by {maxDiff}");
        }

        // Config fields that come from the .bin header and llama2.c conventions.
        foreach (var (a, b) in new (object?, object?)[]
        {
            (binConfig.HiddenSize, hfConfig.HiddenSize), (binConfig.IntermediateSize, hfConfig.IntermediateSize),
            (binConfig.NumHiddenLayers, hfConfig.NumHiddenLayers), (binConfig.NumAttentionHeads, hfConfig.NumAttentionHeads),
            (binConfig.NumKeyValueHeads, hfConfig.NumKeyValueHeads), (binConfig.HeadDim, hfConfig.HeadDim),
            (binConfig.VocabSize, hfConfig.VocabSize), (binConfig.MaxPositionEmbeddings, hfConfig.MaxPositionEmbeddings),
            (binConfig.RmsNormEps, hfConfig.RmsNormEps), (binConfig.RopeTheta, hfConfig.RopeTheta),
            (binConfig.TieWordEmbeddings, hfConfig.TieWordEmbeddings), (binConfig.BosTokenId, hfConfig.BosTokenId),
            (binConfig.EosTokenId, hfConfig.EosTokenId),
        })
            Assert.AreEqual(b, a);
    }

    [TestMethod]
    public void RopePermutationMovesEvenRowsToFirstHalfOfEachHead()
    {
        using var scope = NewDisposeScope();
        int heads = 3, headDim = 6, dim = 5;
        Tensor w = arange(heads * headDim * dim, dtype: ScalarType.Float32).reshape(heads * headDim, dim);
        Tensor p = Llama2cFile.PermuteRope(w, heads, headDim, dim);
        for (int h = 0; h < heads; h++)
            for (int j = 0; j < headDim / 2; j++)
            {
                Assert.IsTrue(p[h * headDim + j].eq(w[h * headDim + 2 * j]).all().item<bool>(), $"head {h} pair {j} real part");
                Assert.IsTrue(p[h * headDim + headDim / 2 + j].eq(w[h * headDim + 2 * j + 1]).all().item<bool>(), $"head {h} pair {j} imaginary part");
            }
    }

    [TestMethod]
    public void UntiedCheckpointReadsClassifierAndEveryArrayInOrder()
    {
        using var scope = NewDisposeScope();
        // dim 4, hidden 6, 2 layers, 2 heads, 1 kv head (head_dim 2), vocab -5 (untied), seq 3.
        int d = 4, hid = 6, l = 2, kv = 2, v = 5, seq = 3;
        int[] sizes = [v * d, l * d, l * d * d, l * kv * d, l * kv * d, l * d * d, l * d, l * hid * d, l * d * hid, l * hid * d, d, seq, seq, v * d];
        string[] names = ["emb", "rms_att", "wq", "wk", "wv", "wo", "rms_ffn", "w1", "w2", "w3", "rms_final", "fr", "fi", "wcls"];
        var values = new List<float>();
        for (int a = 0; a < sizes.Length; a++)
            for (int i = 0; i < sizes[a]; i++) values.Add(a * 1000 + i);
        string path = WriteBin([d, hid, l, 2, 1, -v, seq], values.ToArray());

        var (config, w) = Llama2cFile.Load(path);
        Assert.IsFalse(config.TieWordEmbeddings);
        Assert.AreEqual(5, config.VocabSize);
        Assert.AreEqual(1, config.NumKeyValueHeads);
        Assert.AreEqual(3, config.MaxPositionEmbeddings);
        Assert.AreEqual(ModelWeights.ExpectedShapes(config).Count, w.Count);
        float First(string key) => w[key].flatten()[0].item<float>();
        Assert.AreEqual(0f, First("model.embed_tokens.weight"));
        Assert.AreEqual(1000f + d, First("model.layers.1.input_layernorm.weight"));
        Assert.AreEqual(3000f + kv * d, First("model.layers.1.self_attn.k_proj.weight"));
        Assert.AreEqual(4000f, First("model.layers.0.self_attn.v_proj.weight"));
        Assert.AreEqual(5000f + d * d, First("model.layers.1.self_attn.o_proj.weight"));
        Assert.AreEqual(6000f, First("model.layers.0.post_attention_layernorm.weight"));
        Assert.AreEqual(7000f, First("model.layers.0.mlp.gate_proj.weight"));
        Assert.AreEqual(8000f + d * hid, First("model.layers.1.mlp.down_proj.weight"));
        Assert.AreEqual(9000f, First("model.layers.0.mlp.up_proj.weight"));
        Assert.AreEqual(10000f, First("model.norm.weight"));
        Assert.AreEqual(13000f, First("lm_head.weight"), "wcls follows the skipped freq_cis arrays");
        Assert.AreEqual(13000f + v * d - 1, w["lm_head.weight"][v - 1, d - 1].item<float>());
        // q rows permuted: with head_dim 2 each head is one (real, imag) pair, so the layout is unchanged.
        Assert.AreEqual(2000f + d, w["model.layers.0.self_attn.q_proj.weight"][1, 0].item<float>());
        Assert.AreEqual(names.Length, sizes.Length);
    }

    [TestMethod]
    public void TruncatedFileIsRejected()
    {
        byte[] bytes = File.ReadAllBytes(TestAssets.Stories260KBin);
        AssertRejected(bytes[..^100], "truncated", "1056540");
        AssertRejected(bytes[..20], "shorter than the 28-byte header");
        AssertRejected([.. bytes, 0, 0, 0, 0], "1056544");
    }

    [TestMethod]
    public void ImplausibleHeadersAreRejectedBeforeAllocating()
    {
        AssertRejected(Header(-64, 172, 5, 8, 4, 512, 512), "dim -64");
        AssertRejected(Header(64, 0, 5, 8, 4, 512, 512), "hidden_dim 0");
        AssertRejected(Header(64, 172, -5, 8, 4, 512, 512), "n_layers -5");
        AssertRejected(Header(64, 172, 5, 8, 3, 512, 512), "n_kv_heads 3");
        AssertRejected(Header(64, 172, 5, 8, 16, 512, 512), "n_kv_heads 16");
        AssertRejected(Header(64, 172, 5, 6, 3, 512, 512), "even multiple");
        AssertRejected(Header(64, 172, 5, 8, 4, 0, 512), "vocab_size 0");
        AssertRejected(Header(64, 172, 5, 8, 4, int.MinValue, 512), "vocab_size");
        AssertRejected(Header(64, 172, 5, 8, 4, 512, -1), "seq_len -1");
        AssertRejected(Header(int.MaxValue, 172, 5, 8, 4, 512, 512), "dim 2147483647");
        // Every field at its bound: the implied size (terabytes) is computed without overflow and does not match.
        AssertRejected(Header(1 << 16, 1 << 18, 1024, 1024, 1024, -(1 << 22), 1 << 24), "implies 283678832066588 bytes", "file has 28");
    }

    private static byte[] Header(params int[] fields)
    {
        var bytes = new byte[28];
        for (int i = 0; i < 7; i++) BinaryPrimitives.WriteInt32LittleEndian(bytes.AsSpan(i * 4), fields[i]);
        return bytes;
    }

    private static string WriteBin(int[] header, float[] values)
    {
        var bytes = new byte[28 + values.Length * 4];
        Header(header).CopyTo(bytes, 0);
        for (int i = 0; i < values.Length; i++) BinaryPrimitives.WriteSingleLittleEndian(bytes.AsSpan(28 + i * 4), values[i]);
        string path = Path.Combine(TestAssets.NewTempDirectory(), "model.bin");
        File.WriteAllBytes(path, bytes);
        return path;
    }

    private static void AssertRejected(byte[] file, params string[] fragments)
    {
        string path = Path.Combine(TestAssets.NewTempDirectory(), "bad.bin");
        File.WriteAllBytes(path, file);
        using var scope = NewDisposeScope();
        var e = Assert.ThrowsExactly<InvalidDataException>(() => Llama2cFile.Load(path));
        StringAssert.Contains(e.Message, path);
        foreach (string f in fragments) StringAssert.Contains(e.Message, f);
    }

    [TestMethod]
    public void NewerLlama2cExportFormatIsNamed()
    {
        string path = Path.Combine(TestAssets.NewTempDirectory("llama2c"), "v1.bin");
        var bytes = new byte[256];
        BitConverter.GetBytes(0x616b3432u).CopyTo(bytes, 0);
        BitConverter.GetBytes(1).CopyTo(bytes, 4);
        File.WriteAllBytes(path, bytes);
        var e = Assert.ThrowsExactly<InvalidDataException>(() => Llama2cFile.Load(path));
        StringAssert.Contains(e.Message, "version 1");
        StringAssert.Contains(e.Message, "legacy v0");
    }
}
