using KvAdaQuant.Gpu.Cuda;

namespace KvAdaQuant.Gpu;

/// <summary>A packed batch resident in device memory, same layout as <see cref="PackedKvBatch"/>.</summary>
public sealed class PackedKvDeviceCache : IDisposable
{
    internal PackedKvDeviceCache(
        PackedKvFormat keyFormat, PackedKvFormat valueFormat, int batch, int kvHeads, int queryHeads, int quantizedTokens, int residualTokens,
        CudaDeviceBuffer keyCodes, CudaDeviceBuffer keyParams, CudaDeviceBuffer valueCodes, CudaDeviceBuffer valueParams,
        CudaDeviceBuffer residualKeys, CudaDeviceBuffer residualValues)
    {
        KeyFormat = keyFormat;
        ValueFormat = valueFormat;
        Batch = batch;
        KvHeads = kvHeads;
        QueryHeads = queryHeads;
        QuantizedTokens = quantizedTokens;
        ResidualTokens = residualTokens;
        KeyCodes = keyCodes;
        KeyParams = keyParams;
        ValueCodes = valueCodes;
        ValueParams = valueParams;
        ResidualKeys = residualKeys;
        ResidualValues = residualValues;
    }

    /// <summary>Key format.</summary>
    public PackedKvFormat KeyFormat { get; }

    /// <summary>Value format.</summary>
    public PackedKvFormat ValueFormat { get; }

    /// <summary>Batch size.</summary>
    public int Batch { get; }

    /// <summary>KV heads.</summary>
    public int KvHeads { get; }

    /// <summary>Query heads.</summary>
    public int QueryHeads { get; }

    /// <summary>Quantized positions.</summary>
    public int QuantizedTokens { get; }

    /// <summary>FP16 residual positions.</summary>
    public int ResidualTokens { get; }

    /// <summary>Head dimension.</summary>
    public int HeadDim => KeyFormat.HeadDim;

    /// <summary>Key codes.</summary>
    public CudaDeviceBuffer KeyCodes { get; }

    /// <summary>Key (scale, min) pairs.</summary>
    public CudaDeviceBuffer KeyParams { get; }

    /// <summary>Value codes.</summary>
    public CudaDeviceBuffer ValueCodes { get; }

    /// <summary>Value (scale, min) pairs.</summary>
    public CudaDeviceBuffer ValueParams { get; }

    /// <summary>FP16 residual keys.</summary>
    public CudaDeviceBuffer ResidualKeys { get; }

    /// <summary>FP16 residual values.</summary>
    public CudaDeviceBuffer ResidualValues { get; }

    /// <summary>Bytes an attention pass must read: packed K and V of every head plus the FP16 window.</summary>
    public long ByteCount =>
        ((long)Batch * KvHeads * (KeyFormat.BytesPerHead(QuantizedTokens) + ValueFormat.BytesPerHead(QuantizedTokens)))
        + (4L * Batch * KvHeads * ResidualTokens * HeadDim);

    /// <summary>True when the K4V2 tensor-core kernel applies: K 4-bit and V 2-bit per-token groups of 64, D 128 or 64, GQA ratio &lt;= 8, 32 | T.</summary>
    public bool FastPathApplies =>
        KeyFormat is { BitsCode: 4, GroupSize: 64, Axis: PackedKvAxis.PerToken, HeadDim: 128 or 64 }
        && ValueFormat is { BitsCode: 2, GroupSize: 64, Axis: PackedKvAxis.PerToken }
        && QueryHeads / KvHeads <= 8
        && QuantizedTokens % 32 == 0;

    /// <inheritdoc/>
    public void Dispose()
    {
        KeyCodes.Dispose();
        KeyParams.Dispose();
        ValueCodes.Dispose();
        ValueParams.Dispose();
        ResidualKeys.Dispose();
        ResidualValues.Dispose();
    }
}
