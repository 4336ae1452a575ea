using System.Runtime.InteropServices;

namespace KvAdaQuant.Numerics;

/// <summary>
/// Linux madvise for the weight copies: drop the pages of a read-only file mapping from this process, fault a range in
/// with one call, ask for transparent huge pages. Advice only: elsewhere, or where the kernel refuses, nothing happens
/// (false is returned) and the memory behaves as before.
/// </summary>
internal static unsafe partial class PageAdvice
{
    private const int MadviseDontNeed = 4;
    private const int MadviseHugePage = 14;
    private const int MadvisePopulateRead = 22;

    /// <summary>Size of a transparent huge page on x86-64 Linux, the alignment worth giving a buffer that asks for them.</summary>
    public const int HugePageBytes = 2 << 20;

    /// <summary>
    /// Drops the whole pages inside [<paramref name="start"/>, <paramref name="start"/> + <paramref name="bytes"/>) from
    /// the resident set (MADV_DONTNEED). Only for memory mapped read-only from a file, whose pages come back from the file
    /// unchanged when touched again: anonymous memory would read back as zeros.
    /// </summary>
    public static bool ReleaseFilePages(byte* start, long bytes) => Advise(start, bytes, MadviseDontNeed, inward: true);

    /// <summary>Faults the pages of a file mapping in for reading in one call (MADV_POPULATE_READ, Linux 5.14+).</summary>
    public static bool PopulateRead(byte* start, long bytes) => Advise(start, bytes, MadvisePopulateRead, inward: false);

    /// <summary>Asks for transparent huge pages over the range (MADV_HUGEPAGE), before it is first touched.</summary>
    public static bool UseHugePages(byte* start, long bytes) => Advise(start, bytes, MadviseHugePage, inward: true);

    private static bool Advise(byte* start, long bytes, int advice, bool inward)
    {
        if (!OperatingSystem.IsLinux() || bytes <= 0)
        {
            return false;
        }

        // whole pages only: inward (pages entirely inside the range) or outward (every page the range touches).
        long page = Environment.SystemPageSize;
        long first = inward ? ((long)start + page - 1) / page * page : (long)start / page * page;
        long end = inward ? ((long)start + bytes) / page * page : ((long)start + bytes + page - 1) / page * page;
        return end > first && Madvise((nint)first, (nuint)(end - first), advice) == 0;
    }

    [LibraryImport("libc", EntryPoint = "madvise", SetLastError = true)]
    private static partial int Madvise(nint address, nuint length, int advice);
}
