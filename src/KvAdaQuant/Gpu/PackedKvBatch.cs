namespace KvAdaQuant.Gpu;

/// <summary>
/// A batch's packed KV cache for one layer in the GPU layout: quantized K and V tensors for the first
/// <see cref="QuantizedTokens"/> positions of every (batch, KV head), then an FP16 residual window of
/// <see cref="ResidualTokens"/> positions, [batch][kvHead][token][HeadDim] as FP16 bit patterns.
/// Query head hq is served by KV head hq / (QueryHeads / KvHeads).
/// </summary>
public sealed class PackedKvBatch
{
    /// <summary>Wraps quantized tensors and residual rows; checks that the shapes agree.</summary>
    public PackedKvBatch(PackedKvTensor keys, PackedKvTensor values, ushort[] residualKeys, ushort[] residualValues, int residualTokens, int queryHeads)
    {
        ArgumentNullException.ThrowIfNull(keys);
        ArgumentNullException.ThrowIfNull(values);
        ArgumentNullException.ThrowIfNull(residualKeys);
        ArgumentNullException.ThrowIfNull(residualValues);
        if (keys.Batch != values.Batch || keys.KvHeads != values.KvHeads || keys.Tokens != values.Tokens || keys.Format.HeadDim != values.Format.HeadDim)
        {
            throw new ArgumentException("values: shape differs from keys.", nameof(values));
        }

        long residualCount = (long)keys.Batch * keys.KvHeads * residualTokens * keys.Format.HeadDim;
        if (residualKeys.LongLength != residualCount || residualValues.LongLength != residualCount)
        {
            throw new ArgumentException($"residualKeys: expected {residualCount} FP16 values.", nameof(residualKeys));
        }

        if (queryHeads <= 0 || queryHeads % keys.KvHeads != 0)
        {
            throw new ArgumentException($"queryHeads: {queryHeads} is not a multiple of the {keys.KvHeads} KV heads.", nameof(queryHeads));
        }

        Keys = keys;
        Values = values;
        ResidualKeys = residualKeys;
        ResidualValues = residualValues;
        ResidualTokens = residualTokens;
        QueryHeads = queryHeads;
    }

    /// <summary>Quantized keys.</summary>
    public PackedKvTensor Keys { get; }

    /// <summary>Quantized values.</summary>
    public PackedKvTensor Values { get; }

    /// <summary>FP16 residual keys.</summary>
    public ushort[] ResidualKeys { get; }

    /// <summary>FP16 residual values.</summary>
    public ushort[] ResidualValues { get; }

    /// <summary>Positions in the residual window.</summary>
    public int ResidualTokens { get; }

    /// <summary>Query heads.</summary>
    public int QueryHeads { get; }

    /// <summary>Batch size.</summary>
    public int Batch => Keys.Batch;

    /// <summary>KV heads.</summary>
    public int KvHeads => Keys.KvHeads;

    /// <summary>Head dimension.</summary>
    public int HeadDim => Keys.Format.HeadDim;

    /// <summary>Quantized positions.</summary>
    public int QuantizedTokens => Keys.Tokens;

    /// <summary>All positions.</summary>
    public int Length => QuantizedTokens + ResidualTokens;

    /// <summary>Bytes held: packed K and V plus the FP16 window.</summary>
    public long ByteCount => Keys.ByteCount + Values.ByteCount + (2L * (ResidualKeys.LongLength + ResidualValues.LongLength));

    /// <summary>Key element (position, d) as attention sees it, in double.</summary>
    public double Key(int b, int h, int position, int d) => position < QuantizedTokens
        ? Keys.Dequantize(b, h, position, d)
        : (double)BitConverter.UInt16BitsToHalf(ResidualKeys[ResidualIndex(b, h, position - QuantizedTokens, d)]);

    /// <summary>Value element likewise.</summary>
    public double Value(int b, int h, int position, int d) => position < QuantizedTokens
        ? Values.Dequantize(b, h, position, d)
        : (double)BitConverter.UInt16BitsToHalf(ResidualValues[ResidualIndex(b, h, position - QuantizedTokens, d)]);

    private long ResidualIndex(int b, int h, int r, int d) => (((((long)b * KvHeads) + h) * ResidualTokens) + r) * HeadDim + d;
}
