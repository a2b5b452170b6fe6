using Microsoft.ML.Orpo.ModelFiles;
using Microsoft.ML.Orpo.Modeling;
using Microsoft.ML.Orpo.Tests.Infrastructure;

namespace Microsoft.ML.Orpo.Tests.Reliability;

/// <summary>Small models shared by the reliability tests.</summary>
internal static class ReliabilityFixtures
{
    /// <summary>A Hugging Face folder with random weights, the given vocabulary, and stories260K's 512-piece tokenizer.</summary>
    public static string TinyModelFolder(int vocabulary, int hidden = 16, int layers = 1)
    {
        var config = new LlamaConfig
        {
            HiddenSize = hidden, IntermediateSize = 2 * hidden, NumHiddenLayers = layers, NumAttentionHeads = 2, NumKeyValueHeads = 1, HeadDim = hidden / 2,
            VocabSize = vocabulary, MaxPositionEmbeddings = 256, RmsNormEps = 1e-5, TieWordEmbeddings = true, BosTokenId = 1, EosTokenId = 2,
            EosTokenIds = [2],
        }.Validate();
        var weights = ModelFiles.ModelFileTestData.RandomWeights(config, 5);
        try
        {
            string dir = TestAssets.NewTempDirectory($"orpo-vocab{vocabulary}");
            HuggingFaceFolder.Save(dir, config, weights, new Dictionary<string, byte[]> { ["tokenizer.model"] = File.ReadAllBytes(TestAssets.Stories260KTokenizer) });
            return dir;
        }
        finally
        {
            foreach (var t in weights.Values) t.Dispose();
        }
    }
}
