using KvAdaQuant.Numerics;

namespace KvAdaQuant.Tests.Numerics;

/// <summary>This process's file mappings, from <c>/proc/self/smaps</c> (Linux).</summary>
internal static class ProcessMappings
{
    /// <summary>Resident kB of this process's mappings of <paramref name="path"/>.</summary>
    public static long ResidentKb(string path)
    {
        long total = 0;
        bool inMapping = false;
        foreach (var line in File.ReadLines("/proc/self/smaps"))
        {
            if (IsHeader(line))
            {
                inMapping = line.EndsWith(path, StringComparison.Ordinal);
            }
            else if (inMapping && line.StartsWith("Rss:", StringComparison.Ordinal))
            {
                total += long.Parse(line["Rss:".Length..].Trim().Split(' ')[0], System.Globalization.CultureInfo.InvariantCulture);
            }
        }

        return total;
    }

    /// <summary>
    /// Lookups in a file-mapped row-group matrix <paramref name="w"/> (a token embedding that is also the classifier),
    /// whose file <paramref name="path"/> holds <paramref name="data"/>: 2 x <see cref="WeightMatrix.LookupsPerRelease"/>
    /// of them (rows i x <paramref name="step"/> mod rows) dequantize the right rows, and the pages are dropped every
    /// LookupsPerRelease lookups (here after the 64th and the 128th), so the mapping does not build up again beside the copy.
    /// </summary>
    public static void AssertLookupsLeaveTheMappingReleased(WeightMatrix w, byte[] data, string path, int step)
    {
        int rowBytes = (int)w.RowByteCount;
        var x = new float[w.Cols];
        var want = new float[w.Cols];
        for (int i = 0; i < 2 * WeightMatrix.LookupsPerRelease; i++)
        {
            int r = i * step % w.Rows;
            w.DequantizeRow(r, x);
            RowDequantizer.Dequantize(w.Type, data.AsSpan(r * rowBytes, rowBytes), want);
            Assert.Equal(want, x);
        }

        long afterLookups = ResidentKb(path);
        Assert.True(afterLookups <= 8, $"lookups left {afterLookups} kB of the mapping resident beside the copy");
    }

    // A mapping header: "start-end perms offset dev inode [path]".
    private static bool IsHeader(string line)
    {
        int dash = line.IndexOf('-', StringComparison.Ordinal);
        int space = line.IndexOf(' ', StringComparison.Ordinal);
        return dash > 0 && space > dash && line[..dash].All(char.IsAsciiHexDigit);
    }
}
