using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Tests.Infrastructure;

/// <summary>Checks that a hand-written kernel splits its work so that results do not depend on the thread count.</summary>
internal static class ThreadCounts
{
    /// <summary><paramref name="run"/> (outputs and gradients) with 1 and with 3 intra-op threads must agree bit for bit.</summary>
    public static void AssertSameResults(Func<Tensor[]> run)
    {
        int threads = get_num_threads();
        try
        {
            set_num_threads(1);
            var one = run();
            set_num_threads(3);
            var three = run();
            for (int i = 0; i < one.Length; i++) Assert.IsTrue(one[i].eq(three[i]).all().ToBoolean(), $"result {i} differs between 1 and 3 threads");
        }
        finally
        {
            set_num_threads(threads);
        }
    }
}
