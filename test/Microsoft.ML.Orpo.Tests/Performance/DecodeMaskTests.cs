using Microsoft.ML.Orpo.Generation;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Tests.Performance;

/// <summary>The decode loop's once-built padding mask must equal the per-token causal mask it replaces.</summary>
[TestClass]
public sealed class DecodeMaskTests
{
    [TestMethod]
    public void KeyPaddingViewEqualsCausalMaskForEveryDecodeStep()
    {
        using var scope = NewDisposeScope();
        // Two left-padded rows (2 and 0 pads), 4 prompt tokens, 3 decode steps.
        var keep = tensor(new[] { false, false, true, true, true, true, true, true, true, true, true, true, true, true }).view(2, 7);
        var once = AttentionMasks.KeyPadding(keep, ScalarType.Float32);
        for (int length = 5; length <= 7; length++)
        {
            var expected = AttentionMasks.Causal(keep.narrow(1, 0, length), 1, ScalarType.Float32);
            var actual = once.narrow(3, 0, length);
            CollectionAssert.AreEqual(expected.shape, actual.shape);
            Assert.IsTrue(expected.eq(actual).all().item<bool>(), $"mask for {length} attended tokens");
        }
    }
}
