using System.Numerics.Tensors;
using KvAdaQuant.Numerics;
using KvAdaQuant.Quantization;

namespace KvAdaQuant.KvCache;

/// <summary>One tensor kind in FP32 or FP16, head-major [kvHead][position][headDim].</summary>
internal sealed unsafe class FullPrecisionTensorStore : IKvTensorStore
{
    private readonly KvLayout _layout;
    private readonly bool _half;
    private readonly NativeBuffer _data;
    private readonly bool _fused;

    public FullPrecisionTensorStore(KvLayout layout, KvSpec spec, bool allowFused = true)
    {
        _layout = layout;
        _fused = allowFused && FusedAttentionKernels.IsSupported && FusedAttentionKernels.SupportsDense(layout.HeadDim);
        Spec = spec;
        _half = spec.Bits == KvBits.Fp16;
        _data = new NativeBuffer((long)layout.KvHeads * layout.Capacity * layout.HeadDim * (_half ? 2 : 4));
    }

    public KvSpec Spec { get; }

    public int Length { get; private set; }

    public long ByteCount => (long)Length * _layout.KvDim * (_half ? 2 : 4);

    public void Append(ReadOnlySpan<float> rows, int tokens)
    {
        int hd = _layout.HeadDim;
        for (int t = 0; t < tokens; t++)
        {
            for (int g = 0; g < _layout.KvHeads; g++)
            {
                long dst = (((long)g * _layout.Capacity) + Length + t) * hd;
                var src = rows.Slice((t * _layout.KvDim) + (g * hd), hd);
                if (_half)
                {
                    TensorPrimitives.ConvertToHalf(src, _data.AsSpan<Half>(dst, hd));
                }
                else
                {
                    src.CopyTo(_data.AsSpan<float>(dst, hd));
                }
            }
        }

        Length += tokens;
    }

    public void Scores(int kvHead, ReadOnlySpan<float> queries, int rep, int length, Span<float> scores)
    {
        int hd = _layout.HeadDim;
        if (Fused && length > 0)
        {
            _ = queries[(rep * hd) - 1];
            _ = scores[(rep * length) - 1];
            fixed (float* q = queries)
            fixed (float* s = scores)
            {
                FusedAttentionKernels.ScoresDense(HeadPointer(kvHead), _half, length, hd, q, rep, s, length);
            }

            return;
        }

        Span<float> buf = stackalloc float[hd];
        for (int j = 0; j < length; j++)
        {
            var x = Row(kvHead, j, buf);
            for (int r = 0; r < rep; r++)
            {
                scores[(r * length) + j] = TensorPrimitives.Dot(queries.Slice(r * hd, hd), x);
            }
        }
    }

    public void Accumulate(int kvHead, ReadOnlySpan<float> probs, int rep, int length, Span<float> output)
    {
        int hd = _layout.HeadDim;
        if (Fused && length > 0)
        {
            _ = probs[(rep * length) - 1];
            _ = output[(rep * hd) - 1];
            fixed (float* p = probs)
            fixed (float* o = output)
            {
                FusedAttentionKernels.AccumulateDense(HeadPointer(kvHead), _half, length, hd, p, length, rep, o);
            }

            return;
        }

        Span<float> buf = stackalloc float[hd];
        for (int j = 0; j < length; j++)
        {
            var x = Row(kvHead, j, buf);
            for (int r = 0; r < rep; r++)
            {
                var o = output.Slice(r * hd, hd);
                TensorPrimitives.MultiplyAdd(x, probs[(r * length) + j], o, o);
            }
        }
    }

    /// <summary>
    /// Where the fused kernels attend the rows (head dims that are multiples of 64, AVX-512): FP16 rows are widened once
    /// a chunk (<see cref="FusedAttentionKernels.SharedRows"/>) for a batch's tokens, then scored and summed per token by
    /// the FP32 kernels from the same 64-token block starts (the bits of <see cref="Scores"/> / <see cref="Accumulate"/>
    /// per token); FP32 rows are read in place per token. Lets a mixed layer's quantized side share too.
    /// </summary>
    public bool SharesCausal(int rep) => _fused;

    public void ScoresCausal(int kvHead, ReadOnlySpan<float> queries, int rep, int headDim, int firstLength, int tokens, Span<float> scores, int perToken, Span<float> rows, Span<float> work)
    {
        if (!_fused || !_half)
        {
            IKvTensorStore.ScoresEachToken(this, kvHead, queries, rep, _layout.HeadDim, firstLength, tokens, scores, perToken);
            return;
        }

        int hd = _layout.HeadDim, n = rep * hd, last = firstLength + tokens - 1;
        _ = rows[(FusedAttentionKernels.SharedRows(hd) * hd) - 1];
        _ = queries[(tokens * n) - 1];
        _ = scores[((tokens - 1) * perToken) + (rep * last) - 1];
        fixed (float* q = queries)
        fixed (float* sc = scores)
        fixed (float* x = rows)
        {
            FusedAttentionKernels.ScoresCausalHalf((ushort*)HeadPointer(kvHead), hd, x, q, n, rep, firstLength, tokens, sc, perToken);
        }
    }

    public void AccumulateCausal(int kvHead, ReadOnlySpan<float> probs, int perToken, int rep, int headDim, int firstLength, int tokens, Span<float> output, int outputStride, Span<float> rows, Span<float> work)
    {
        if (!_fused || !_half)
        {
            IKvTensorStore.AccumulateEachToken(this, kvHead, probs, perToken, rep, _layout.HeadDim, firstLength, tokens, output, outputStride);
            return;
        }

        int hd = _layout.HeadDim, n = rep * hd, last = firstLength + tokens - 1;
        _ = rows[(FusedAttentionKernels.SharedRows(hd) * hd) - 1];
        _ = probs[((tokens - 1) * perToken) + (rep * last) - 1];
        _ = output[((tokens - 1) * outputStride) + n - 1];
        fixed (float* p = probs)
        fixed (float* o = output)
        fixed (float* x = rows)
        {
            FusedAttentionKernels.AccumulateCausalHalf((ushort*)HeadPointer(kvHead), hd, x, p, perToken, rep, firstLength, tokens, o, outputStride);
        }
    }

    public void Read(int kvHead, int start, int count, Span<float> dst)
    {
        int hd = _layout.HeadDim;
        for (int j = 0; j < count; j++)
        {
            var d = dst.Slice(j * hd, hd);
            Row(kvHead, start + j, d).CopyTo(d);
        }
    }

    public void Clear() => Length = 0;

    public void WriteState(KvStateWriter writer)
    {
        long bytes = (long)Length * _layout.HeadDim * (_half ? 2 : 4);
        for (int h = 0; h < _layout.KvHeads; h++)
        {
            writer.Write(new ReadOnlySpan<byte>(HeadPointer(h), checked((int)bytes)));
        }
    }

    public void ReadState(KvStateReader reader, int length)
    {
        Length = 0;
        long bytes = (long)length * _layout.HeadDim * (_half ? 2 : 4);
        for (int h = 0; h < _layout.KvHeads; h++)
        {
            reader.Read(new Span<byte>(HeadPointer(h), checked((int)bytes)));
        }

        Length = length;
    }

    public bool CanTruncate(int length) => length >= 0 && length <= Length;

    public void Truncate(int length) => Length = CanTruncate(length) ? length : throw new ArgumentOutOfRangeException(nameof(length), $"cannot keep {length} of {Length} positions");

    private bool Fused => _fused;

    private byte* HeadPointer(int kvHead) => _data.Pointer + ((long)kvHead * _layout.Capacity * _layout.HeadDim * (_half ? 2 : 4));

    public void Dispose() => _data.Dispose();

    private ReadOnlySpan<float> Row(int kvHead, int position, Span<float> tmp)
    {
        int hd = _layout.HeadDim;
        long index = (((long)kvHead * _layout.Capacity) + position) * hd;
        if (_half)
        {
            TensorPrimitives.ConvertToSingle(_data.AsSpan<Half>(index, hd), tmp);
            return tmp;
        }

        return _data.AsSpan<float>(index, hd);
    }
}
