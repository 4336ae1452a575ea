namespace KvAdaQuant.KvCache;

/// <summary>Builds caches from a textual spec (<c>fp32</c>, <c>fp16</c>).</summary>
public static class KvCacheFactory
{
    /// <summary>Creates a cache of <paramref name="layout"/> described by <paramref name="spec"/>.</summary>
    public static IKvCache Create(string spec, KvLayout layout) => spec.Trim().ToLowerInvariant() switch
    {
        "fp32" or "f32" => new FullPrecisionKvCache(layout, half: false),
        "fp16" or "f16" => new FullPrecisionKvCache(layout, half: true),
        _ => throw new ArgumentException($"--kv '{spec}': unknown cache type (expected fp32 or fp16)"),
    };
}
