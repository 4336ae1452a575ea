namespace KvAdaQuant.KvCache;

/// <summary>A whole model's cache following a <see cref="KvPlan"/>: one <see cref="QuantizedKvStore"/> per layer.</summary>
public sealed class QuantizedKvCache : IKvCache
{
    private readonly QuantizedKvStore[] _layers;

    /// <summary>Creates the cache; throws <see cref="ArgumentException"/> when the plan does not fit the layout.</summary>
    public QuantizedKvCache(KvPlan plan, KvLayout layout)
        : this(plan, layout, AttentionPrecision.Fp32)
    {
    }

    /// <summary>
    /// Creates the cache with scores computed as <paramref name="attention"/> asks in every layer whose keys allow it
    /// (<see cref="QuantizedKvStore.UsesInt8"/>); throws <see cref="ArgumentException"/> when the plan does not fit the layout.
    /// </summary>
    public QuantizedKvCache(KvPlan plan, KvLayout layout, AttentionPrecision attention)
    {
        plan.Validate(layout.Layers, layout.HeadDim);
        Plan = plan;
        Layout = layout;
        var layers = new List<QuantizedKvStore>();
        try
        {
            foreach (var spec in plan.Layers)
            {
                layers.Add(new QuantizedKvStore(layout, spec, attention));
            }
        }
        catch
        {
            layers.ForEach(l => l.Dispose());
            throw;
        }

        _layers = [.. layers];
    }

    /// <summary>Layers whose scores run with int8 queries (0 unless <see cref="AttentionPrecision.Int8"/> was asked).</summary>
    public int Int8Layers => _layers.Count(l => l.UsesInt8);

    /// <summary>Layers whose value sums run with byte weights (0 unless <see cref="AttentionPrecision.Int8Values"/> was asked).</summary>
    public int Int8ValueLayers => _layers.Count(l => l.UsesInt8Values);

    /// <summary>The plan.</summary>
    public KvPlan Plan { get; }

    /// <inheritdoc/>
    public KvLayout Layout { get; }

    /// <inheritdoc/>
    public IReadOnlyList<IKvLayerCache> Layers => _layers;

    /// <inheritdoc/>
    public string Description => Plan.Name;

    /// <inheritdoc/>
    public void Dispose()
    {
        foreach (var l in _layers)
        {
            l.Dispose();
        }
    }
}
