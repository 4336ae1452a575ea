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

    // A mapping header: "start-end perms offset dev inode [path]".
    private static bool IsHeader(string line)
    {
        int dash = line.IndexOf('-', StringComparison.Ordinal);
        int space = line.IndexOf(' ', StringComparison.Ordinal);
        return dash > 0 && space > dash && line[..dash].All(char.IsAsciiHexDigit);
    }
}
