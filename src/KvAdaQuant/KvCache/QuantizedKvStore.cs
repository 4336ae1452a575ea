using KvAdaQuant.Quantization;
using KvAdaQuant.Numerics;

namespace KvAdaQuant.KvCache;

/// <summary>
/// One layer's cache with its own K and V specs (any mix of quantized widths and FP16/FP32). Attention is fused:
/// scores straight from the stored keys, softmax, weighted sum straight from the stored values; one pass over a KV
/// head's data serves all the query heads that share it (GQA).
/// </summary>
public sealed class QuantizedKvStore : IKvLayerCache, IKvStateLayer, IDisposable
{
    private readonly KvLayout _layout;
    private readonly IKvTensorStore _k;
    private readonly IKvTensorStore _v;
    private readonly QuantizedTensorStore? _int8Keys;
    private readonly QuantizedTensorStore? _int8Values;
    private float[] _rotated = [];

    /// <summary>Creates an empty store for <paramref name="layout"/>.Capacity positions.</summary>
    public QuantizedKvStore(KvLayout layout, KvLayerSpec spec)
        : this(layout, spec, allowFused: true)
    {
    }

    /// <summary>Creates an empty store whose scores use <paramref name="attention"/> where its keys allow (<see cref="UsesInt8"/>).</summary>
    public QuantizedKvStore(KvLayout layout, KvLayerSpec spec, AttentionPrecision attention)
        : this(layout, spec, allowFused: true, attention)
    {
    }

    /// <summary>Creates an empty store; <paramref name="allowFused"/> false keeps the row-at-a-time general path (for A/B benchmarks).</summary>
    internal QuantizedKvStore(KvLayout layout, KvLayerSpec spec, bool allowFused, AttentionPrecision attention = AttentionPrecision.Fp32)
    {
        _layout = layout;
        Spec = spec;
        _k = Create(layout, spec.K, allowFused, int8Keys: attention is AttentionPrecision.Int8 or AttentionPrecision.Int8Values, keys: true);
        _int8Keys = attention is AttentionPrecision.Int8 or AttentionPrecision.Int8Values && _k is QuantizedTensorStore { SupportsInt8: true } qk ? qk : null;
        try
        {
            _v = Create(layout, spec.V, allowFused, int8Keys: false, keys: false);
            _int8Values = attention == AttentionPrecision.Int8Values && _int8Keys is not null && _v is QuantizedTensorStore { SupportsInt8Values: true } qv ? qv : null;
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

    /// <summary>Whether this layer's scores run with int8 queries (<see cref="AttentionPrecision.Int8"/> asked and its keys allow it).</summary>
    public bool UsesInt8 => _int8Keys is not null;

    /// <summary>Whether this layer's value sums run with byte weights (<see cref="AttentionPrecision.Int8Values"/> asked, and its keys and values allow it).</summary>
    public bool UsesInt8Values => _int8Values is not null;

    /// <summary>Whether the keys' codes lie in <see cref="KeyTiles"/> (the int8 score path's layout, see <see cref="UsesInt8"/>, and the FP32 column kernel's).</summary>
    internal bool KeysInTiles => _k is QuantizedTensorStore { IsTiled: true };

    /// <summary>Whether the values' codes lie in <see cref="KeyTiles"/> (never: only keys are tiled).</summary>
    internal bool ValuesInTiles => _v is QuantizedTensorStore { IsTiled: true };

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
        if (Spec.K.Rotate || Spec.V.Rotate)
        {
            // Rotated sides are stored as R x (KvRotation): rotate a copy of their rows (one buffer, grown to the largest batch).
            int n = ks.Length;
            if (_rotated.Length < 2 * n)
            {
                _rotated = new float[2 * n];
            }

            if (Spec.K.Rotate)
            {
                var rk = _rotated.AsSpan(0, n);
                ks.CopyTo(rk);
                KvRotation.Rotate(rk, _layout.HeadDim);
                ks = rk;
            }

            if (Spec.V.Rotate)
            {
                var rv = _rotated.AsSpan(n, n);
                vs.CopyTo(rv);
                KvRotation.Rotate(rv, _layout.HeadDim);
                vs = rv;
            }
        }

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
        if (Spec.K.Rotate || Spec.V.Rotate)
        {
            AttendRotated(kvHead, queries, queryHeads, length, output, scores);
            return;
        }

        AttendStored(kvHead, queries, queryHeads, length, output, scores);
    }

    /// <summary>Positions read (keys or values) at a time by <see cref="AttendCausal"/>'s shared path.</summary>
    internal const int CausalChunk = IKvTensorStore.CausalRows;

    /// <summary>
    /// Whether <see cref="AttendCausal"/> reads each row once for the whole batch at <paramref name="queryHeads"/> query
    /// heads: FP32 scores (no int8 keys) over K and V stores that share a batch's rows: quantized per-token rows (decoded
    /// once a chunk for the fused kernels, or read as <c>Read</c> returns them at head dims those do not take, with the
    /// sinks and the FP16 window) and per-channel groups that fit a chunk.
    /// </summary>
    internal bool SharesRows(int queryHeads) => _int8Keys is null && _k.SharesCausal(queryHeads) && _v.SharesCausal(queryHeads);

    /// <summary>
    /// Whether <see cref="AttendCausal"/> shares the value rows of a batch under int8 scores (<see cref="UsesInt8"/>
    /// without <see cref="UsesInt8Values"/>): each token's int8 scores and exponentials as <see cref="Attend"/> computes
    /// them, then one FP32 value sum for the batch from a value store that shares its rows.
    /// </summary>
    internal bool SharesValueRows(int queryHeads) => _int8Keys is not null && _int8Values is null && _v.SharesCausal(queryHeads);

    /// <inheritdoc/>
    public int CausalScratchFloats(int queryHeads, int firstLength, int tokens)
    {
        int last = firstLength + tokens - 1;
        if (!(SharesRows(queryHeads) || SharesValueRows(queryHeads)) || tokens == 1)
        {
            return queryHeads * last;
        }

        // Scores, one chunk of rows, the token's queries (rotated where keys are), and the stores' work (permuted
        // queries and sums of the fused kernels), for the largest part the batch is attended in.
        int part = IKvLayerCache.SharedTokens(queryHeads, last, tokens);
        return checked((part * queryHeads * last) + (CausalChunk * _layout.HeadDim) + (2 * part * queryHeads * _layout.HeadDim));
    }

    /// <inheritdoc/>
    /// <remarks>
    /// Where <see cref="SharesRows"/>, the batch's tokens share each chunk of <see cref="CausalChunk"/> rows: read once
    /// (dequantized or widened as <see cref="Attend"/>'s row path does it), scored for every token with the same
    /// MultiDot arithmetic, the same scaled softmax per token and head, then the value rows read once per chunk and
    /// summed in position order by the same MultiAxpy arithmetic, so every output has <see cref="Attend"/>'s bits.
    /// Rotated specs rotate each token's queries and turn each output back as <see cref="Attend"/> does.
    /// </remarks>
    public void AttendCausal(int kvHead, ReadOnlySpan<float> queries, int queryStride, int queryHeads, int firstLength, int tokens, Span<float> output, int outputStride, Span<float> scratch)
    {
        int last = IKvLayerCache.CheckCausal(Length, firstLength, tokens);
        bool int8 = SharesValueRows(queryHeads);

        if (!(SharesRows(queryHeads) || int8) || tokens == 1)
        {
            IKvLayerCache.AttendEachToken(this, kvHead, queries, queryStride, queryHeads, firstLength, tokens, output, outputStride, scratch);
            return;
        }

        int part = IKvLayerCache.SharedTokens(queryHeads, last, tokens);
        if (part < tokens)
        {
            IKvLayerCache.AttendInParts(this, part, kvHead, queries, queryStride, queryHeads, firstLength, tokens, output, outputStride, scratch);
            return;
        }

        int hd = _layout.HeadDim;
        int n = queryHeads * hd;
        IKvLayerCache.CheckCausalBuffers(queries.Length, queryStride, output.Length, outputStride, n, tokens, scratch.Length, CausalScratchFloats(queryHeads, firstLength, tokens));

        int perToken = queryHeads * last;
        var scores = scratch[..(tokens * perToken)];
        var rows = scratch.Slice(tokens * perToken, CausalChunk * hd);
        var q = scratch.Slice((tokens * perToken) + (CausalChunk * hd), tokens * n);
        var work = scratch.Slice((tokens * perToken) + (CausalChunk * hd) + (tokens * n), tokens * n);
        for (int t = 0; t < tokens; t++)
        {
            var qt = q.Slice(t * n, n);
            queries.Slice(t * queryStride, n).CopyTo(qt);
            if (Spec.K.Rotate)
            {
                KvRotation.Rotate(qt, hd);
            }
        }

        if (int8)
        {
            AttendCausalInt8(kvHead, q, queryHeads, firstLength, tokens, scores, perToken, output, outputStride, rows, work);
            return;
        }

        _k.ScoresCausal(kvHead, q, queryHeads, hd, firstLength, tokens, scores, perToken, rows, work);

        for (int t = 0; t < tokens; t++)
        {
            int length = firstLength + t;
            for (int r = 0; r < queryHeads; r++)
            {
                Kernels.ScaledSoftMax(scores.Slice((t * perToken) + (r * length), length), _layout.Scale);
            }

            output.Slice(t * outputStride, n).Clear();
        }

        _v.AccumulateCausal(kvHead, scores, perToken, queryHeads, hd, firstLength, tokens, output, outputStride, rows, work);

        if (Spec.V.Rotate)
        {
            for (int t = 0; t < tokens; t++)
            {
                KvRotation.Unrotate(output.Slice(t * outputStride, n), hd);
            }
        }
    }

    // AttendInt8 for a batch (queries already rotated where keys are): per token the int8 scores of the scaled queries,
    // each head's maximum and exponential sum, as AttendInt8 computes them; then the FP32 value sum of the unnormalised
    // weights for the whole batch (the value store's AccumulateCausal: the bits of its Accumulate per token), each
    // output divided by its sums and turned back where values are rotated, in AttendInt8's order.
    private unsafe void AttendCausalInt8(int kvHead, Span<float> q, int queryHeads, int firstLength, int tokens, Span<float> scores, int perToken, Span<float> output, int outputStride, Span<float> rows, Span<float> work)
    {
        var qk = _int8Keys!;
        int hd = _layout.HeadDim, n = queryHeads * hd;
        Span<float> max = queryHeads <= 64 ? stackalloc float[queryHeads] : new float[queryHeads];
        int sumCount = tokens * queryHeads;
        Span<float> sums = sumCount <= 1024 ? stackalloc float[sumCount] : new float[sumCount];
        for (int t = 0; t < tokens; t++)
        {
            int length = firstLength + t;
            var scaled = work.Slice(t * n, n);
            System.Numerics.Tensors.TensorPrimitives.Multiply(q.Slice(t * n, n), _layout.Scale, scaled);
            var s = scores.Slice(t * perToken, queryHeads * length);
            qk.ScoresInt8(kvHead, scaled, queryHeads, length, s, max);
            fixed (float* p = s)
            {
                for (int r = 0; r < queryHeads; r++)
                {
                    sums[(t * queryHeads) + r] = Int8AttentionKernels.ExpSum(p + (r * length), length, max[r]);
                }
            }

            output.Slice(t * outputStride, n).Clear();
        }

        _v.AccumulateCausal(kvHead, scores, perToken, queryHeads, hd, firstLength, tokens, output, outputStride, rows, work);
        for (int t = 0; t < tokens; t++)
        {
            var o = output.Slice(t * outputStride, n);
            for (int r = 0; r < queryHeads; r++)
            {
                System.Numerics.Tensors.TensorPrimitives.Multiply(o.Slice(r * hd, hd), 1f / sums[(t * queryHeads) + r], o.Slice(r * hd, hd));
            }

            if (Spec.V.Rotate)
            {
                KvRotation.Unrotate(o, hd);
            }
        }
    }

    // Rotated keys score against the rotated queries ((Rq)·(Rk) = q·k); rotated values sum to R Σ p v, turned back by Rᵀ.
    // Called for several heads at once from the worker pool, so the rotated queries live on the stack.
    private void AttendRotated(int kvHead, ReadOnlySpan<float> queries, int queryHeads, int length, Span<float> output, Span<float> scores)
    {
        int n = queryHeads * _layout.HeadDim;
        if (Spec.K.Rotate)
        {
            Span<float> rq = n <= 2048 ? stackalloc float[n] : new float[n];
            queries[..n].CopyTo(rq);
            KvRotation.Rotate(rq, _layout.HeadDim);
            AttendStored(kvHead, rq, queryHeads, length, output, scores);
        }
        else
        {
            AttendStored(kvHead, queries, queryHeads, length, output, scores);
        }

        if (Spec.V.Rotate)
        {
            KvRotation.Unrotate(output[..n], _layout.HeadDim);
        }
    }

    private void AttendStored(int kvHead, ReadOnlySpan<float> queries, int queryHeads, int length, Span<float> output, Span<float> scores)
    {
        if (_int8Keys is { } qk && length > 0)
        {
            AttendInt8(qk, kvHead, queries, queryHeads, length, output, scores);
            return;
        }

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

    // Int8 scores from queries pre-multiplied by the softmax scale (the kernel also returns each row's maximum), one
    // exp-and-sum pass instead of the scale/max, exp/sum and normalise passes, the value sum over the unnormalised
    // weights, and the output divided by the weights' sum at the end.
    private unsafe void AttendInt8(QuantizedTensorStore qk, int kvHead, ReadOnlySpan<float> queries, int queryHeads, int length, Span<float> output, Span<float> scores)
    {
        int hd = _layout.HeadDim;
        var s = scores[..(queryHeads * length)];
        Span<float> scaled = queryHeads * hd <= 4096 ? stackalloc float[queryHeads * hd] : new float[queryHeads * hd];
        Span<float> max = queryHeads <= 64 ? stackalloc float[queryHeads] : new float[queryHeads];
        System.Numerics.Tensors.TensorPrimitives.Multiply(queries[..(queryHeads * hd)], _layout.Scale, scaled);
        qk.ScoresInt8(kvHead, scaled, queryHeads, length, s, max);
        Span<float> sums = queryHeads <= 64 ? stackalloc float[queryHeads] : new float[queryHeads];
        var o = output[..(queryHeads * hd)];
        o.Clear();
        if (_int8Values is { } qv)
        {
            // The exponential fused into the byte-weight value sum (SoftExp), the other positions exponentiated first.
            qv.AccumulateSoftmaxInt8(kvHead, s, queryHeads, length, max, sums, o);
        }
        else
        {
            fixed (float* p = s)
            {
                for (int r = 0; r < queryHeads; r++)
                {
                    sums[r] = Int8AttentionKernels.ExpSum(p + (r * length), length, max[r]);
                }
            }

            _v.Accumulate(kvHead, s, queryHeads, length, o);
        }

        for (int r = 0; r < queryHeads; r++)
        {
            System.Numerics.Tensors.TensorPrimitives.Multiply(o.Slice(r * hd, hd), 1f / sums[r], o.Slice(r * hd, hd));
        }
    }

    /// <inheritdoc/>
    public void ReadKeys(int kvHead, int start, int count, Span<float> dst)
    {
        _k.Read(kvHead, start, count, dst);
        if (Spec.K.Rotate)
        {
            KvRotation.Unrotate(dst[..(count * _layout.HeadDim)], _layout.HeadDim);
        }
    }

    /// <inheritdoc/>
    public void ReadValues(int kvHead, int start, int count, Span<float> dst)
    {
        _v.Read(kvHead, start, count, dst);
        if (Spec.V.Rotate)
        {
            KvRotation.Unrotate(dst[..(count * _layout.HeadDim)], _layout.HeadDim);
        }
    }

    /// <inheritdoc/>
    public void Clear()
    {
        _k.Clear();
        _v.Clear();
    }

    void IKvStateLayer.WriteState(KvStateWriter writer, int layer)
    {
        _k.WriteState(writer);
        _v.WriteState(writer);
    }

    void IKvStateLayer.ReadState(KvStateReader reader, int layer, int length)
    {
        reader.Section = $"layer {layer} K";
        _k.ReadState(reader, length);
        reader.Section = $"layer {layer} V";
        _v.ReadState(reader, length);
    }

    bool IKvStateLayer.CanTruncate(int length) => _k.CanTruncate(length) && _v.CanTruncate(length);

    void IKvStateLayer.Truncate(int length)
    {
        if (!_k.CanTruncate(length) || !_v.CanTruncate(length))
        {
            throw new KvCacheException($"keeping {length} of {Length} positions is not exact for K {Spec.K} / V {Spec.V}: positions after it were already quantized");
        }

        _k.Truncate(length);
        _v.Truncate(length);
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        _k.Dispose();
        _v.Dispose();
    }

    private static IKvTensorStore Create(KvLayout layout, KvSpec spec, bool allowFused, bool int8Keys, bool keys) =>
        spec.IsQuantized ? new QuantizedTensorStore(layout, spec, allowFused, int8Keys, keys) : new FullPrecisionTensorStore(layout, spec, allowFused);
}
