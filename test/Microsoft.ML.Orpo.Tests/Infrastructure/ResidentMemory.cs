using System.Diagnostics;
using System.Runtime.InteropServices;

namespace Microsoft.ML.Orpo.Tests.Infrastructure;

/// <summary>This process's resident memory, for tests that bound growth or watch memory being returned.</summary>
internal static partial class ResidentMemory
{
    public static long Bytes()
    {
        using var self = Process.GetCurrentProcess();
        self.Refresh();
        return self.WorkingSet64;
    }

    /// <summary>
    /// After a full collection (tensors only the finalizer would free are freed first) and, on Linux, glibc's
    /// <c>malloc_trim</c>: free heap pages go back to the OS, so the figure follows live memory instead of whatever
    /// earlier tests in the process left in the allocator's free lists.
    /// </summary>
    public static long BytesAfterCollection()
    {
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
        if (OperatingSystem.IsLinux()) TrimHeap();
        return Bytes();
    }

    private static void TrimHeap()
    {
        try
        {
            _ = MallocTrim(0);
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            // Not glibc (musl): the figure is the untrimmed one.
        }
    }

    [LibraryImport("libc", EntryPoint = "malloc_trim")]
    private static partial int MallocTrim(nuint pad);
}
