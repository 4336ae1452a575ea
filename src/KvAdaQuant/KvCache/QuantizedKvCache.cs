namespace KvAdaQuant.KvCache;

/// <summary>A whole model's cache following a <see cref="KvPlan"/>: one <see cref="QuantizedKvStore"/> per layer.</summary>
public sealed class QuantizedKvCache : IKvCache
{
    private readonly QuantizedKvStore[] _layers;

    /// <summary>Creates the cache; throws <see cref="ArgumentException"/> when the plan does not fit the layout.</summary>
    public QuantizedKvCache(KvPlan plan, KvLayout layout)
    {
        plan.Validate(layout.Layers, layout.HeadDim);
        Plan = plan;
        Layout = layout;
        var layers = new List<QuantizedKvStore>();
        try
        {
            foreach (var spec in plan.Layers)
            {
                layers.Add(new QuantizedKvStore(layout, spec));
            }
        }
        catch
        {
            layers.ForEach(l => l.Dispose());
            throw;
        }

        _layers = [.. layers];
    }

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
