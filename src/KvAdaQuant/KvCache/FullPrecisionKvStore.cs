using System.Numerics.Tensors;
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
