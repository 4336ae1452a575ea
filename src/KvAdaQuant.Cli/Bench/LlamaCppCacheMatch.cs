namespace KvAdaQuant.Cli.Bench;

/// <summary>
/// The llama.cpp cache types closest to a kvaq <c>--kv</c> spec: fp32 → f32, fp16 → f16, and for a quantized plan
/// <c>kXvY...</c> each of K and V on its own: 6 bits or more → q8_0, fewer → q4_0 (llama.cpp has nothing smaller).
/// </summary>
internal static class LlamaCppCacheMatch
{
    public static (string K, string V) For(string kvSpec)
    {
        var s = kvSpec.Trim().ToLowerInvariant();
        if (s is "fp32" or "f32")
        {
            return ("f32", "f32");
        }

        if (s is "fp16" or "f16")
        {
            return ("f16", "f16");
        }

        var head = s.Split(':')[0];
        int v = head.IndexOf('v', StringComparison.Ordinal);
        if (head.StartsWith('k') && v > 1
            && double.TryParse(head[1..v], System.Globalization.CultureInfo.InvariantCulture, out double kb)
            && double.TryParse(head[(v + 1)..], System.Globalization.CultureInfo.InvariantCulture, out double vb))
        {
            return (kb >= 6 ? "q8_0" : "q4_0", vb >= 6 ? "q8_0" : "q4_0");
        }

        return ("f16", "f16");
    }

    /// <summary>Parses <c>--vs-cache</c>: one type for both (<c>q8_0</c>) or K/V (<c>q8_0/q4_0</c>).</summary>
    public static (string K, string V) Parse(string option)
    {
        var parts = option.Split('/', StringSplitOptions.TrimEntries);
        return parts.Length switch
        {
            1 => (parts[0], parts[0]),
            2 => (parts[0], parts[1]),
            _ => throw new ArgumentException($"--vs-cache '{option}': expected TYPE or K/V, e.g. q8_0 or q8_0/q4_0"),
        };
    }
}
