using KvAdaQuant.Quantization;

namespace KvAdaQuant.KvCache;

/// <summary>
/// Saving and restoring the state of the caches <see cref="KvCacheFactory"/> builds (<see cref="FullPrecisionKvCache"/>,
/// <see cref="QuantizedKvCache"/>): the plan section of a state file (the specs of every layer) and the stored bytes of
/// every layer, exactly <see cref="IKvCache.ByteCount"/> of them; and cutting a cache back to a prefix of its positions
/// where that is exact. The file around them (magic, model fingerprint, tokens, checksum) is
/// <see cref="Engine.SessionStateFile"/>'s.
/// </summary>
public static class KvCacheState
{
    /// <summary>Bytes of one stored <see cref="KvSpec"/>: bits (u8), group (i32), axis (u8), symmetric (u8), residual (i32), sinks (i32).</summary>
    public const int SpecBytes = 15;

    /// <summary>Whether <paramref name="cache"/> can be saved (every layer is one <see cref="KvCacheFactory"/> builds).</summary>
    public static bool CanSave(IKvCache cache) => cache.Layers.All(l => l is IKvStateLayer);

    /// <summary>The K and V specs of every layer of a cache that <see cref="CanSave"/>.</summary>
    public static IReadOnlyList<KvLayerSpec> LayerSpecs(IKvCache cache) => StateLayers(cache).Select(l => l.Spec).ToArray();

    /// <summary>
    /// Whether keeping only the first <paramref name="length"/> positions leaves exactly the state that those positions
    /// alone would have built: always for FP32/FP16 layers; for quantized ones when no position at or after
    /// <paramref name="length"/> has been quantized yet (the residual window and the current flush chunk still hold them
    /// in FP16), since a quantized position cannot be turned back into the FP16 row it came from.
    /// </summary>
    public static bool CanTruncate(IKvCache cache, int length) =>
        length >= 0 && length <= cache.Length && StateLayers(cache).All(l => l.CanTruncate(length));

    /// <summary>Keeps the first <paramref name="length"/> positions; a <see cref="KvCacheException"/> when <see cref="CanTruncate"/> is false.</summary>
    public static void Truncate(IKvCache cache, int length)
    {
        var layers = StateLayers(cache);
        if (length < 0 || length > cache.Length)
        {
            throw new ArgumentOutOfRangeException(nameof(length), $"cannot keep {length} of the cache's {cache.Length} positions");
        }

        for (int i = 0; i < layers.Length; i++)
        {
            if (!layers[i].CanTruncate(length))
            {
                throw new KvCacheException($"the KV cache {cache.Description} cannot be cut back to {length} of its {cache.Length} positions exactly: layer {i} (K {layers[i].Spec.K}, V {layers[i].Spec.V}) has already quantized positions after it");
            }
        }

        foreach (var l in layers)
        {
            l.Truncate(length);
        }
    }

    /// <summary>
    /// Bytes the data section holds for <paramref name="tokens"/> positions of <paramref name="specs"/> with
    /// <paramref name="kvHeads"/> heads of <paramref name="headDim"/>: per layer K then V (what the cache's ByteCount says).
    /// </summary>
    public static long DataBytes(IReadOnlyList<KvLayerSpec> specs, int kvHeads, int headDim, int tokens) =>
        specs.Sum(s => checked(kvHeads * (s.K.BytesPerHead(headDim, tokens) + s.V.BytesPerHead(headDim, tokens))));

    /// <summary>Writes the plan section: description, capacity, layer count, then per layer the K and V specs.</summary>
    internal static void WritePlan(KvStateWriter writer, IKvCache cache)
    {
        var layers = StateLayers(cache);
        writer.WriteString(cache.Description);
        writer.WriteInt32(cache.Layout.Capacity);
        writer.WriteInt32(layers.Length);
        foreach (var l in layers)
        {
            WriteSpec(writer, l.Spec.K);
            WriteSpec(writer, l.Spec.V);
        }
    }

    /// <summary>Reads what <see cref="WritePlan"/> wrote; a damaged field is an <see cref="InvalidDataException"/> naming its offset.</summary>
    internal static SavedPlan ReadPlan(KvStateReader reader)
    {
        reader.Section = "KV plan";
        string description = reader.ReadString("the KV cache description");
        long at = reader.Position;
        int capacity = reader.ReadInt32();
        if (capacity <= 0)
        {
            throw new InvalidDataException($"{reader.Source}: corrupt state file: context size {capacity} at offset {at:N0}");
        }

        at = reader.Position;
        int count = reader.ReadInt32();
        if (count is <= 0 or > 1024)
        {
            throw new InvalidDataException($"{reader.Source}: corrupt state file: {count} layers at offset {at:N0} (1..1024 allowed)");
        }

        var specs = new KvLayerSpec[count];
        for (int i = 0; i < count; i++)
        {
            specs[i] = new KvLayerSpec(ReadSpec(reader, $"layer {i} K spec"), ReadSpec(reader, $"layer {i} V spec"));
        }

        return new SavedPlan(description, capacity, specs);
    }

    /// <summary>
    /// Null when a state of <paramref name="saved"/> with <paramref name="tokens"/> positions fits <paramref name="cache"/>,
    /// else what differs: the layer count, the first layer whose specs differ (both sides named), or the context size.
    /// </summary>
    internal static string? Mismatch(SavedPlan saved, IKvCache cache, int tokens)
    {
        var layers = StateLayers(cache);
        if (saved.Layers.Count != layers.Length)
        {
            return $"the state holds {saved.Layers.Count} layers of KV cache ({saved.Description}), this cache has {layers.Length} ({cache.Description})";
        }

        for (int i = 0; i < layers.Length; i++)
        {
            var s = saved.Layers[i];
            var mine = layers[i].Spec;
            if (s.K != mine.K || s.V != mine.V)
            {
                return $"the state was saved with another KV plan ({saved.Description}): layer {i} holds K {s.K}, V {s.V} in the file but K {mine.K}, V {mine.V} in this cache ({cache.Description}); load it with the same --kv / --kv-plan";
            }
        }

        if (tokens > cache.Layout.Capacity)
        {
            return $"the state holds {tokens} positions (saved with a context of {saved.Capacity}) but this cache's context holds {cache.Layout.Capacity} (--ctx)";
        }

        return null;
    }

    /// <summary>Writes every layer's stored bytes (K then V).</summary>
    internal static void WriteData(KvStateWriter writer, IKvCache cache)
    {
        var layers = StateLayers(cache);
        for (int i = 0; i < layers.Length; i++)
        {
            layers[i].WriteState(writer, i);
        }
    }

    /// <summary>Replaces every layer's state by <paramref name="length"/> positions; the cache is cleared when this throws.</summary>
    internal static void ReadData(KvStateReader reader, IKvCache cache, int length)
    {
        var layers = StateLayers(cache);
        try
        {
            for (int i = 0; i < layers.Length; i++)
            {
                layers[i].ReadState(reader, i, length);
            }
        }
        catch
        {
            cache.Clear();
            throw;
        }
    }

    private static IKvStateLayer[] StateLayers(IKvCache cache)
    {
        var layers = new IKvStateLayer[cache.Layers.Count];
        for (int i = 0; i < layers.Length; i++)
        {
            layers[i] = cache.Layers[i] as IKvStateLayer
                ?? throw new KvCacheException($"the KV cache '{cache.Description}' cannot be saved or restored: layer {i} is a {cache.Layers[i].GetType().Name}, not one of the caches KvCacheFactory builds");
        }

        return layers;
    }

    private static void WriteSpec(KvStateWriter writer, KvSpec spec)
    {
        writer.WriteByte((byte)spec.Bits);
        writer.WriteInt32(spec.GroupSize);
        writer.WriteByte((byte)spec.Axis);
        // Flags: bit 0 symmetric, bit 1 rotated (a spec without rotation writes the byte it always did).
        writer.WriteByte((byte)((spec.Symmetric ? 1 : 0) | (spec.Rotate ? 2 : 0)));
        writer.WriteInt32(spec.Residual);
        writer.WriteInt32(spec.Sinks);
    }

    private static KvSpec ReadSpec(KvStateReader reader, string field)
    {
        long at = reader.Position;
        byte bits = reader.ReadByte();
        int group = reader.ReadInt32();
        byte axis = reader.ReadByte();
        byte flags = reader.ReadByte();
        int residual = reader.ReadInt32();
        int sinks = reader.ReadInt32();
        if (!Enum.IsDefined((KvBits)bits) || !Enum.IsDefined((QuantAxis)axis) || flags > 3 || group < 0 || residual < 0 || sinks < 0)
        {
            throw new InvalidDataException($"{reader.Source}: corrupt state file: {field} at offset {at:N0} is not a KV spec (bits {bits}, group {group}, axis {axis}, flags {flags}, residual {residual}, sinks {sinks})");
        }

        var spec = new KvSpec((KvBits)bits, group, (QuantAxis)axis, (flags & 1) != 0, residual, sinks) { Rotate = (flags & 2) != 0 };
        return spec.IsQuantized || (group == 0 && axis == 0 && flags == 0 && residual == 0 && sinks == 0)
            ? spec
            : throw new InvalidDataException($"{reader.Source}: corrupt state file: {field} at offset {at:N0}: a full-precision spec with quantization options");
    }

    /// <summary>The plan section of a state file.</summary>
    internal sealed record SavedPlan(string Description, int Capacity, IReadOnlyList<KvLayerSpec> Layers);
}
