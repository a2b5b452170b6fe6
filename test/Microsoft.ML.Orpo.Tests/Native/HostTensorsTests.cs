using Microsoft.ML.Orpo.Modeling;
using Microsoft.ML.Orpo.Tests.Infrastructure;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Tests.Native;

/// <summary>The kernels' output tensors over C-library memory (<see cref="HostTensors"/>).</summary>
[TestClass]
[DoNotParallelize]
public sealed class HostTensorsTests
{
    private const long FourMiBOfFloats = 1L << 20;

    [TestMethod]
    public void TensorsHaveTheShapeTypeAndContentsAsked()
    {
        if (OperatingSystem.IsLinux())
            Assert.IsTrue(HostTensors.Serves(HostTensors.MinBytes), "malloc, calloc, free and LibTorchSharp's THSTensor_new are bound");
        Assert.IsFalse(HostTensors.Serves(HostTensors.MinBytes - 1), "smaller blocks stay with libtorch");
        using var scope = NewDisposeScope();
        var zeros = HostTensors.Zeros(3, FourMiBOfFloats / 3 + 1);
        CollectionAssert.AreEqual(new[] { 3, FourMiBOfFloats / 3 + 1 }, zeros.shape);
        Assert.AreEqual(ScalarType.Float32, zeros.dtype);
        Assert.AreEqual(DeviceType.CPU, zeros.device_type);
        Assert.IsTrue(zeros.is_contiguous());
        Assert.AreEqual(0.0, zeros.abs().max().ToDouble(), "calloc'd memory reads as zeros");

        var source = randn(2, 600, 1000);
        var copy = HostTensors.EmptyLike(source).copy_(source);
        Assert.IsTrue(copy.eq(source).all().ToBoolean());
        // A view outlives the handle it came from: the block is freed with the last reference, not the first.
        var row = copy.select(0, 1);
        copy.Dispose();
        GC.Collect();
        Assert.IsTrue(row.eq(source.select(0, 1)).all().ToBoolean());

        // Small tensors and other types stay with libtorch, same contract.
        Assert.AreEqual(0.0, HostTensors.Zeros(4, 5).abs().max().ToDouble());
        var doubles = HostTensors.ZerosLike(source.to_type(ScalarType.Float64));
        Assert.AreEqual(ScalarType.Float64, doubles.dtype);
        Assert.AreEqual(0.0, doubles.abs().max().ToDouble());
    }

    [TestMethod]
    public void FreedBlocksServeTheNextTensorsOfTheirSize()
    {
        // The reason HostTensors exists. A layer's temporary freed below the activation it keeps leaves a hole; under
        // libtorch's posix_memalign(64), glibc (2.36) cannot fit the next layer's same-sized temporary into it, so
        // every layer lands above the last one's hole and resident memory climbs ~1.75x as fast as the kept tensors.
        if (!HostTensors.Serves(FourMiBOfFloats * sizeof(float))) Assert.Inconclusive("HostTensors uses libtorch's allocator on this platform.");
        const int layers = 32;
        const long block = FourMiBOfFloats * sizeof(float);
        using var scope = NewDisposeScope();
        HostTensors.Empty(4 * FourMiBOfFloats).Dispose(); // raises glibc's mmap threshold: the 4 MiB blocks come from the heap
        long before = ResidentMemory.Bytes();
        for (int i = 0; i < layers; i++)
        {
            var temporary = HostTensors.Empty(FourMiBOfFloats).fill_(1); // in-place ops return the same tensor object
            HostTensors.Empty(FourMiBOfFloats).fill_(2);                   // the activation the layer keeps (in the scope)
            temporary.Dispose();
        }
        long growth = ResidentMemory.Bytes() - before;
        Assert.IsLessThan(layers * block * 3 / 2, growth,
            $"resident memory grew {growth >> 20} MiB for {layers} kept 4 MiB tensors ({layers * block >> 20} MiB): freed temporaries were not reused");
    }

    [TestMethod]
    public void RepeatedTensorsDoNotGrowMemory()
    {
        using (var warmScope = NewDisposeScope()) HostTensors.Empty(4 * FourMiBOfFloats).fill_(1);
        long before = ResidentMemory.BytesAfterCollection(), peak = before;
        for (int i = 0; i < 200; i++)
        {
            using var scope = NewDisposeScope();
            var a = HostTensors.Empty(FourMiBOfFloats).fill_(i);
            var b = HostTensors.Zeros(2 * FourMiBOfFloats).add_(a.repeat(2));
            Assert.AreEqual(i, b.max().ToDouble());
            if (i % 20 == 0) peak = Math.Max(peak, ResidentMemory.BytesAfterCollection());
        }
        long growth = ResidentMemory.BytesAfterCollection() - before;
        Assert.IsLessThan(64L << 20, growth, $"RSS grew {growth >> 20} MiB over 200 rounds of 12 MiB (peak +{(peak - before) >> 20} MiB)");
    }
}
