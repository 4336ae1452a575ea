namespace KvAdaQuant.KvCache;

/// <summary>
/// A layer cache whose state <see cref="KvCacheState"/> can save and restore: its stored bytes, exactly
/// <see cref="IKvLayerCache.ByteCount"/> of them, K before V, head after head, in the layout the file format documents.
/// </summary>
internal interface IKvStateLayer
{
    /// <summary>How the layer stores K and V.</summary>
    KvLayerSpec Spec { get; }

    /// <summary>Positions held.</summary>
    int Length { get; }

    /// <summary>Writes the stored bytes of the positions held.</summary>
    void WriteState(KvStateWriter writer, int layer);

    /// <summary>Replaces the layer's state by <paramref name="length"/> positions read from <paramref name="reader"/>.</summary>
    void ReadState(KvStateReader reader, int layer, int length);

    /// <summary>Whether keeping only the first <paramref name="length"/> positions leaves exactly the state those positions alone would have built.</summary>
    bool CanTruncate(int length);

    /// <summary>Keeps the first <paramref name="length"/> positions (requires <see cref="CanTruncate"/>).</summary>
    void Truncate(int length);
}
