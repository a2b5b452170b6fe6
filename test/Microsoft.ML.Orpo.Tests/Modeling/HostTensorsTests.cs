using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Microsoft.ML.Orpo.Modeling;
using Microsoft.ML.Orpo.Tests.Infrastructure;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Tests.Modeling;

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
    public void AFreedBlockServesTheNextTensorOfItsSize()
    {
        // The reason HostTensors exists: under libtorch's posix_memalign, glibc could not reuse a freed block for the
        // next request of the same size, and a training step's activations crept up the heap.
        if (!HostTensors.Serves(FourMiBOfFloats * sizeof(float))) Assert.Inconclusive("HostTensors uses libtorch's allocator on this platform.");
        using var scope = NewDisposeScope();
        // Freeing a block above glibc's mmap threshold raises the threshold, so the 4 MiB blocks below come from the heap.
        HostTensors.Empty(4 * FourMiBOfFloats).Dispose();
        var reused = 0;
        for (int attempt = 0; attempt < 5; attempt++)
        {
            var first = HostTensors.Empty(FourMiBOfFloats);
            var neighbour = HostTensors.Empty(FourMiBOfFloats); // keeps the first block off the top of the heap
            nint address = Address(first);
            first.Dispose();
            var next = HostTensors.Empty(FourMiBOfFloats);
            if (Address(next) == address) reused++;
            next.Dispose();
            neighbour.Dispose();
        }
        Assert.IsGreaterThanOrEqualTo(4, reused, $"a freed 4 MiB block was reused in {reused} of 5 tries");
    }

    [TestMethod]
    public void RepeatedTensorsDoNotGrowMemory()
    {
        using (var warm = HostTensors.Empty(4 * FourMiBOfFloats)) warm.fill_(1);
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

    private static unsafe nint Address(Tensor t) => (nint)Unsafe.AsPointer(ref MemoryMarshal.GetReference(t.bytes));
}
