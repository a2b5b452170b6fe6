using Microsoft.ML.Orpo.Tests.Infrastructure;
using Microsoft.ML.Orpo.Tests.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Tests.Ops;

/// <summary>The one kernel switch: its values, its scopes, and that the operations obey it.</summary>
[TestClass]
public sealed class KernelPolicyTests
{
    [TestMethod]
    public void ParsesTheEnvironmentVariable()
    {
        Assert.AreEqual(new KernelPolicy(), KernelPolicy.Parse(null));
        Assert.AreEqual(new KernelPolicy(), KernelPolicy.Parse(" auto "));
        Assert.AreEqual(KernelMode.ReferenceOnly, KernelPolicy.Parse("reference").Mode);
        Assert.AreEqual(KernelMode.ReferenceOnly, KernelPolicy.Parse("ReferenceOnly").Mode);
        Assert.AreEqual(CpuKernels.Attention | CpuKernels.SwiGlu, KernelPolicy.Parse("-Attention, -swiglu").Disabled);
        var e = Assert.ThrowsExactly<ArgumentException>(() => KernelPolicy.Parse("fast"));
        StringAssert.Contains(e.Message, "ORPO_KERNELS='fast'");
        StringAssert.Contains(e.Message, "MatrixProduct");
    }

    [TestMethod]
    public void ScopesNestAndRestore()
    {
        var outer = KernelPolicy.Current;
        using (KernelPolicy.Use(new KernelPolicy()))
        {
            Assert.IsTrue(KernelPolicy.Allows(CpuKernels.RmsNorm));
            using (KernelPolicy.Without(CpuKernels.RmsNorm))
            {
                Assert.IsFalse(KernelPolicy.Allows(CpuKernels.RmsNorm));
                Assert.IsTrue(KernelPolicy.Allows(CpuKernels.Attention));
                using (KernelPolicy.ReferenceOnly())
                {
                    Assert.IsFalse(KernelPolicy.Allows(CpuKernels.Attention));
                    Assert.IsFalse(PackedGemm.IsEnabled);
                }
                Assert.IsTrue(KernelPolicy.Allows(CpuKernels.Attention));
            }
            Assert.IsTrue(KernelPolicy.Allows(CpuKernels.RmsNorm));
        }
        Assert.AreEqual(outer, KernelPolicy.Current);
    }

    [TestMethod]
    public void AScopeCoversTheWorkItStarts()
    {
        using var reference = KernelPolicy.ReferenceOnly();
        bool seenInTask = Task.Run(() => KernelPolicy.Allows(CpuKernels.RmsNorm)).Result;
        Assert.IsFalse(seenInTask, "a task started inside the scope sees its policy");
    }

    [TestMethod]
    public void ReferenceOnlyModelForwardRunsNoKernelProduct()
    {
        using var scope = NewDisposeScope();
        using var model = TrainingFixtures.LoadModel();
        var ids = randint(3, 512, new long[] { 4, 40 });
        long before = PackedGemm.ProductsOnThisThread;
        Tensor reference;
        using (KernelPolicy.ReferenceOnly()) reference = model.Network.Forward(ids);
        Assert.AreEqual(before, PackedGemm.ProductsOnThisThread, "no packed GEMM under ReferenceOnly");
        // Under Auto the same forward takes the kernels (stories260K: small-head attention, fused RMSNorm, SwiGLU)
        // and agrees with the reference to float32 rounding.
        using (KernelPolicy.Use(new KernelPolicy()))
        {
            var auto = model.Network.Forward(ids);
            double error = (auto - reference).abs().max().ToDouble(), size = reference.abs().max().ToDouble();
            Assert.IsLessThan(1e-4 * size, error);
            Assert.IsGreaterThan(0.0, error, "different arithmetic: the kernels really ran");
        }
    }
}
