using System.Runtime.InteropServices;

namespace KvAdaQuant.Numerics;

/// <summary>
/// Drops pages of a read-only file mapping from this process (Linux madvise MADV_DONTNEED): they leave the resident set
/// and are read back from the file, unchanged, if touched again. Only for memory mapped from a file: anonymous memory
/// would read back as zeros.
/// </summary>
internal static unsafe partial class MappedPages
{
    private const int MadviseDontNeed = 4;

    /// <summary>
    /// Releases the whole pages inside [<paramref name="start"/>, <paramref name="start"/> + <paramref name="bytes"/>);
    /// true when the kernel accepted (false on other systems or on failure, which only means the pages stay resident).
    /// </summary>
    public static bool Release(byte* start, long bytes)
    {
        if (!OperatingSystem.IsLinux() || bytes <= 0)
        {
            return false;
        }

        long page = Environment.SystemPageSize;
        long first = ((long)start + page - 1) / page * page;
        long end = ((long)start + bytes) / page * page;
        return end <= first || Madvise((nint)first, (nuint)(end - first), MadviseDontNeed) == 0;
    }

    [LibraryImport("libc", EntryPoint = "madvise", SetLastError = true)]
    private static partial int Madvise(nint address, nuint length, int advice);
}
