using System.Numerics.Tensors;
using System.Runtime.Intrinsics;
using KvAdaQuant.Numerics;

namespace KvAdaQuant.KvCache;

/// <summary>Unquantized layer cache in FP32 or FP16, stored head-major ([kvHead][position][headDim]) for streaming reads.</summary>
public sealed unsafe class FullPrecisionKvStore : IKvLayerCache, IKvStateLayer, IDisposable
{
    private readonly KvLayout _layout;
    private readonly bool _half;
    private readonly NativeBuffer _k;
    private readonly NativeBuffer _v;
    private readonly bool _fused;
    private readonly bool _causalTiles;

    /// <summary>Positions converted (and keys transposed) at a time by <see cref="AttendCausal"/>'s tiled path.</summary>
    internal const int CausalChunk = 256;

    /// <summary>Creates an empty store of <paramref name="layout"/>.Capacity positions.</summary>
    public FullPrecisionKvStore(KvLayout layout, bool half)
        : this(layout, half, allowFused: true)
    {
    }

    /// <summary>Creates an empty store; <paramref name="allowFused"/> false keeps the row-at-a-time path (for A/B benchmarks).</summary>
    internal FullPrecisionKvStore(KvLayout layout, bool half, bool allowFused)
    {
        _layout = layout;
        _half = half;
        _fused = allowFused && FusedAttentionKernels.IsSupported && FusedAttentionKernels.SupportsDense(layout.HeadDim);
        _causalTiles = allowFused && !_fused && UsesCausalTiles(layout.HeadDim);
        long bytes = (long)layout.KvHeads * layout.Capacity * layout.HeadDim * (half ? 2 : 4);
        _k = new NativeBuffer(bytes);
        _v = new NativeBuffer(bytes);
    }

    /// <inheritdoc/>
    public int Length { get; private set; }

    /// <inheritdoc/>
    public long ByteCount => 2L * Length * _layout.KvDim * (_half ? 2 : 4);

    /// <inheritdoc/>
    public void Append(ReadOnlySpan<float> keys, ReadOnlySpan<float> values, int tokens)
    {
        int hd = _layout.HeadDim;
        if (Length + tokens > _layout.Capacity)
        {
            throw new KvCacheException($"KV cache full: {Length} + {tokens} positions exceed the capacity of {_layout.Capacity}");
        }

        KvGuard.CheckFinite(keys[..(tokens * _layout.KvDim)], "K", Length);
        KvGuard.CheckFinite(values[..(tokens * _layout.KvDim)], "V", Length);
        for (int t = 0; t < tokens; t++)
        {
            for (int g = 0; g < _layout.KvHeads; g++)
            {
                long dst = (((long)g * _layout.Capacity) + Length + t) * hd;
                var ks = keys.Slice((t * _layout.KvDim) + (g * hd), hd);
                var vs = values.Slice((t * _layout.KvDim) + (g * hd), hd);
                if (_half)
                {
                    TensorPrimitives.ConvertToHalf(ks, _k.AsSpan<Half>(dst, hd));
                    TensorPrimitives.ConvertToHalf(vs, _v.AsSpan<Half>(dst, hd));
                }
                else
                {
                    ks.CopyTo(_k.AsSpan<float>(dst, hd));
                    vs.CopyTo(_v.AsSpan<float>(dst, hd));
                }
            }
        }

        Length += tokens;
    }

    /// <inheritdoc/>
    public void Attend(int kvHead, ReadOnlySpan<float> queries, int queryHeads, int length, Span<float> output, Span<float> scores)
    {
        // The arithmetic of llama.cpp's CPU attention with an F32 cache and flash attention off, so both engines round
        // alike: q·k in ggml_vec_dot_f32's order, times the scale, ggml's softmax, and p·V in the order of its batched
        // F32 matrix product (llamafile tinyBLAS: position j accumulates, fused, into lane j mod 16, then the 16 lanes
        // are reduced as _mm512_reduce_add_ps does).
        int hd = _layout.HeadDim;
        float scale = _layout.Scale;
        if (_fused && length > 0)
        {
            AttendFused(kvHead, queries, queryHeads, length, output, scores);
            return;
        }

        Span<float> row = stackalloc float[hd];
        long baseIdx = (long)kvHead * _layout.Capacity * hd;
        if (_half)
        {
            // FP16 keys are widened a chunk of positions at a time (16 KiB of stack at most).
            int chunk = Math.Max(1, 4096 / hd);
            Span<float> keys = stackalloc float[chunk * hd];
            for (int j0 = 0; j0 < length; j0 += chunk)
            {
                int m = Math.Min(chunk, length - j0);
                TensorPrimitives.ConvertToSingle(_k.AsSpan<Half>(baseIdx + ((long)j0 * hd), m * hd), keys[..(m * hd)]);
                for (int r = 0; r < queryHeads; r++)
                {
                    var s = scores.Slice((r * length) + j0, m);
                    GgmlArithmetic.DotRows(queries.Slice(r * hd, hd), keys[..(m * hd)], m, s);
                    TensorPrimitives.Multiply(s, scale, s);
                }
            }
        }
        else
        {
            // the keys of this head are contiguous: positions 0..length-1, hd floats each.
            var keys = _k.AsSpan<float>(baseIdx, length * hd);
            for (int r = 0; r < queryHeads; r++)
            {
                var s = scores.Slice(r * length, length);
                GgmlArithmetic.DotRows(queries.Slice(r * hd, hd), keys, length, s);
                TensorPrimitives.Multiply(s, scale, s);
            }
        }

        for (int r = 0; r < queryHeads; r++)
        {
            var s = scores.Slice(r * length, length);
            Kernels.SoftMax(s);
        }

        int laneFloats = 16 * hd;
        int total = queryHeads * laneFloats;
        float[]? rented = total > 4096 ? System.Buffers.ArrayPool<float>.Shared.Rent(total) : null;
        Span<float> lanes = rented is null ? stackalloc float[total] : rented.AsSpan(0, total);
        lanes.Clear();
        for (int j = 0; j < length; j++)
        {
            var v = Row(_v, baseIdx + ((long)j * hd), hd, row);
            int lane = (j & 15) * hd;
            for (int r = 0; r < queryHeads; r++)
            {
                GgmlArithmetic.FusedMultiplyAddInPlace(v, scores[(r * length) + j], lanes.Slice((r * laneFloats) + lane, hd));
            }
        }

        for (int r = 0; r < queryHeads; r++)
        {
            GgmlArithmetic.ReduceLanes16(lanes.Slice(r * laneFloats, laneFloats), hd, output.Slice(r * hd, hd));
        }

        if (rented is not null)
        {
            System.Buffers.ArrayPool<float>.Shared.Return(rented);
        }
    }

    /// <summary>
    /// Whether <see cref="AttendCausal"/> shares the converted rows between the tokens of a batch at this head dim: the
    /// row-at-a-time path's head dims below 64 (whose dot products are one sequential chain per position, so sixteen
    /// positions go in the lanes of one 512-bit vector with the same bits), where 512-bit vectors are accelerated.
    /// </summary>
    internal static bool UsesCausalTiles(int headDim) => headDim < FusedAttentionKernels.Slab && Vector512.IsHardwareAccelerated;

    /// <inheritdoc/>
    public int CausalScratchFloats(int queryHeads, int firstLength, int tokens)
    {
        // For the largest part the batch is attended in (the same last position, fewer tokens).
        int last = firstLength + tokens - 1;
        int part = IKvLayerCache.SharedTokens(queryHeads, last, tokens);
        if (SharesWidened(tokens))
        {
            // Every token's scores, then one chunk of widened rows.
            return checked((part * queryHeads * last) + (FusedAttentionKernels.SharedRows(_layout.HeadDim) * _layout.HeadDim));
        }

        if (!_causalTiles || tokens == 1)
        {
            return queryHeads * last;
        }

        var (scores, chunk, lanes) = CausalLayout(queryHeads, last - part + 1, part, _layout.HeadDim);
        return scores + (2 * chunk) + lanes;
    }

    /// <inheritdoc/>
    /// <remarks>
    /// At head dims below 64 (<see cref="UsesCausalTiles"/>) the batch's tokens share each chunk of
    /// <see cref="CausalChunk"/> positions: the keys are widened and transposed once into tiles of sixteen positions
    /// (channel-major), each query head's scores take sixteen positions a vector in the order of the row-at-a-time
    /// path (a rounded product added per channel, the last HeadDim % 8 channels fused, then the scale), the softmax is
    /// the same call, and the values, widened once per chunk, go into the same sixteen lane accumulators
    /// (position j into lane j mod 16, fused) reduced by the same tree, so every output has the bits of
    /// <see cref="Attend"/>.
    /// </remarks>
    public void AttendCausal(int kvHead, ReadOnlySpan<float> queries, int queryStride, int queryHeads, int firstLength, int tokens, Span<float> output, int outputStride, Span<float> scratch)
    {
        int last = IKvLayerCache.CheckCausal(Length, firstLength, tokens);

        if (!(SharesWidened(tokens) || _causalTiles) || tokens == 1)
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

        if (SharesWidened(tokens))
        {
            AttendCausalWidened(kvHead, queries, queryStride, queryHeads, firstLength, tokens, output, outputStride, scratch);
            return;
        }

        int hd = _layout.HeadDim;
        var (scoreFloats, chunkFloats, laneFloats) = CausalLayout(queryHeads, firstLength, tokens, hd);
        IKvLayerCache.CheckCausalBuffers(queries.Length, queryStride, output.Length, outputStride, queryHeads * hd, tokens, scratch.Length, scoreFloats + (2 * chunkFloats) + laneFloats);

        int pad = (last + 15) & ~15;
        var scaleV = Vector512.Create(_layout.Scale);
        long baseIdx = (long)kvHead * _layout.Capacity * hd;
        fixed (float* qp = queries)
        fixed (float* op = output)
        fixed (float* sp = scratch)
        {
            float* rowsBuf = sp + scoreFloats;
            float* tiles = rowsBuf + chunkFloats;
            float* lanes = tiles + chunkFloats;
            for (int c0 = 0; c0 < last; c0 += CausalChunk)
            {
                int m = Math.Min(CausalChunk, last - c0);
                float* rows = Widen(_k, baseIdx + ((long)c0 * hd), m * hd, rowsBuf);
                int mt = (m + 15) & ~15;
                for (int j = 0; j < mt; j++)
                {
                    float* tile = tiles + ((j >> 4) * 16 * hd) + (j & 15);
                    float* row = rows + ((long)j * hd);
                    for (int i = 0; i < hd; i++)
                    {
                        tile[16 * i] = j < m ? row[i] : 0f;
                    }
                }

                for (int t = 0; t < tokens; t++)
                {
                    int end = Math.Min(firstLength + t - c0, m);
                    for (int r0 = 0; r0 < queryHeads; r0 += 2)
                    {
                        float* q = qp + ((long)t * queryStride) + (r0 * hd);
                        float* srow = sp + ((((long)t * queryHeads) + r0) * pad) + c0;
                        ScoreTiles(tiles, (end + 15) >> 4, hd, q, srow, pad, Math.Min(2, queryHeads - r0), scaleV);
                    }
                }
            }

            for (int t = 0; t < tokens; t++)
            {
                for (int r = 0; r < queryHeads; r++)
                {
                    Kernels.SoftMax(new Span<float>(sp + ((((long)t * queryHeads) + r) * pad), firstLength + t));
                }
            }

            new Span<float>(lanes, laneFloats).Clear();
            for (int c0 = 0; c0 < last; c0 += CausalChunk)
            {
                int m = Math.Min(CausalChunk, last - c0);
                float* rows = Widen(_v, baseIdx + ((long)c0 * hd), m * hd, rowsBuf);
                for (int t = 0; t < tokens; t++)
                {
                    int end = Math.Min(firstLength + t - c0, m);
                    for (int r0 = 0; r0 < queryHeads; r0 += 4)
                    {
                        long rowIndex = ((long)t * queryHeads) + r0;
                        AccumulateLanes(rows, end, hd, sp + (rowIndex * pad) + c0, pad, lanes + (rowIndex * 16 * hd), Math.Min(4, queryHeads - r0));
                    }
                }
            }

            for (int t = 0; t < tokens; t++)
            {
                for (int r = 0; r < queryHeads; r++)
                {
                    long rowIndex = ((long)t * queryHeads) + r;
                    GgmlArithmetic.ReduceLanes16(new Span<float>(lanes + (rowIndex * 16 * hd), 16 * hd), hd, new Span<float>(op + ((long)t * outputStride) + (r * hd), hd));
                }
            }
        }
    }

    // FP16 rows at the fused kernels' head dims, for a batch: each chunk of SharedRows positions widened once (exactly,
    // as the kernels' Dense16 decoder widens each row), then scored and summed per token by the FP32 form of the same
    // kernels. The chunks start at multiples of the kernels' 64-token blocks, so each token gets AttendFused's bits.
    private bool SharesWidened(int tokens) => _fused && _half && tokens > 1;

    private void AttendCausalWidened(int kvHead, ReadOnlySpan<float> queries, int queryStride, int queryHeads, int firstLength, int tokens, Span<float> output, int outputStride, Span<float> scratch)
    {
        int hd = _layout.HeadDim, last = firstLength + tokens - 1, perToken = queryHeads * last;
        IKvLayerCache.CheckCausalBuffers(queries.Length, queryStride, output.Length, outputStride, queryHeads * hd, tokens, scratch.Length, CausalScratchFloats(queryHeads, firstLength, tokens));
        long offset = (long)kvHead * _layout.Capacity * hd * 2;
        var scores = scratch[..(tokens * perToken)];
        var rows = scratch.Slice(tokens * perToken, FusedAttentionKernels.SharedRows(hd) * hd);
        fixed (float* qp = queries)
        fixed (float* op = output)
        fixed (float* sp = scores)
        fixed (float* x = rows)
        {
            FusedAttentionKernels.ScoresCausalHalf((ushort*)(_k.Pointer + offset), hd, x, qp, queryStride, queryHeads, firstLength, tokens, sp, perToken);
            for (int t = 0; t < tokens; t++)
            {
                int length = firstLength + t;
                for (int r = 0; r < queryHeads; r++)
                {
                    Kernels.ScaledSoftMax(scores.Slice((t * perToken) + (r * length), length), _layout.Scale);
                }

                output.Slice(t * outputStride, queryHeads * hd).Clear();
            }

            FusedAttentionKernels.AccumulateCausalHalf((ushort*)(_v.Pointer + offset), hd, x, sp, perToken, queryHeads, firstLength, tokens, op, outputStride);
        }
    }

    // Floats of AttendCausal's scratch: the scores ([token][head][positions rounded up to 16]), one chunk of widened
    // rows and one of transposed keys, and sixteen lanes of HeadDim accumulators per (token, head).
    private static (int Scores, int Chunk, int Lanes) CausalLayout(int queryHeads, int firstLength, int tokens, int hd)
    {
        int pad = (firstLength + tokens - 1 + 15) & ~15;
        return (checked(tokens * queryHeads * pad), CausalChunk * hd, checked(tokens * queryHeads * 16 * hd));
    }

    // The rows at element offset `index` as floats: FP32 rows in place, FP16 rows widened into `buffer`.
    private float* Widen(NativeBuffer buf, long index, int count, float* buffer)
    {
        if (!_half)
        {
            return (float*)buf.Pointer + index;
        }

        TensorPrimitives.ConvertToSingle(buf.AsSpan<Half>(index, count), new Span<float>(buffer, count));
        return buffer;
    }

    // Scores of `tileCount` tiles of sixteen transposed keys for one or two heads (queries q + h * hd, rows srow + h *
    // pad): per lane the row-at-a-time order (rounded products added channel by channel, the last hd % 8 fused), then
    // times the scale; two tiles at a time, so that up to four independent add chains overlap.
    private static void ScoreTiles(float* tiles, int tileCount, int hd, float* q, float* srow, int pad, int heads, Vector512<float> scale)
    {
        int unfused = hd & ~7;
        float* q1 = q + (heads > 1 ? hd : 0);
        int k = 0;
        for (; k + 2 <= tileCount; k += 2)
        {
            float* t0 = tiles + (k * 16 * hd);
            float* t1 = t0 + (16 * hd);
            Vector512<float> a00 = default, a01 = default, a10 = default, a11 = default;
            int i = 0;
            for (; i < unfused; i++)
            {
                var k0 = Vector512.Load(t0 + (16 * i));
                var k1 = Vector512.Load(t1 + (16 * i));
                var b0 = Vector512.Create(q[i]);
                var b1 = Vector512.Create(q1[i]);
                a00 += b0 * k0;
                a01 += b0 * k1;
                a10 += b1 * k0;
                a11 += b1 * k1;
            }

            for (; i < hd; i++)
            {
                var k0 = Vector512.Load(t0 + (16 * i));
                var k1 = Vector512.Load(t1 + (16 * i));
                var b0 = Vector512.Create(q[i]);
                var b1 = Vector512.Create(q1[i]);
                a00 = Vector512.FusedMultiplyAdd(b0, k0, a00);
                a01 = Vector512.FusedMultiplyAdd(b0, k1, a01);
                a10 = Vector512.FusedMultiplyAdd(b1, k0, a10);
                a11 = Vector512.FusedMultiplyAdd(b1, k1, a11);
            }

            (a00 * scale).Store(srow + (k * 16));
            (a01 * scale).Store(srow + (k * 16) + 16);
            if (heads > 1)
            {
                (a10 * scale).Store(srow + pad + (k * 16));
                (a11 * scale).Store(srow + pad + (k * 16) + 16);
            }
        }

        if (k < tileCount)
        {
            float* t0 = tiles + (k * 16 * hd);
            Vector512<float> a00 = default, a10 = default;
            int i = 0;
            for (; i < unfused; i++)
            {
                var k0 = Vector512.Load(t0 + (16 * i));
                a00 += Vector512.Create(q[i]) * k0;
                a10 += Vector512.Create(q1[i]) * k0;
            }

            for (; i < hd; i++)
            {
                var k0 = Vector512.Load(t0 + (16 * i));
                a00 = Vector512.FusedMultiplyAdd(Vector512.Create(q[i]), k0, a00);
                a10 = Vector512.FusedMultiplyAdd(Vector512.Create(q1[i]), k0, a10);
            }

            (a00 * scale).Store(srow + (k * 16));
            if (heads > 1)
            {
                (a10 * scale).Store(srow + pad + (k * 16));
            }
        }
    }

    // For up to four heads (score rows p + h * pad, lane accumulators acc + h * 16 * hd): lane l of head h gets
    // acc = fma(x_j, p_hj, acc) for j = l, l + 16, ... < count in that order (GgmlArithmetic.FusedMultiplyAddInPlace,
    // element-wise, so any width), each lane's 16- and 8-channel pieces held in registers over the whole chunk.
    private static void AccumulateLanes(float* x, int count, int hd, float* p, int pad, float* acc, int heads)
    {
        for (int l = 0; l < 16 && l < count; l++)
        {
            int d = 0;
            for (; d + 16 <= hd; d += 16)
            {
                float* a = acc + (l * hd) + d;
                long ha = 16L * hd;
                var a0 = Vector512.Load(a);
                var a1 = heads > 1 ? Vector512.Load(a + ha) : default;
                var a2 = heads > 2 ? Vector512.Load(a + (2 * ha)) : default;
                var a3 = heads > 3 ? Vector512.Load(a + (3 * ha)) : default;
                for (int j = l; j < count; j += 16)
                {
                    var v = Vector512.Load(x + ((long)j * hd) + d);
                    a0 = Vector512.FusedMultiplyAdd(v, Vector512.Create(p[j]), a0);
                    if (heads > 1)
                    {
                        a1 = Vector512.FusedMultiplyAdd(v, Vector512.Create(p[pad + j]), a1);
                        if (heads > 2)
                        {
                            a2 = Vector512.FusedMultiplyAdd(v, Vector512.Create(p[(2 * pad) + j]), a2);
                            if (heads > 3)
                            {
                                a3 = Vector512.FusedMultiplyAdd(v, Vector512.Create(p[(3 * pad) + j]), a3);
                            }
                        }
                    }
                }

                a0.Store(a);
                if (heads > 1)
                {
                    a1.Store(a + ha);
                }

                if (heads > 2)
                {
                    a2.Store(a + (2 * ha));
                }

                if (heads > 3)
                {
                    a3.Store(a + (3 * ha));
                }
            }

            for (int h = 0; h < heads; h++)
            {
                float* ph = p + (h * pad);
                float* a = acc + (h * 16L * hd) + (l * hd);
                int e = d;
                for (; e + 8 <= hd; e += 8)
                {
                    var a0 = Vector256.Load(a + e);
                    for (int j = l; j < count; j += 16)
                    {
                        a0 = Vector256.FusedMultiplyAdd(Vector256.Load(x + ((long)j * hd) + e), Vector256.Create(ph[j]), a0);
                    }

                    a0.Store(a + e);
                }

                for (; e < hd; e++)
                {
                    float a0 = a[e];
                    for (int j = l; j < count; j += 16)
                    {
                        a0 = MathF.FusedMultiplyAdd(x[((long)j * hd) + e], ph[j], a0);
                    }

                    a[e] = a0;
                }
            }
        }
    }

    // Scores of all positions first (FusedAttentionKernels.ScoresDense), softmax per head, then the weighted sum of values.
    private void AttendFused(int kvHead, ReadOnlySpan<float> queries, int queryHeads, int length, Span<float> output, Span<float> scores)
    {
        int hd = _layout.HeadDim;
        long offset = (long)kvHead * _layout.Capacity * hd * (_half ? 2 : 4);
        var s = scores[..(queryHeads * length)];
        var o = output[..(queryHeads * hd)];
        _ = queries[(queryHeads * hd) - 1];
        fixed (float* q = queries)
        fixed (float* sp = s)
        fixed (float* op = o)
        {
            FusedAttentionKernels.ScoresDense(_k.Pointer + offset, _half, length, hd, q, queryHeads, sp, length);
            for (int r = 0; r < queryHeads; r++)
            {
                Kernels.ScaledSoftMax(s.Slice(r * length, length), _layout.Scale);
            }

            o.Clear();
            FusedAttentionKernels.AccumulateDense(_v.Pointer + offset, _half, length, hd, sp, length, queryHeads, op);
        }
    }

    /// <inheritdoc/>
    public void ReadKeys(int kvHead, int start, int count, Span<float> dst) => Read(_k, kvHead, start, count, dst);

    /// <inheritdoc/>
    public void ReadValues(int kvHead, int start, int count, Span<float> dst) => Read(_v, kvHead, start, count, dst);

    /// <inheritdoc/>
    public void Clear() => Length = 0;

    /// <summary>FP32 or FP16 for both K and V.</summary>
    KvLayerSpec IKvStateLayer.Spec => _half ? new(Quantization.KvSpec.Fp16, Quantization.KvSpec.Fp16) : new(Quantization.KvSpec.Fp32, Quantization.KvSpec.Fp32);

    void IKvStateLayer.WriteState(KvStateWriter writer, int layer)
    {
        long bytes = (long)Length * _layout.HeadDim * (_half ? 2 : 4);
        foreach (var buf in new[] { _k, _v })
        {
            for (int h = 0; h < _layout.KvHeads; h++)
            {
                writer.Write(new ReadOnlySpan<byte>(HeadPointer(buf, h), checked((int)bytes)));
            }
        }
    }

    void IKvStateLayer.ReadState(KvStateReader reader, int layer, int length)
    {
        Length = 0;
        long bytes = (long)length * _layout.HeadDim * (_half ? 2 : 4);
        foreach (var (buf, kind) in new[] { (_k, "K"), (_v, "V") })
        {
            reader.Section = $"layer {layer} {kind}";
            for (int h = 0; h < _layout.KvHeads; h++)
            {
                reader.Read(new Span<byte>(HeadPointer(buf, h), checked((int)bytes)));
            }
        }

        Length = length;
    }

    bool IKvStateLayer.CanTruncate(int length) => length >= 0 && length <= Length;

    void IKvStateLayer.Truncate(int length) =>
        Length = length >= 0 && length <= Length ? length : throw new ArgumentOutOfRangeException(nameof(length), $"cannot keep {length} of {Length} positions");

    private byte* HeadPointer(NativeBuffer buf, int kvHead) => buf.Pointer + ((long)kvHead * _layout.Capacity * _layout.HeadDim * (_half ? 2 : 4));

    /// <inheritdoc/>
    public void Dispose()
    {
        _k.Dispose();
        _v.Dispose();
    }

    private void Read(NativeBuffer buf, int kvHead, int start, int count, Span<float> dst)
    {
        int hd = _layout.HeadDim;
        if (start < 0 || count < 0 || start + count > Length)
        {
            throw new ArgumentOutOfRangeException(nameof(count), $"positions {start}..{start + count} outside 0..{Length}");
        }

        for (int j = 0; j < count; j++)
        {
            var d = dst.Slice(j * hd, hd);
            Row(buf, (((long)kvHead * _layout.Capacity) + start + j) * hd, hd, d).CopyTo(d);
        }
    }

    private ReadOnlySpan<float> Row(NativeBuffer buf, long index, int hd, Span<float> tmp)
    {
        if (_half)
        {
            TensorPrimitives.ConvertToSingle(buf.AsSpan<Half>(index, hd), tmp);
            return tmp;
        }

        return buf.AsSpan<float>(index, hd);
    }
}
