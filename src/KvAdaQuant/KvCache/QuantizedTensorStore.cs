using System.Numerics.Tensors;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using KvAdaQuant.Numerics;
using KvAdaQuant.Quantization;

namespace KvAdaQuant.KvCache;

/// <summary>
/// One tensor kind of one layer, quantized by a <see cref="KvSpec"/>. Per KV head it holds, each contiguous for
/// streaming reads: the sink rows (FP16), the packed code rows of quantized tokens ([token][packed head vector]),
/// their FP16 parameters (per-token: [token][group][scale, zero]; per-channel: [chunk][channel][scale, zero]),
/// and a ring of Residual + FlushChunk FP16 rows for the full-precision window. Attention reads the packed rows
/// directly: each row is unpacked and dequantized into one head-sized block (never a cache-sized buffer) that
/// serves every query head of the KV head; per-channel chunks fold scales into the queries, q · (a c + b) = (q a) · c + q · b.
/// </summary>
internal sealed unsafe class QuantizedTensorStore : IKvTensorStore
{
    /// <summary>Largest rep * headDim the fused path handles (its permuted queries and outputs live on the stack).</summary>
    private const int MaxFusedFloats = 8192;

    /// <summary>Bytes after the parameters that <see cref="Int8AttentionKernels"/> may read (never used).</summary>
    private const int ParamPadBytes = 128;

    private readonly KvSpec _spec;
    private readonly KvBits _bits;
    private readonly int _heads;
    private readonly int _hd;
    private readonly int _cap;
    private readonly int _rowBytes;
    private readonly int _groupChannels;

    // Whether the FP32 scores over the quantized rows (decode and prefill alike) take ColumnScoreKernels.
    private readonly bool _columnScores;
    private readonly int _groupsPerRow;
    private readonly int _pp;
    private readonly int _sinkCap;
    private readonly int _ringCap;
    private readonly int _chunk;
    private readonly bool _perChannel;
    private readonly long _paramsPerHead;
    private readonly NativeBuffer _codes;
    private readonly NativeBuffer _params;
    private readonly NativeBuffer _sinks;
    private readonly NativeBuffer _ring;
    private readonly float[] _flushValues;
    private readonly byte[] _flushCodes;
    private readonly float _symStep;
    private readonly float _symOffset;
    private readonly bool _fused;
    private readonly int[] _permutation;
    private readonly bool _int8;
    private readonly bool _int8Values;
    private readonly int[] _byteTable;
    private readonly bool _tiled;
    private readonly bool _wholeVectorRows;
    private readonly long _headCodeBytes;
    private int _quantized;

    /// <summary>
    /// Creates an empty store. <paramref name="int8Keys"/>: the store holds the keys of the int8 score path, so where
    /// <see cref="SupportsInt8"/> its codes are laid out in <see cref="KeyTiles"/> for that kernel (<see cref="IsTiled"/>;
    /// its FP32 <see cref="Scores"/> then take the row-at-a-time path). <paramref name="keys"/>: the store holds keys
    /// for FP32 attention, so where <see cref="ColumnScoreKernels"/> scores them its codes are laid out in
    /// <see cref="KeyTiles"/> too, which that kernel loads as columns without transposing rows (the same bits).
    /// </summary>
    public QuantizedTensorStore(KvLayout layout, KvSpec spec, bool allowFused = true, bool int8Keys = false, bool keys = false)
    {
        if (spec.Problem(layout.HeadDim) is { } problem)
        {
            throw new ArgumentException(problem);
        }

        _spec = spec;
        _bits = spec.Bits;
        _heads = layout.KvHeads;
        _hd = layout.HeadDim;
        _cap = layout.Capacity;
        _rowBytes = BitPacking.PackedBytes(_hd, _bits);
        _perChannel = spec.Axis == QuantAxis.PerChannel;
        _groupChannels = _perChannel ? 1 : spec.ChannelGroup(_hd);
        _groupsPerRow = _hd / _groupChannels;
        _pp = spec.Symmetric ? 1 : 2;
        _sinkCap = Math.Min(spec.Sinks, _cap);
        _chunk = spec.FlushChunk;
        _ringCap = (int)Math.Min((long)spec.Residual + _chunk, _cap + (long)_chunk);
        _paramsPerHead = _perChannel ? ((long)(_cap / _chunk) + 1) * _hd * _pp : (long)_cap * _groupsPerRow * _pp;
        _int8 = !_perChannel && _bits.IntegerBits() is 2 or 4 or 8 && Int8AttentionKernels.Supports(_bits.IntegerBits(), _hd, _groupChannels);
        bool fusable = allowFused && FusedAttentionKernels.IsSupported && !_perChannel && FusedAttentionKernels.SupportsPacked(_bits.IntegerBits(), _hd, _groupChannels);
        bool columns = fusable && ColumnScoreKernels.IsSupported && ColumnScoreKernels.Supports(_bits.IntegerBits(), _hd, _groupChannels, spec.Symmetric);
        bool int8Tiles = int8Keys && _int8;
        _tiled = int8Tiles || ((keys || int8Keys) && columns);
        _headCodeBytes = _tiled ? KeyTiles.Bytes(_cap, _rowBytes) : (long)_cap * _rowBytes;
        _codes = new NativeBuffer(_heads * _headCodeBytes);
        // Padded so the int8 kernel's 64-word parameter window of the last eight tokens stays inside the buffer.
        _params = new NativeBuffer((_heads * _paramsPerHead * 2) + ParamPadBytes);
        _sinks = new NativeBuffer((long)_heads * _sinkCap * _hd * 2);
        _ring = new NativeBuffer((long)_heads * _ringCap * _hd * 2);
        _flushValues = new float[_chunk * _hd];
        _flushCodes = new byte[_chunk * _hd];
        (_symStep, _symOffset) = spec.Symmetric ? AffineQuantizer.Effective(new QuantParams(Half.One, default), _bits, true) : (1f, 0f);
        // The int8 path's keys keep the row-at-a-time FP32 scores (as before the FP32 tiles); keys tiled for the column
        // kernel take it, and nothing else of the fused path reads them.
        _fused = fusable && !int8Tiles;
        _permutation = _fused ? FusedAttentionKernels.PermutationTable(_hd, _bits.IntegerBits()) : [];
        _columnScores = _fused && columns;
        _int8Values = allowFused && !_perChannel && Int8ValueKernels.IsSupported && Int8ValueKernels.Supports(_bits.IntegerBits(), _hd, _groupChannels);
        _byteTable = _int8Values ? Int8ValueKernels.PermutationTable(_hd, _bits.IntegerBits()) : [];
        _wholeVectorRows = allowFused && !_perChannel && _bits is KvBits.Two or KvBits.Four or KvBits.Eight
            && _groupChannels % 16 == 0 && Avx512F.IsSupported && Vector512.IsHardwareAccelerated;
    }

    /// <summary>
    /// Whether <see cref="ScoresInt8"/> handles this store: per-token groups of 2-, 4- or 8-bit codes in a shape
    /// <see cref="Int8AttentionKernels.Supports"/> (else the caller keeps FP32 attention for it).
    /// </summary>
    public bool SupportsInt8 => _int8;

    /// <summary>
    /// Whether <see cref="AccumulateSoftmaxInt8"/> handles this store: 2- or 4-bit per-token groups in a shape
    /// <see cref="Int8ValueKernels.Supports"/>, on a CPU with AVX-512 VBMI.
    /// </summary>
    public bool SupportsInt8Values => _int8Values;

    /// <summary>Whether the codes lie in <see cref="KeyTiles"/> (the int8 score path's keys) rather than row after row.</summary>
    public bool IsTiled => _tiled;

    /// <summary>Whether attention runs through <see cref="FusedAttentionKernels"/> (else the row-at-a-time general path).</summary>
    public bool IsFused => _fused;

    public KvSpec Spec => _spec;

    public int Length { get; private set; }

    /// <summary>Tokens held quantized (the rest are sinks or in the residual window).</summary>
    public int QuantizedCount => _quantized;

    public long ByteCount => _heads * _spec.BytesPerHead(_hd, Length);

    private int SinksHeld => Math.Min(_sinkCap, Length);

    public void Append(ReadOnlySpan<float> rows, int tokens)
    {
        int kvDim = _heads * _hd;
        for (int t = 0; t < tokens; t++)
        {
            int p = Length;
            for (int h = 0; h < _heads; h++)
            {
                var src = rows.Slice((t * kvDim) + (h * _hd), _hd);
                TensorPrimitives.ConvertToHalf(src, p < _sinkCap ? SinkRow(h, p) : RingRow(h, p - _sinkCap));
            }

            Length++;
            if (p >= _sinkCap && Length - _sinkCap - _quantized >= _spec.Residual + _chunk)
            {
                Flush();
            }
        }
    }

    /// <summary>
    /// The row-at-a-time path (neither the fused kernels nor per-channel groups): sinks and the FP16 window widened,
    /// per-token rows dequantized (what <see cref="Read"/> returns), each scored by MultiDot and summed by MultiAxpy.
    /// </summary>
    private bool AttendsReadRows(int rep) => !FusedRows(rep) && !_perChannel;

    /// <summary>
    /// Per-token rows where attention goes row by row (<see cref="AttendsReadRows"/>: each chunk read once for the batch)
    /// or through the fused kernels (<see cref="FusedRows"/>: each chunk decoded once for the batch);
    /// per-channel groups too, where a group's tokens fit one chunk of <see cref="IKvTensorStore.CausalRows"/> (their
    /// codes unpacked once for the batch, the group's a and b applied per token as <see cref="Scores"/> and
    /// <see cref="Accumulate"/> apply them).
    /// </summary>
    public bool SharesCausal(int rep) => AttendsReadRows(rep) || FusedRows(rep) || (_perChannel && _chunk <= IKvTensorStore.CausalRows);

    /// <summary>
    /// Whether the fused kernels attend the rows at <paramref name="rep"/> query heads (<see cref="ScoresFused"/>,
    /// <see cref="AccumulateFused"/>). For a batch: each chunk of
    /// <see cref="FusedAttentionKernels.SharedRows"/> quantized rows decoded once into FP32 in the kernels' channel order
    /// (<see cref="FusedAttentionKernels.DequantizePacked"/>), then scored and summed per token by the FP32 form of the
    /// same kernels from the same 64-token block starts; sinks and the window per token as the fused path reads them.
    /// </summary>
    private bool FusedRows(int rep) => _fused && rep * _hd <= MaxFusedFloats;

    public void ScoresCausal(int kvHead, ReadOnlySpan<float> queries, int rep, int headDim, int firstLength, int tokens, Span<float> scores, int perToken, Span<float> rows, Span<float> work)
    {
        int last = firstLength + tokens - 1;
        if (!SharesCausal(rep))
        {
            IKvTensorStore.ScoresEachToken(this, kvHead, queries, rep, _hd, firstLength, tokens, scores, perToken);
            return;
        }

        if (FusedRows(rep))
        {
            ScoresCausalFused(kvHead, queries, rep, firstLength, tokens, scores, perToken, rows, work);
            return;
        }

        if (!_perChannel)
        {
            ScoreReadRows(kvHead, queries, rep, _hd, firstLength, tokens, scores, perToken, rows, 0, last);
            return;
        }

        // As Scores: sinks and the window as widened rows; per-channel chunks as qa = q * a against the codes, + q · b.
        int hd = _hd, n = rep * hd;
        int s0 = SinksHeld;
        int qEnd = s0 + _quantized;
        ScoreReadRows(kvHead, queries, rep, hd, firstLength, tokens, scores, perToken, rows, 0, Math.Min(s0, last));
        Span<float> a = stackalloc float[hd];
        Span<float> b = stackalloc float[hd];
        Span<float> qa = n <= 4096 ? stackalloc float[n] : new float[n];
        Span<float> k0 = stackalloc float[rep];
        for (int m0 = 0; s0 + m0 < Math.Min(qEnd, last); m0 += _chunk)
        {
            int cnt = UnpackChunk(kvHead, m0, Math.Min(qEnd, last) - s0, a, b, rows);

            for (int t = 0; t < tokens; t++)
            {
                int length = firstLength + t;
                int count = Math.Min(cnt, Math.Min(qEnd, length) - s0 - m0);
                if (count <= 0)
                {
                    continue;
                }

                var q = queries.Slice(t * n, n);
                for (int r = 0; r < rep; r++)
                {
                    TensorPrimitives.Multiply(q.Slice(r * hd, hd), a, qa.Slice(r * hd, hd));
                    k0[r] = TensorPrimitives.Dot(q.Slice(r * hd, hd), b);
                }

                var st = scores.Slice(t * perToken, perToken);
                AttentionKernels.MultiDotRows(qa, rep, hd, rows, count, st, length, s0 + m0);
                for (int u = 0; u < count; u++)
                {
                    for (int r = 0; r < rep; r++)
                    {
                        st[(r * length) + s0 + m0 + u] += k0[r];
                    }
                }
            }
        }

        ScoreReadRows(kvHead, queries, rep, hd, firstLength, tokens, scores, perToken, rows, Math.Max(qEnd, s0), last);
    }

    // Scores of positions [from, to) as Read returns the rows, a buffer of rows at a time, each token up to its own
    // length (scores[t * perToken + r * length + j]), each row scored by MultiDot (MultiDotRows).
    private void ScoreReadRows(int kvHead, ReadOnlySpan<float> queries, int rep, int hd, int firstLength, int tokens, Span<float> scores, int perToken, Span<float> rows, int from, int to)
    {
        int n = rep * hd, chunk = rows.Length / hd;
        for (int c0 = from; c0 < to; c0 += chunk)
        {
            int m = Math.Min(chunk, to - c0);
            Read(kvHead, c0, m, rows[..(m * hd)]);
            for (int t = 0; t < tokens; t++)
            {
                int end = Math.Min(firstLength + t - c0, m);
                AttentionKernels.MultiDotRows(queries.Slice(t * n, n), rep, hd, rows, end, scores.Slice(t * perToken, perToken), firstLength + t, c0);
            }
        }
    }

    // The value sums of positions [from, to) likewise, in position order (MultiAxpyRows).
    private void AccumulateReadRows(int kvHead, ReadOnlySpan<float> probs, int perToken, int rep, int hd, int firstLength, int tokens, Span<float> output, int outputStride, Span<float> rows, int from, int to)
    {
        int n = rep * hd, chunk = rows.Length / hd;
        for (int c0 = from; c0 < to; c0 += chunk)
        {
            int m = Math.Min(chunk, to - c0);
            Read(kvHead, c0, m, rows[..(m * hd)]);
            for (int t = 0; t < tokens; t++)
            {
                int end = Math.Min(firstLength + t - c0, m);
                AttentionKernels.MultiAxpyRows(probs.Slice(t * perToken, perToken), rep, hd, rows, end, output.Slice(t * outputStride, n), firstLength + t, c0);
            }
        }
    }

    // Per-channel chunk from row m0: its a and b, and its code rows below `end` (a row count) unpacked into rows; returns how many.
    private int UnpackChunk(int kvHead, int m0, int end, Span<float> a, Span<float> b, Span<float> rows)
    {
        ChunkEffective(kvHead, m0 / _chunk, a, b);
        int cnt = Math.Min(_chunk, end - m0);
        for (int u = 0; u < cnt; u++)
        {
            BitPacking.Unpack(CodeRow(kvHead, m0 + u), _bits, rows.Slice(u * _hd, _hd));
        }

        return cnt;
    }

    public void AccumulateCausal(int kvHead, ReadOnlySpan<float> probs, int perToken, int rep, int headDim, int firstLength, int tokens, Span<float> output, int outputStride, Span<float> rows, Span<float> work)
    {
        int last = firstLength + tokens - 1;
        if (!SharesCausal(rep))
        {
            IKvTensorStore.AccumulateEachToken(this, kvHead, probs, perToken, rep, _hd, firstLength, tokens, output, outputStride);
            return;
        }

        if (FusedRows(rep))
        {
            AccumulateCausalFused(kvHead, probs, perToken, rep, firstLength, tokens, output, outputStride, rows, work);
            return;
        }

        if (!_perChannel)
        {
            AccumulateReadRows(kvHead, probs, perToken, rep, _hd, firstLength, tokens, output, outputStride, rows, 0, last);
            return;
        }

        // As AccumulatePerChannel: per chunk acc = sum_j p_j c_j and P = sum_j p_j, then out += a * acc + b * P.
        int hd = _hd, n = rep * hd;
        int s0 = SinksHeld;
        int qEnd = s0 + _quantized;
        AccumulateReadRows(kvHead, probs, perToken, rep, hd, firstLength, tokens, output, outputStride, rows, 0, Math.Min(s0, last));
        Span<float> a = stackalloc float[hd];
        Span<float> b = stackalloc float[hd];
        Span<float> acc = n <= 4096 ? stackalloc float[n] : new float[n];
        Span<float> psum = stackalloc float[rep];
        for (int m0 = 0; s0 + m0 < Math.Min(qEnd, last); m0 += _chunk)
        {
            int cnt = UnpackChunk(kvHead, m0, Math.Min(qEnd, last) - s0, a, b, rows);

            for (int t = 0; t < tokens; t++)
            {
                int length = firstLength + t;
                int count = Math.Min(cnt, Math.Min(qEnd, length) - s0 - m0);
                if (count <= 0)
                {
                    continue;
                }

                var p = probs.Slice(t * perToken, perToken);
                acc.Clear();
                psum.Clear();
                AttentionKernels.MultiAxpyRows(p, rep, hd, rows, count, acc, length, s0 + m0);
                for (int u = 0; u < count; u++)
                {
                    for (int r = 0; r < rep; r++)
                    {
                        psum[r] += p[(r * length) + s0 + m0 + u];
                    }
                }

                for (int r = 0; r < rep; r++)
                {
                    var o = output.Slice((t * outputStride) + (r * hd), hd);
                    TensorPrimitives.MultiplyAdd(acc.Slice(r * hd, hd), a, o, o);
                    TensorPrimitives.MultiplyAdd(b, psum[r], o, o);
                }
            }
        }

        AccumulateReadRows(kvHead, probs, perToken, rep, hd, firstLength, tokens, output, outputStride, rows, Math.Max(qEnd, s0), last);
    }

    // ScoresFused for each token of a batch (token t over firstLength + t positions), the quantized rows decoded once a
    // chunk for all of them. Chunks start at multiples of SharedRows (a multiple of the kernels' TokenBlock), so each
    // token's rows go through the same 64-, 16- and 8-token blocks and reduction trees as in its own ScoresFused call;
    // where ScoresFused takes the column kernel, the chunk's codes are decoded into its columns once and each token's
    // lanes do its decode arithmetic (ColumnScoreKernels.ScoresCausalChunk).
    private void ScoresCausalFused(int kvHead, ReadOnlySpan<float> queries, int rep, int firstLength, int tokens, Span<float> scores, int perToken, Span<float> rows, Span<float> work)
    {
        int hd = _hd, n = rep * hd, chunk = FusedAttentionKernels.SharedRows(_hd);
        int s0 = SinksHeld;
        int quantLast = Math.Min(s0 + _quantized, firstLength + tokens - 1);
        _ = rows[(chunk * hd) - 1];
        _ = work[(tokens * n) - 1];
        _ = queries[(tokens * n) - 1];
        _ = scores[((tokens - 1) * perToken) + (rep * (firstLength + tokens - 1)) - 1];
        // Only the per-row kernels read permuted queries; the column kernel takes them in channel order.
        for (int t = 0; t < (_columnScores ? 0 : tokens); t++)
        {
            FusedAttentionKernels.Permute(queries.Slice(t * n, n), _permutation, work.Slice(t * n, n));
        }

        fixed (float* q = queries)
        fixed (float* pq = work)
        fixed (float* sc = scores)
        fixed (float* x = rows)
        {
            for (int t = 0; t < tokens; t++)
            {
                int length = firstLength + t, sinkEnd = Math.Min(s0, length);
                if (sinkEnd > 0)
                {
                    FusedAttentionKernels.ScoresDense(SinkPointer(kvHead, 0), true, sinkEnd, hd, q + (t * n), rep, sc + (t * perToken), length);
                }
            }

            if (_columnScores)
            {
                // The decode kernel's arithmetic per token (ColumnScoreKernels), its codes decoded once a chunk.
                float* planes = stackalloc float[chunk * MaxColumnParameters];
                for (int c0 = 0; s0 + c0 < quantLast; c0 += chunk)
                {
                    int cnt = Math.Min(chunk, quantLast - s0 - c0);
                    var chunkRows = Rows(kvHead, c0, cnt);
                    ColumnScoreKernels.DecodeColumns(chunkRows, x, planes);
                    ColumnScoreKernels.ScoresCausalChunk(chunkRows, x, planes, s0 + c0, cnt, s0 + _quantized, q, n, rep, firstLength, tokens, sc, perToken);
                }
            }
            else
            {
                for (int c0 = 0; s0 + c0 < quantLast; c0 += chunk)
                {
                    int cnt = Math.Min(chunk, quantLast - s0 - c0);
                    FusedAttentionKernels.DequantizePacked(Rows(kvHead, c0, cnt), x);
                    FusedAttentionKernels.ScoresCausalChunk(x, s0 + c0, cnt, s0 + _quantized, hd, pq, n, rep, firstLength, tokens, sc, perToken);
                }
            }

            for (int t = 0; t < tokens; t++)
            {
                int length = firstLength + t;
                for (int j = Math.Max(Math.Min(s0 + _quantized, length), s0); j < length;)
                {
                    int r = RingRun(j - s0, length - j);
                    FusedAttentionKernels.ScoresDense(RingPointer(kvHead, j - s0), true, r, hd, q + (t * n), rep, sc + (t * perToken) + j, length);
                    j += r;
                }
            }
        }
    }

    // AccumulateFused for each token of a batch likewise: per token the sinks into its output, the quantized rows into
    // its own permuted sums (work) chunk after chunk, those added un-permuted, then the window, in AccumulateFused's order.
    private void AccumulateCausalFused(int kvHead, ReadOnlySpan<float> probs, int perToken, int rep, int firstLength, int tokens, Span<float> output, int outputStride, Span<float> rows, Span<float> work)
    {
        int hd = _hd, n = rep * hd, chunk = FusedAttentionKernels.SharedRows(_hd);
        int s0 = SinksHeld;
        int quantLast = Math.Min(s0 + _quantized, firstLength + tokens - 1);
        _ = rows[(chunk * hd) - 1];
        _ = work[(tokens * n) - 1];
        _ = probs[((tokens - 1) * perToken) + (rep * (firstLength + tokens - 1)) - 1];
        _ = output[((tokens - 1) * outputStride) + n - 1];
        work[..(tokens * n)].Clear();
        fixed (float* p = probs)
        fixed (float* o = output)
        fixed (float* po = work)
        fixed (float* x = rows)
        {
            for (int t = 0; t < tokens; t++)
            {
                int length = firstLength + t, sinkEnd = Math.Min(s0, length);
                if (sinkEnd > 0)
                {
                    FusedAttentionKernels.AccumulateDense(SinkPointer(kvHead, 0), true, sinkEnd, hd, p + (t * perToken), length, rep, o + (t * outputStride));
                }
            }

            for (int c0 = 0; s0 + c0 < quantLast; c0 += chunk)
            {
                int cnt = Math.Min(chunk, quantLast - s0 - c0);
                FusedAttentionKernels.DequantizePacked(Rows(kvHead, c0, cnt), x);
                FusedAttentionKernels.AccumulateCausalChunk(x, s0 + c0, cnt, s0 + _quantized, hd, p, perToken, rep, firstLength, tokens, po, n);
            }

            for (int t = 0; t < tokens; t++)
            {
                int length = firstLength + t;
                if (Math.Min(s0 + _quantized, length) > s0)
                {
                    FusedAttentionKernels.AddUnpermuted(work.Slice(t * n, n), _permutation, output.Slice(t * outputStride, n));
                }

                for (int j = Math.Max(Math.Min(s0 + _quantized, length), s0); j < length;)
                {
                    int r = RingRun(j - s0, length - j);
                    FusedAttentionKernels.AccumulateDense(RingPointer(kvHead, j - s0), true, r, hd, p + (t * perToken) + j, length, rep, o + (t * outputStride));
                    j += r;
                }
            }
        }
    }

    public void Scores(int kvHead, ReadOnlySpan<float> queries, int rep, int length, Span<float> scores)
    {
        if (FusedRows(rep))
        {
            ScoresFused(kvHead, queries, rep, length, scores);
            return;
        }

        int hd = _hd;
        if (!_perChannel)
        {
            // Per-token rows (and sinks, and the window) as Read returns them, a chunk at a time, each scored by MultiDot.
            Span<float> rows = stackalloc float[RowChunk * hd];
            ScoreReadRows(kvHead, queries, rep, hd, length, 1, scores, rep * length, rows, 0, length);
            return;
        }

        Span<float> buf = stackalloc float[hd];
        int s0 = SinksHeld;
        int sinkEnd = Math.Min(s0, length);
        int quantEnd = Math.Min(s0 + _quantized, length);
        for (int j = 0; j < sinkEnd; j++)
        {
            TensorPrimitives.ConvertToSingle(SinkRow(kvHead, j), buf);
            DotAll(queries, rep, buf, scores, length, j);
        }

        if (quantEnd > s0)
        {
            ScoresPerChannel(kvHead, queries, rep, length, scores, s0, quantEnd, buf);
        }

        for (int j = Math.Max(quantEnd, s0); j < length; j++)
        {
            TensorPrimitives.ConvertToSingle(RingRow(kvHead, j - s0), buf);
            DotAll(queries, rep, buf, scores, length, j);
        }
    }

    public void Accumulate(int kvHead, ReadOnlySpan<float> probs, int rep, int length, Span<float> output)
    {
        if (FusedRows(rep))
        {
            AccumulateFused(kvHead, probs, rep, length, output);
            return;
        }

        AccumulateRows(kvHead, probs, rep, length, output);
    }

    // The row-at-a-time value sum; in softmax mode (max and sums given, see AccumulateSoftmaxInt8) the whole steps of
    // quantized rows go through Int8ValueKernels first.
    private void AccumulateRows(int kvHead, ReadOnlySpan<float> probs, int rep, int length, Span<float> output, float* max = null, float* sums = null)
    {
        int hd = _hd;
        if (!_perChannel && max == null)
        {
            // Per-token rows (and sinks, and the window) as Read returns them, a chunk at a time, summed by MultiAxpy in order.
            Span<float> rows = stackalloc float[RowChunk * hd];
            AccumulateReadRows(kvHead, probs, rep * length, rep, hd, length, 1, output, rep * hd, rows, 0, length);
            return;
        }

        Span<float> buf = stackalloc float[hd];
        int s0 = SinksHeld;
        int sinkEnd = Math.Min(s0, length);
        int quantEnd = Math.Min(s0 + _quantized, length);
        for (int j = 0; j < sinkEnd; j++)
        {
            TensorPrimitives.ConvertToSingle(SinkRow(kvHead, j), buf);
            AxpyAll(probs, rep, buf, output, length, j);
        }

        if (quantEnd > s0)
        {
            if (_perChannel)
            {
                AccumulatePerChannel(kvHead, probs, rep, length, output, s0, quantEnd, buf);
            }
            else
            {
                int first = max != null ? ByteRows(kvHead, probs, rep, length, output, s0, quantEnd - s0, max, sums) : 0;
                AccumulatePerToken(kvHead, probs, rep, length, output, s0, quantEnd, buf, first);
            }
        }

        for (int j = Math.Max(quantEnd, s0); j < length; j++)
        {
            TensorPrimitives.ConvertToSingle(RingRow(kvHead, j - s0), buf);
            AxpyAll(probs, rep, buf, output, length, j);
        }
    }

    public void Read(int kvHead, int start, int count, Span<float> dst)
    {
        if (start < 0 || count < 0 || start + count > Length)
        {
            throw new ArgumentOutOfRangeException(nameof(count), $"positions {start}..{start + count} outside 0..{Length}");
        }

        int hd = _hd;
        int s0 = SinksHeld;
        for (int j = start; j < start + count; j++)
        {
            var d = dst.Slice((j - start) * hd, hd);
            if (j >= s0 && j < s0 + _quantized && _wholeVectorRows)
            {
                // A run of per-token rows, dequantized sixteen channels a vector (DequantizeRow's values).
                int run = Math.Min(start + count, s0 + _quantized) - j;
                fixed (float* p = d)
                {
                    DequantizeRows(kvHead, j - s0, run, p);
                }

                j += run - 1;
                continue;
            }

            if (j < s0)
            {
                TensorPrimitives.ConvertToSingle(SinkRow(kvHead, j), d);
            }
            else if (j < s0 + _quantized)
            {
                int m = j - s0;
                if (!_perChannel)
                {
                    DequantizeRow(kvHead, m, d);
                    continue;
                }

                BitPacking.UnpackScalar(CodeRow(kvHead, m), _bits, d);
                var prm = ChunkParams(kvHead, m / _chunk);
                for (int c = 0; c < hd; c++)
                {
                    var (a, b) = Effective(prm, c);
                    d[c] = (a * d[c]) + b;
                }
            }
            else
            {
                TensorPrimitives.ConvertToSingle(RingRow(kvHead, j - s0), d);
            }
        }
    }

    public void Clear()
    {
        Length = 0;
        _quantized = 0;
    }

    // Per head: the sink rows held (FP16), the packed code rows of the quantized positions (row after row, also when the
    // store keeps them in KeyTiles), their FP16 parameters as stored (per-token: [token][group][scale, zero]; per-channel:
    // [chunk][channel][scale, zero]; no zero when symmetric), then the residual rows in position order (FP16).
    public void WriteState(KvStateWriter writer)
    {
        int s0 = SinksHeld;
        int residual = Length - s0 - _quantized;
        Span<byte> row = stackalloc byte[_rowBytes];
        for (int h = 0; h < _heads; h++)
        {
            writer.Write<Half>(new ReadOnlySpan<Half>(SinkPointer(h, 0), s0 * _hd));
            if (_tiled)
            {
                for (int m = 0; m < _quantized; m++)
                {
                    KeyTiles.ReadRow(_codes.Pointer + (h * _headCodeBytes), m, _rowBytes, row);
                    writer.Write(row);
                }
            }
            else
            {
                writer.Write(new ReadOnlySpan<byte>(_codes.Pointer + (h * _headCodeBytes), checked(_quantized * _rowBytes)));
            }

            writer.Write<Half>(new ReadOnlySpan<Half>((Half*)_params.Pointer + (h * _paramsPerHead), ParamHalves(_quantized)));
            for (int m = _quantized; m < _quantized + residual; m++)
            {
                writer.Write<Half>(RingRow(h, m));
            }
        }
    }

    public void ReadState(KvStateReader reader, int length)
    {
        Clear();
        int s0 = Math.Min(_sinkCap, length);
        int quantized = QuantizedAt(length);
        int residual = length - s0 - quantized;
        Span<byte> row = stackalloc byte[_rowBytes];
        for (int h = 0; h < _heads; h++)
        {
            reader.Read<Half>(new Span<Half>(SinkPointer(h, 0), s0 * _hd));
            if (_tiled)
            {
                for (int m = 0; m < quantized; m++)
                {
                    reader.Read(row);
                    KeyTiles.WriteRow(_codes.Pointer + (h * _headCodeBytes), m, _rowBytes, row);
                }
            }
            else
            {
                reader.Read(new Span<byte>(_codes.Pointer + (h * _headCodeBytes), checked(quantized * _rowBytes)));
            }

            reader.Read<Half>(new Span<Half>((Half*)_params.Pointer + (h * _paramsPerHead), ParamHalves(quantized)));
            for (int m = quantized; m < quantized + residual; m++)
            {
                reader.Read<Half>(RingRow(h, m));
            }
        }

        Length = length;
        _quantized = quantized;
    }

    // Exact when no position beyond length has been quantized since: the first length positions alone would have
    // quantized the same rows, with the same parameters, and left the same rows in the residual window.
    // Exact when the first `length` positions are held as appending them alone holds them: the same quantized prefix
    // (the cut inside the FP16 window, or every position up to it quantized in whole chunks that end at it, as per-token
    // groups without a window always are) and the rest in the window.
    public bool CanTruncate(int length) =>
        length >= 0 && length <= Length && Math.Min(_quantized, length - Math.Min(_sinkCap, length)) == QuantizedAt(length);

    public void Truncate(int length)
    {
        if (!CanTruncate(length))
        {
            throw new KvCacheException($"keeping {length} of {Length} positions of a {_spec} store is not exact: {_quantized} positions are quantized, {length} alone would quantize {QuantizedAt(Math.Max(0, length))}");
        }

        _quantized = QuantizedAt(length);
        Length = length;
    }

    // Positions that Append quantizes among the first length: whole flush chunks beyond the sinks and the residual window.
    private int QuantizedAt(int length)
    {
        int over = length - Math.Min(_sinkCap, length) - _spec.Residual;
        return over <= 0 ? 0 : over / _chunk * _chunk;
    }

    private int ParamHalves(int quantized) => checked(_perChannel ? quantized / _chunk * _hd * _pp : quantized * _groupsPerRow * _pp);

    public void Dispose()
    {
        _codes.Dispose();
        _params.Dispose();
        _sinks.Dispose();
        _ring.Dispose();
    }

    /// <summary>
    /// Scores with int8 queries (<see cref="Int8AttentionKernels"/>) over the quantized rows, FP32 over the sinks and the
    /// residual window: scores[r * length + j] for the rep heads of <paramref name="queries"/> (already multiplied by the
    /// softmax scale), and max[r] = the largest score of head r. Requires <see cref="SupportsInt8"/>.
    /// </summary>
    public void ScoresInt8(int kvHead, ReadOnlySpan<float> queries, int rep, int length, Span<float> scores, Span<float> max)
    {
        if (!_int8)
        {
            throw new InvalidOperationException($"int8 attention does not handle keys stored as {_spec}");
        }

        if (!_tiled)
        {
            throw new InvalidOperationException("int8 scores read keys laid out in KeyTiles: create the store with int8Keys: true");
        }

        int hd = _hd;
        _ = scores[(rep * length) - 1];
        _ = max[rep - 1];
        _ = queries[(rep * hd) - 1];
        int s0 = SinksHeld;
        int sinkEnd = Math.Min(s0, length);
        int quantEnd = Math.Min(s0 + _quantized, length);
        int groups = _groupsPerRow;
        sbyte* q8 = stackalloc sbyte[Int8AttentionKernels.HeadBlock * hd];
        int* dwords = stackalloc int[Int8AttentionKernels.DwordCount(hd)];
        float* steps = stackalloc float[Int8AttentionKernels.HeadBlock * groups];
        float* sums = stackalloc float[Int8AttentionKernels.HeadBlock * groups];
        float* blockMax = stackalloc float[Int8AttentionKernels.HeadBlock];
        fixed (float* q = queries)
        fixed (float* sc = scores)
        {
            if (sinkEnd > 0)
            {
                DenseScores(SinkPointer(kvHead, 0), sinkEnd, q, rep, sc, length);
            }

            for (int j = Math.Max(quantEnd, s0); j < length;)
            {
                int n = RingRun(j - s0, length - j);
                DenseScores(RingPointer(kvHead, j - s0), n, q, rep, sc + j, length);
                j += n;
            }

            for (int r = 0; r < rep; r++)
            {
                var row = scores.Slice(r * length, length);
                float m = sinkEnd > 0 ? Kernels.MaxVector(row[..sinkEnd]) : float.NegativeInfinity;
                int ringStart = Math.Max(quantEnd, s0);
                if (ringStart < length)
                {
                    m = MathF.Max(m, Kernels.MaxVector(row[ringStart..]));
                }

                max[r] = m;
            }

            if (quantEnd > s0)
            {
                var rows = Rows(kvHead, quantEnd - s0);
                for (int h0 = 0; h0 < rep; h0 += Int8AttentionKernels.HeadBlock)
                {
                    int nh = Math.Min(Int8AttentionKernels.HeadBlock, rep - h0);
                    Int8AttentionKernels.QuantizeQueries(q + (h0 * hd), nh, hd, rows.Bits, _groupChannels, q8, steps, sums, dwords);
                    Int8AttentionKernels.Scores(rows, q8, dwords, steps, sums, nh, sc + (h0 * length) + s0, length, blockMax);
                    for (int r = 0; r < nh; r++)
                    {
                        max[h0 + r] = MathF.Max(max[h0 + r], blockMax[r]);
                    }
                }
            }
        }
    }

    // FP32 scores of FP16 rows (sinks, residual window): the fused dense kernel where it runs, else row by row.
    private void DenseScores(Half* rows, int count, float* q, int rep, float* scores, int stride)
    {
        if (FusedAttentionKernels.IsSupported && FusedAttentionKernels.SupportsDense(_hd))
        {
            FusedAttentionKernels.ScoresDense(rows, true, count, _hd, q, rep, scores, stride);
            return;
        }

        int hd = _hd;
        Span<float> buf = stackalloc float[hd];
        var queries = new ReadOnlySpan<float>(q, rep * hd);
        var all = new Span<float>(scores, ((rep - 1) * stride) + count);
        for (int j = 0; j < count; j++)
        {
            TensorPrimitives.ConvertToSingle(new ReadOnlySpan<Half>(rows + ((long)j * hd), hd), buf);
            for (int r = 0; r < rep; r++)
            {
                all[(r * stride) + j] = TensorPrimitives.Dot(queries.Slice(r * hd, hd), buf);
            }
        }
    }

    private const int MaxColumnParameters = 8;


    private void ScoresFused(int kvHead, ReadOnlySpan<float> queries, int rep, int length, Span<float> scores)
    {
        if (length == 0)
        {
            return;
        }

        int hd = _hd;
        int s0 = SinksHeld;
        int sinkEnd = Math.Min(s0, length);
        int quantEnd = Math.Min(s0 + _quantized, length);
        _ = scores[(rep * length) - 1];
        Span<float> permuted = stackalloc float[_columnScores ? 0 : rep * hd];
        if (!_columnScores)
        {
            FusedAttentionKernels.Permute(queries[..(rep * hd)], _permutation, permuted);
        }

        fixed (float* q = queries)
        fixed (float* pq = permuted)
        fixed (float* sc = scores)
        {
            if (sinkEnd > 0)
            {
                FusedAttentionKernels.ScoresDense(SinkPointer(kvHead, 0), true, sinkEnd, hd, q, rep, sc, length);
            }

            if (quantEnd > s0)
            {
                var rows = Rows(kvHead, quantEnd - s0);
                if (_columnScores)
                {
                    ColumnScoreKernels.Scores(rows, q, rep, sc + s0, length);
                }
                else
                {
                    FusedAttentionKernels.ScoresPacked(rows, pq, rep, sc + s0, length);
                }
            }

            for (int j = Math.Max(quantEnd, s0); j < length;)
            {
                int n = RingRun(j - s0, length - j);
                FusedAttentionKernels.ScoresDense(RingPointer(kvHead, j - s0), true, n, hd, q, rep, sc + j, length);
                j += n;
            }
        }
    }

    // The fused value sum; in softmax mode (max and sums given, the kernel's rows holding raw scores; see
    // AccumulateSoftmaxInt8) the whole steps of quantized rows go through Int8ValueKernels.
    private void AccumulateFused(int kvHead, ReadOnlySpan<float> probs, int rep, int length, Span<float> output, float* max = null, float* sums = null)
    {
        if (length == 0)
        {
            return;
        }

        int hd = _hd;
        int s0 = SinksHeld;
        int sinkEnd = Math.Min(s0, length);
        int quantEnd = Math.Min(s0 + _quantized, length);
        _ = probs[(rep * length) - 1];
        _ = output[(rep * hd) - 1];
        fixed (float* p = probs)
        fixed (float* o = output)
        {
            if (sinkEnd > 0)
            {
                FusedAttentionKernels.AccumulateDense(SinkPointer(kvHead, 0), true, sinkEnd, hd, p, length, rep, o);
            }

            if (quantEnd > s0)
            {
                Span<float> permuted = stackalloc float[rep * hd];
                permuted.Clear();
                fixed (float* po = permuted)
                {
                    int count = quantEnd - s0, quads = max != null ? KernelRows(count) : 0;
                    if (quads > 0)
                    {
                        Int8ValueKernels.AccumulateSoftmax(Rows(kvHead, 0, quads), p + s0, length, rep, max, sums, po);
                    }

                    if (quads < count)
                    {
                        FusedAttentionKernels.AccumulatePacked(Rows(kvHead, quads, count - quads), p + s0 + quads, length, rep, po);
                    }
                }

                FusedAttentionKernels.AddUnpermuted(permuted, _permutation, output);
            }

            for (int j = Math.Max(quantEnd, s0); j < length;)
            {
                int n = RingRun(j - s0, length - j);
                FusedAttentionKernels.AccumulateDense(RingPointer(kvHead, j - s0), true, n, hd, p + j, length, rep, o);
                j += n;
            }
        }
    }

    /// <summary>
    /// The int8 path's softmax and value sum in one: scores[r * length + j] are the raw (scaled) scores of head r and
    /// max[r] their largest; every position outside the kernel's whole steps of quantized rows becomes
    /// <see cref="Int8ValueKernels.SoftExp(float)"/>(score - max) in place and is summed in FP32, the kernel's rows take
    /// the exponential inside the kernel (<see cref="Int8ValueKernels.AccumulateSoftmax"/>); sums[r] = the sum of all
    /// the weights, output[r] += the unnormalised weighted sum. Requires <see cref="SupportsInt8Values"/>.
    /// </summary>
    public void AccumulateSoftmaxInt8(int kvHead, Span<float> scores, int rep, int length, ReadOnlySpan<float> max, Span<float> sums, Span<float> output)
    {
        if (!_int8Values)
        {
            throw new InvalidOperationException($"int8 value sums do not handle values stored as {_spec}");
        }

        int s0 = Math.Min(SinksHeld, length);
        int quantEnd = Math.Min(SinksHeld + _quantized, length);
        int k1 = s0 + KernelRows(Math.Max(0, quantEnd - s0));
        _ = scores[(rep * length) - 1];
        _ = max[rep - 1];
        _ = sums[rep - 1];
        fixed (float* sc = scores)
        fixed (float* mx = max)
        fixed (float* sm = sums)
        {
            for (int r = 0; r < rep; r++)
            {
                float* row = sc + (r * length);
                sm[r] = Int8ValueKernels.SoftExpSum(row, s0, mx[r]) + Int8ValueKernels.SoftExpSum(row + k1, length - k1, mx[r]);
            }

            if (FusedRows(rep))
            {
                AccumulateFused(kvHead, scores, rep, length, output, mx, sm);
            }
            else
            {
                AccumulateRows(kvHead, scores, rep, length, output, mx, sm);
            }
        }
    }

    // Of count quantized rows, those Int8ValueKernels sums: its whole steps.
    private int KernelRows(int count) => count / Int8ValueKernels.TokensPerStep(_hd, _bits.IntegerBits()) * Int8ValueKernels.TokensPerStep(_hd, _bits.IntegerBits());

    // The first whole steps of the count quantized rows through Int8ValueKernels (softmax mode) into output
    // (un-permuted); returns how many rows it summed.
    private int ByteRows(int kvHead, ReadOnlySpan<float> probs, int rep, int length, Span<float> output, int s0, int count, float* max, float* sums)
    {
        int hd = _hd, rows = KernelRows(count);
        if (rows == 0)
        {
            return 0;
        }

        Span<float> permuted = rep * hd <= MaxFusedFloats ? stackalloc float[rep * hd] : new float[rep * hd];
        permuted.Clear();
        _ = probs[(rep * length) - 1];
        fixed (float* p = probs)
        fixed (float* po = permuted)
        {
            Int8ValueKernels.AccumulateSoftmax(Rows(kvHead, 0, rows), p + s0, length, rep, max, sums, po);
        }

        FusedAttentionKernels.AddUnpermuted(permuted, _byteTable, output);
        return rows;
    }

    private PackedRows Rows(int kvHead, int count) => Rows(kvHead, 0, count);

    // Quantized rows first..first+count-1 of a KV head (tiled codes: from a tile boundary).
    private PackedRows Rows(int kvHead, int first, int count) => new(
        _codes.Pointer + (kvHead * _headCodeBytes) + (_tiled ? TileStart(first) : (long)first * _rowBytes),
        (ushort*)_params.Pointer + (kvHead * _paramsPerHead) + ((long)first * _groupsPerRow * _pp),
        count,
        _hd,
        _bits.IntegerBits(),
        _groupChannels,
        _spec.Symmetric,
        _symStep,
        _symOffset,
        _tiled);

    private long TileStart(int first) => first % KeyTiles.Tokens == 0
        ? KeyTiles.Offset(first, 0, _rowBytes)
        : throw new InvalidOperationException($"tiled keys are read from a tile boundary (a multiple of {KeyTiles.Tokens} rows), not from row {first}");

    // Rows from residual index m on that are contiguous in the ring (up to count).
    private int RingRun(int m, int count) => Math.Min(count, _ringCap - (m % _ringCap));

    private Half* SinkPointer(int h, int p) => (Half*)_sinks.Pointer + ((((long)h * _sinkCap) + p) * _hd);

    private Half* RingPointer(int h, int m) => (Half*)_ring.Pointer + ((((long)h * _ringCap) + (m % _ringCap)) * _hd);

    private static void DotAll(ReadOnlySpan<float> queries, int rep, ReadOnlySpan<float> x, Span<float> scores, int length, int j) =>
        AttentionKernels.MultiDot(queries, rep, x, scores, length, j);

    private static void AxpyAll(ReadOnlySpan<float> probs, int rep, ReadOnlySpan<float> x, Span<float> output, int length, int j) =>
        AttentionKernels.MultiAxpy(probs, rep, x, output, length, j);

    // Per-channel groups: per chunk, qa = q * a (per channel) and k0 = q · b, then score = qa · c + k0.
    private void ScoresPerChannel(int kvHead, ReadOnlySpan<float> queries, int rep, int length, Span<float> scores, int s0, int end, Span<float> buf)
    {
        int hd = _hd;
        Span<float> qa = stackalloc float[rep * hd];
        Span<float> k0 = stackalloc float[rep];
        Span<float> a = stackalloc float[hd];
        Span<float> b = stackalloc float[hd];
        for (int m0 = 0; s0 + m0 < end; m0 += _chunk)
        {
            ChunkEffective(kvHead, m0 / _chunk, a, b);
            for (int r = 0; r < rep; r++)
            {
                var q = queries.Slice(r * hd, hd);
                TensorPrimitives.Multiply(q, a, qa.Slice(r * hd, hd));
                k0[r] = TensorPrimitives.Dot(q, b);
            }

            int last = Math.Min(m0 + _chunk, end - s0);
            for (int m = m0; m < last; m++)
            {
                BitPacking.Unpack(CodeRow(kvHead, m), _bits, buf);
                AttentionKernels.MultiDot(qa, rep, buf, scores, length, s0 + m);
                for (int r = 0; r < rep; r++)
                {
                    scores[(r * length) + s0 + m] += k0[r];
                }
            }
        }
    }

    private void AccumulatePerToken(int kvHead, ReadOnlySpan<float> probs, int rep, int length, Span<float> output, int s0, int end, Span<float> buf, int first = 0)
    {
        for (int j = s0 + first; j < end; j++)
        {
            DequantizeRow(kvHead, j - s0, buf);
            AxpyAll(probs, rep, buf, output, length, j);
        }
    }

    // Rows a chunk of the row-at-a-time path reads at once (16 KiB of floats on the stack).
    private int RowChunk => Math.Max(1, 4096 / _hd);

    /// <summary>
    /// <paramref name="count"/> per-token rows from row <paramref name="m"/> into dst [count, HeadDim], each element
    /// a_g * c + b_g rounded as <see cref="DequantizeRow"/> rounds it (the product, then the sum): codes widened sixteen
    /// channels at a time from their bytes (2-, 4- or 8-bit, groups of a multiple of 16 channels; tiled rows gathered first).
    /// </summary>
    private void DequantizeRows(int kvHead, int m, int count, float* dst)
    {
        int hd = _hd, gc = _groupChannels;
        byte* row = stackalloc byte[_tiled ? _rowBytes : 0];
        for (int j = 0; j < count; j++, dst += hd)
        {
            byte* codes = RowCodes(kvHead, m + j, row);
            var prm = TokenParams(kvHead, m + j);
            for (int g = 0; g < _groupsPerRow; g++)
            {
                var (a, b) = Effective(prm, g);
                var av = Vector512.Create(a);
                var bv = Vector512.Create(b);
                for (int c = g * gc; c < (g + 1) * gc; c += 16)
                {
                    var x = Vector512.ConvertToSingle(Codes16(codes, c));
                    ((x * av) + bv).Store(dst + c);
                }
            }
        }
    }

    // Channels c..c+15 of a row of 2-, 4- or 8-bit codes (low bits first) as sixteen int32 lanes.
    private Vector512<int> Codes16(byte* row, int c)
    {
        Vector128<byte> bytes;
        if (_bits == KvBits.Four)
        {
            // eight bytes, each two codes: a word per byte, low nibble to its low byte, high nibble to its high byte.
            var w = Vector128.WidenLower(Vector128.CreateScalarUnsafe(*(ulong*)(row + (c / 2))).AsByte());
            bytes = ((w & Vector128.Create((ushort)0x0F)) | ((w << 4) & Vector128.Create((ushort)0x0F00))).AsByte();
        }
        else if (_bits == KvBits.Two)
        {
            // four bytes, each four codes: a dword per byte, code k to byte k.
            var w = Vector128.WidenLower(Vector128.WidenLower(Vector128.CreateScalarUnsafe(*(uint*)(row + (c / 4))).AsByte()));
            bytes = ((w & Vector128.Create(0x03u)) | ((w << 6) & Vector128.Create(0x300u)) | ((w << 12) & Vector128.Create(0x30000u)) | ((w << 18) & Vector128.Create(0x3000000u))).AsByte();
        }
        else
        {
            bytes = Vector128.Load(row + c);
        }

        return Avx512F.ConvertToVector512Int32(bytes);
    }

    // Row m's code bytes of a head: in place, or (tiled codes) gathered out of its tile into scratch (_rowBytes).
    private byte* RowCodes(int kvHead, int m, byte* scratch)
    {
        if (!_tiled)
        {
            return _codes.Pointer + (kvHead * _headCodeBytes) + ((long)m * _rowBytes);
        }

        KeyTiles.ReadRow(_codes.Pointer + (kvHead * _headCodeBytes), m, _rowBytes, new Span<byte>(scratch, _rowBytes));
        return scratch;
    }

    private void DequantizeRow(int kvHead, int m, Span<float> buf)
    {
        byte* row = stackalloc byte[_tiled ? _rowBytes : 0];
        BitPacking.Unpack(new ReadOnlySpan<byte>(RowCodes(kvHead, m, row), _rowBytes), _bits, buf);
        var p = TokenParams(kvHead, m);
        int gc = _groupChannels;
        for (int g = 0; g < _groupsPerRow; g++)
        {
            var (a, b) = Effective(p, g);
            AttentionKernels.Affine(buf.Slice(g * gc, gc), a, b);
        }
    }

    // Per-channel groups: per chunk acc = sum_j p_j c_j and P = sum_j p_j, then out += a * acc + b * P.
    private void AccumulatePerChannel(int kvHead, ReadOnlySpan<float> probs, int rep, int length, Span<float> output, int s0, int end, Span<float> buf)
    {
        int hd = _hd;
        Span<float> acc = stackalloc float[rep * hd];
        Span<float> psum = stackalloc float[rep];
        Span<float> a = stackalloc float[hd];
        Span<float> b = stackalloc float[hd];
        for (int m0 = 0; s0 + m0 < end; m0 += _chunk)
        {
            acc.Clear();
            psum.Clear();
            int last = Math.Min(m0 + _chunk, end - s0);
            for (int m = m0; m < last; m++)
            {
                BitPacking.Unpack(CodeRow(kvHead, m), _bits, buf);
                AttentionKernels.MultiAxpy(probs, rep, buf, acc, length, s0 + m);
                for (int r = 0; r < rep; r++)
                {
                    psum[r] += probs[(r * length) + s0 + m];
                }
            }

            ChunkEffective(kvHead, m0 / _chunk, a, b);
            for (int r = 0; r < rep; r++)
            {
                var o = output.Slice(r * hd, hd);
                TensorPrimitives.MultiplyAdd(acc.Slice(r * hd, hd), a, o, o);
                TensorPrimitives.MultiplyAdd(b, psum[r], o, o);
            }
        }
    }

    private void Flush()
    {
        int hd = _hd, c = _chunk;
        int m0 = _quantized;
        var values = _flushValues.AsSpan(0, c * hd);
        var codes = _flushCodes.AsSpan(0, c * hd);
        Span<byte> row = stackalloc byte[_rowBytes];
        for (int h = 0; h < _heads; h++)
        {
            for (int k = 0; k < c; k++)
            {
                TensorPrimitives.ConvertToSingle(RingRow(h, m0 + k), values.Slice(k * hd, hd));
            }

            if (_perChannel)
            {
                var prm = ChunkParams(h, m0 / c);
                for (int ch = 0; ch < hd; ch++)
                {
                    var qp = Quantize(values[ch..], hd, c, codes[ch..]);
                    prm[ch * _pp] = qp.Scale;
                    if (_pp == 2)
                    {
                        prm[(ch * _pp) + 1] = qp.Zero;
                    }
                }
            }
            else
            {
                var prm = TokenParams(h, m0);
                for (int g = 0; g < _groupsPerRow; g++)
                {
                    int off = g * _groupChannels;
                    var qp = Quantize(values[off..], 1, _groupChannels, codes[off..]);
                    prm[g * _pp] = qp.Scale;
                    if (_pp == 2)
                    {
                        prm[(g * _pp) + 1] = qp.Zero;
                    }
                }
            }

            for (int k = 0; k < c; k++)
            {
                if (_tiled)
                {
                    BitPacking.Pack(codes.Slice(k * hd, hd), _bits, row);
                    KeyTiles.WriteRow(_codes.Pointer + (h * _headCodeBytes), m0 + k, _rowBytes, row);
                }
                else
                {
                    BitPacking.Pack(codes.Slice(k * hd, hd), _bits, CodeRow(h, m0 + k));
                }
            }
        }

        _quantized += c;
    }

    private QuantParams Quantize(ReadOnlySpan<float> src, int stride, int count, Span<byte> codes)
    {
        // Quantize writes codes contiguously; strided groups (per channel) are scattered back afterwards.
        Span<byte> tmp = stackalloc byte[count];
        var p = AffineQuantizer.Quantize(src, stride, count, _bits, _spec.Symmetric, tmp);
        for (int i = 0; i < count; i++)
        {
            codes[i * stride] = tmp[i];
        }

        return p;
    }

    private (float A, float B) Effective(Span<Half> prm, int group)
    {
        // Same values as AffineQuantizer.Effective, with the symmetric multipliers precomputed.
        float scale = (float)prm[group * _pp];
        return _pp == 2 ? (scale, (float)prm[(group * _pp) + 1]) : (scale * _symStep, scale * _symOffset);
    }

    private void ChunkEffective(int kvHead, int chunk, Span<float> a, Span<float> b)
    {
        var prm = ChunkParams(kvHead, chunk);
        for (int c = 0; c < _hd; c++)
        {
            (a[c], b[c]) = Effective(prm, c);
        }
    }

    private Span<Half> SinkRow(int h, int p) => new((Half*)_sinks.Pointer + ((((long)h * _sinkCap) + p) * _hd), _hd);

    private Span<Half> RingRow(int h, int m) => new((Half*)_ring.Pointer + ((((long)h * _ringCap) + (m % _ringCap)) * _hd), _hd);

    // Row m of head h in the row layout (per-channel stores and untiled per-token stores).
    private Span<byte> CodeRow(int h, int m) => new(_codes.Pointer + (h * _headCodeBytes) + ((long)m * _rowBytes), _rowBytes);

    private Span<Half> TokenParams(int h, int m) => new((Half*)_params.Pointer + (h * _paramsPerHead) + ((long)m * _groupsPerRow * _pp), _groupsPerRow * _pp);

    private Span<Half> ChunkParams(int h, int chunk) => new((Half*)_params.Pointer + (h * _paramsPerHead) + ((long)chunk * _hd * _pp), _hd * _pp);
}
