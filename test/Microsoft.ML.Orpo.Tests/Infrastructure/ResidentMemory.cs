using System.Diagnostics;

namespace Microsoft.ML.Orpo.Tests.Infrastructure;

/// <summary>This process's resident memory, for tests that bound growth or watch memory being returned.</summary>
internal static class ResidentMemory
{
    public static long Bytes()
    {
        using var self = Process.GetCurrentProcess();
        self.Refresh();
        return self.WorkingSet64;
    }

    /// <summary>After a full collection: tensors only the finalizer would free are freed first.</summary>
    public static long BytesAfterCollection()
    {
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
        return Bytes();
    }
}
