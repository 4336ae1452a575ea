namespace KvAdaQuant.KvCache;

/// <summary>An unquantized KV cache (FP32 or FP16) for every layer.</summary>
public sealed class FullPrecisionKvCache : IKvCache
{
    private readonly FullPrecisionKvStore[] _layers;

    /// <summary>Creates the cache.</summary>
    public FullPrecisionKvCache(KvLayout layout, bool half)
    {
        Layout = layout;
        Description = half ? "fp16" : "fp32";
        _layers = Enumerable.Range(0, layout.Layers).Select(_ => new FullPrecisionKvStore(layout, half)).ToArray();
    }

    /// <inheritdoc/>
    public KvLayout Layout { get; }

    /// <inheritdoc/>
    public IReadOnlyList<IKvLayerCache> Layers => _layers;

    /// <inheritdoc/>
    public string Description { get; }

    /// <inheritdoc/>
    public void Dispose()
    {
        foreach (var l in _layers)
        {
            l.Dispose();
        }
    }
}
