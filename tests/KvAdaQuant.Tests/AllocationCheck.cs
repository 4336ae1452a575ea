namespace KvAdaQuant.Tests;

/// <summary>The allocation checks of the decode-path tests.</summary>
internal static class AllocationCheck
{
    /// <summary>
    /// Bytes allocated on this thread by <paramref name="window"/>: the first of up to three runs that allocates nothing,
    /// else the third's. An allocation by the measured code shows in every run, while a one-off by the runtime on this
    /// thread (seen a few times in full parallel test runs, never reproduced alone) does not fail the check.
    /// </summary>
    public static long OfFirstCleanWindow(Action window)
    {
        long allocated = 0;
        for (int run = 0; run < 3; run++)
        {
            long before = GC.GetAllocatedBytesForCurrentThread();
            window();
            allocated = GC.GetAllocatedBytesForCurrentThread() - before;
            if (allocated == 0)
            {
                break;
            }
        }

        return allocated;
    }
}
