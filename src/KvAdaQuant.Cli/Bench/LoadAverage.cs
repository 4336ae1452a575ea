using System.Globalization;

namespace KvAdaQuant.Cli.Bench;

/// <summary>The machine's one-minute load average, from <c>/proc/loadavg</c> (Linux; null elsewhere).</summary>
internal static class LoadAverage
{
    /// <summary>The one-minute load average, or null where it cannot be read.</summary>
    public static double? OneMinute()
    {
        try
        {
            const string path = "/proc/loadavg";
            if (!File.Exists(path))
            {
                return null;
            }

            var first = File.ReadAllText(path).Split(' ', StringSplitOptions.RemoveEmptyEntries).FirstOrDefault();
            return double.TryParse(first, NumberStyles.Float, CultureInfo.InvariantCulture, out double v) ? v : null;
        }
        catch (IOException)
        {
            return null;
        }
    }
}
