using Microsoft.ML.Orpo.Modeling;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Tests.Native;

/// <summary>
/// The code that leans on TorchSharp's internals (<see cref="HostTensors"/>' hand-typed THSTensor_new,
/// <see cref="CustomBackward"/>'s private fields) runs only on the verified TorchSharp and after its self-test
/// (<see cref="NativeAbiGuard"/>); elsewhere the plain path gives the same results and says so once.
/// </summary>
[TestClass]
[DoNotParallelize]
public sealed class NativeAbiGuardTests
{
    private const long Width = 512; // 512 x 512 floats: 1 MiB, the smallest block HostTensors serves

    [TestMethod]
    public void TheLoadedTorchSharpIsVerifiedAndEveryGuardIsOn()
    {
        var assembly = typeof(torch).Assembly;
        Console.WriteLine($"TorchSharp {NativeAbiGuard.TorchSharpVersion} (assembly version {assembly.GetName().Version})");
        CollectionAssert.Contains(NativeAbiGuard.VerifiedTorchSharpVersions.ToList(), NativeAbiGuard.TorchSharpVersion,
            "a new TorchSharp: verify THSTensor_new's signature and AutogradContext._node / Node._outputCache, then add its version");
        Assert.IsNull(CustomBackward.FallbackReason);
        Assert.IsNull(HostTensors.FallbackReason, "the self-test passes (on Linux; elsewhere HostTensors is not used)");
        Assert.AreEqual(OperatingSystem.IsLinux(), HostTensors.Serves(HostTensors.MinBytes));
        Assert.IsEmpty(NativeAbiGuard.FallbackReasons().ToList());
        Assert.IsNull(new NativeAbiGuard("test", "nothing", _ => null).Evaluate(NativeAbiGuard.TorchSharpVersion));
        StringAssert.Contains(new NativeAbiGuard("test", "nothing", _ => null).Evaluate("0.107.1"), "TorchSharp 0.107.1");
    }

    [TestMethod]
    public void AnUnverifiedTorchSharpTakesThePlainPathWithIdenticalResultsAndSaysSoOnce()
    {
        var expected = Step();
        bool releasedBefore = FirstNodesOutputCopyIsReleased();
        Assert.IsTrue(releasedBefore, "on the verified TorchSharp the first node's copy of its output is swapped for a stand-in");

        var lines = CaptureLog(() =>
        {
            using var simulated = NativeAbiGuard.SimulateTorchSharpVersion("0.108.0");
            Assert.IsFalse(HostTensors.Serves(HostTensors.MinBytes));
            StringAssert.Contains(HostTensors.FallbackReason, "0.108.0");
            StringAssert.Contains(CustomBackward.FallbackReason, "0.108.0");
            Assert.HasCount(2, NativeAbiGuard.FallbackReasons().ToList());
            using (NewDisposeScope())
                for (int i = 0; i < 4; i++)
                    Assert.AreEqual(0, Address(HostTensors.Empty(Width, Width)) % 64, "libtorch's allocator aligns to 64 bytes, malloc to 16");
            Assert.IsFalse(FirstNodesOutputCopyIsReleased(), "without the reflection TorchSharp's copy stays");
            AssertIdentical(expected, Step());
            AssertIdentical(expected, Step());
        });

        Assert.HasCount(2, lines, string.Join("\n", lines));
        Assert.IsTrue(lines.All(l => l.StartsWith(NativeAbiGuard.LogPrefix, StringComparison.Ordinal) && l.Contains("TorchSharp 0.108.0")));
        Assert.AreEqual(1, lines.Count(l => l.Contains("HostTensors is off") && l.Contains("libtorch's allocator")), string.Join("\n", lines));
        Assert.AreEqual(1, lines.Count(l => l.Contains("CustomBackward") && l.Contains("until the graph is released")), string.Join("\n", lines));
        Assert.AreEqual(OperatingSystem.IsLinux(), HostTensors.Serves(HostTensors.MinBytes), "the simulation ended");
        Assert.IsTrue(FirstNodesOutputCopyIsReleased());
    }

    [TestMethod]
    public void AFailedSelfTestTakesThePlainPathAndSaysSoOnce()
    {
        if (!OperatingSystem.IsLinux()) Assert.Inconclusive("HostTensors (and its self-test) runs on Linux only.");
        var expected = Step();
        var lines = CaptureLog(() =>
        {
            using var simulated = NativeAbiGuard.SimulateFailedSelfTests();
            Assert.IsFalse(HostTensors.Serves(HostTensors.MinBytes));
            Assert.IsFalse(HostTensors.Serves(HostTensors.MinBytes));
            Assert.IsNull(CustomBackward.FallbackReason, "its check reads back no values");
            AssertIdentical(expected, Step());
        });
        Assert.HasCount(1, lines);
        StringAssert.StartsWith(lines[0], NativeAbiGuard.LogPrefix + "HostTensors is off: its self-test failed on TorchSharp " + NativeAbiGuard.TorchSharpVersion);
        StringAssert.Contains(lines[0], "element 0 read back as -0.5, expected -1.5");
        Assert.IsTrue(HostTensors.Serves(HostTensors.MinBytes), "the simulation ended");
    }

    [TestMethod]
    public void SimulationsDoNotNest()
    {
        using var outer = NativeAbiGuard.SimulateTorchSharpVersion("0.108.0");
        Assert.ThrowsExactly<InvalidOperationException>(() => NativeAbiGuard.SimulateFailedSelfTests());
    }

    private static unsafe nint Address(Tensor t)
    {
        fixed (float* data = CpuKernel.Floats(t)) return (nint)data;
    }

    private static List<string> CaptureLog(Action action)
    {
        var lines = new List<string>();
        var previous = NativeAbiGuard.Log;
        NativeAbiGuard.Log = line => { lock (lines) lines.Add(line); };
        try
        {
            action();
        }
        finally
        {
            NativeAbiGuard.Log = previous;
        }
        return lines;
    }

    /// <summary>
    /// Loss and gradients of a norm -> linear -> norm step whose kernels' outputs and intermediate gradients are
    /// HostTensors-sized. Where PackedLinear does not apply (no AVX-512) the linear is a row scaling instead, so that no
    /// product goes to a BLAS whose rounding may depend on the operands' alignment.
    /// </summary>
    private static Tensor[] Step()
    {
        using var scope = NewDisposeScope();
        manual_seed(17);
        var x = randn(Width, Width).requires_grad_(true);
        var norm = (randn(Width) * 0.5 + 1).requires_grad_(true);
        var weight = (randn(Width, Width) * 0.05).requires_grad_(true);
        var h = FusedRmsNorm.Apply(x, norm, 1e-5);
        var y = PackedLinear.TryApply(h, weight, null) ?? h * weight[0];
        var z = FusedRmsNorm.Apply(y * 2, norm, 1e-5);
        var loss = (z * z).mean();
        loss.backward();
        return new[] { loss, x.grad!, norm.grad!, weight.grad! }.Select(t => t.detach().clone().MoveToOuterDisposeScope()).ToArray();
    }

    private static void AssertIdentical(Tensor[] expected, Tensor[] actual)
    {
        string[] names = ["loss", "input gradient", "norm weight gradient", "linear weight gradient"];
        for (int i = 0; i < expected.Length; i++)
        {
            CollectionAssert.AreEqual(expected[i].shape, actual[i].shape, names[i]);
            Assert.IsTrue(expected[i].bytes.SequenceEqual(actual[i].bytes), $"{names[i]} differs bit for bit");
        }
    }

    /// <summary>Whether a custom node's copy of its output is swapped for a stand-in once the next custom node starts.</summary>
    private static bool FirstNodesOutputCopyIsReleased()
    {
        using var scope = NewDisposeScope();
        var first = Recording.apply(ones(4, 8).requires_grad_(true));
        var firstContext = Recording.Last!;
        var second = Recording.apply(ones(4, 8).requires_grad_(true)); // starting it releases the first node's copy
        var cache = CustomBackward.OutputCache(firstContext);
        Assert.IsNotNull(cache, "TorchSharp keeps a copy of each output");
        bool standIn = cache[0].stride().All(s => s == 0);
        (first + second).sum().backward(); // the node still works either way
        return standIn;
    }

    /// <summary>y = 3x; remembers its context.</summary>
    private sealed class Recording : autograd.SingleTensorFunction<Recording>
    {
        public static autograd.AutogradContext? Last;

        public override string Name => "Recording";

        public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
        {
            CustomBackward.Starting(ctx);
            Last = ctx;
            return (Tensor)vars[0] * 3;
        }

        public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor grad_output) =>
            CustomBackward.Run(ctx, grad_output, _ => new List<Tensor> { grad_output * 3 });
    }
}
