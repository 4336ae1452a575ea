namespace KvAdaQuant.KvCache;

/// <summary>A whole model's KV cache: one <see cref="IKvLayerCache"/> per layer.</summary>
public interface IKvCache : IDisposable
{
    /// <summary>Shape.</summary>
    KvLayout Layout { get; }

    /// <summary>Layer caches.</summary>
    IReadOnlyList<IKvLayerCache> Layers { get; }

    /// <summary>Positions held (equal in all layers after a forward pass).</summary>
    int Length => Layers[0].Length;

    /// <summary>Total bytes in use.</summary>
    long ByteCount => Layers.Sum(l => l.ByteCount);

    /// <summary>Short description, e.g. "fp32" or "k4v2".</summary>
    string Description { get; }

    /// <summary>Forgets all positions.</summary>
    void Clear()
    {
        foreach (var l in Layers)
        {
            l.Clear();
        }
    }
}
