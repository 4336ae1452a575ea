using KvAdaQuant.Quantization;
using KvAdaQuant.Numerics;

namespace KvAdaQuant.KvCache;

/// <summary>
/// One layer's cache with its own K and V specs (any mix of quantized widths and FP16/FP32). Attention is fused:
/// scores straight from the stored keys, softmax, weighted sum straight from the stored values; one pass over a KV
/// head's data serves all the query heads that share it (GQA).
/// </summary>
public sealed class QuantizedKvStore : IKvLayerCache, IDisposable
{
    private readonly KvLayout _layout;
    private readonly IKvTensorStore _k;
    private readonly IKvTensorStore _v;

    /// <summary>Creates an empty store for <paramref name="layout"/>.Capacity positions.</summary>
    public QuantizedKvStore(KvLayout layout, KvLayerSpec spec)
        : this(layout, spec, allowFused: true)
    {
    }

    /// <summary>Creates an empty store; <paramref name="allowFused"/> false keeps the row-at-a-time general path (for A/B benchmarks).</summary>
    internal QuantizedKvStore(KvLayout layout, KvLayerSpec spec, bool allowFused)
    {
        _layout = layout;
        Spec = spec;
        _k = Create(layout, spec.K, allowFused);
        try
        {
            _v = Create(layout, spec.V, allowFused);
        }
        catch
        {
            _k.Dispose();
            throw;
        }
    }

    /// <summary>The layer's K and V specs.</summary>
    public KvLayerSpec Spec { get; }

    /// <inheritdoc/>
    public int Length => _k.Length;

    /// <inheritdoc/>
    public long ByteCount => _k.ByteCount + _v.ByteCount;

    /// <summary>Bytes used by keys alone.</summary>
    public long KeyBytes => _k.ByteCount;

    /// <summary>Bytes used by values alone.</summary>
    public long ValueBytes => _v.ByteCount;

    /// <summary>Positions held quantized (keys, values); the rest are sinks or residual.</summary>
    public (int Keys, int Values) QuantizedCounts => (
        _k is QuantizedTensorStore qk ? qk.QuantizedCount : 0,
        _v is QuantizedTensorStore qv ? qv.QuantizedCount : 0);

    /// <inheritdoc/>
    public void Append(ReadOnlySpan<float> keys, ReadOnlySpan<float> values, int tokens)
    {
        if (Length + tokens > _layout.Capacity)
        {
            throw new KvCacheException($"KV cache full: {Length} + {tokens} positions exceed the capacity of {_layout.Capacity}");
        }

        var ks = keys[..(tokens * _layout.KvDim)];
        var vs = values[..(tokens * _layout.KvDim)];
        KvGuard.CheckFinite(ks, "K", Length);
        KvGuard.CheckFinite(vs, "V", Length);
        if (Spec.K.Bits != KvBits.Fp32)
        {
            KvGuard.CheckHalfRange(ks, "K", Length);
        }

        if (Spec.V.Bits != KvBits.Fp32)
        {
            KvGuard.CheckHalfRange(vs, "V", Length);
        }

        _k.Append(ks, tokens);
        _v.Append(vs, tokens);
    }

    /// <inheritdoc/>
    public void Attend(int kvHead, ReadOnlySpan<float> queries, int queryHeads, int length, Span<float> output, Span<float> scores)
    {
        int hd = _layout.HeadDim;
        var s = scores[..(queryHeads * length)];
        _k.Scores(kvHead, queries, queryHeads, length, s);
        for (int r = 0; r < queryHeads; r++)
        {
            Kernels.ScaledSoftMax(s.Slice(r * length, length), _layout.Scale);
        }

        var o = output[..(queryHeads * hd)];
        o.Clear();
        _v.Accumulate(kvHead, s, queryHeads, length, o);
    }

    /// <inheritdoc/>
    public void ReadKeys(int kvHead, int start, int count, Span<float> dst) => _k.Read(kvHead, start, count, dst);

    /// <inheritdoc/>
    public void ReadValues(int kvHead, int start, int count, Span<float> dst) => _v.Read(kvHead, start, count, dst);

    /// <inheritdoc/>
    public void Clear()
    {
        _k.Clear();
        _v.Clear();
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        _k.Dispose();
        _v.Dispose();
    }

    private static IKvTensorStore Create(KvLayout layout, KvSpec spec, bool allowFused) =>
        spec.IsQuantized ? new QuantizedTensorStore(layout, spec, allowFused) : new FullPrecisionTensorStore(layout, spec, allowFused);
}
