using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace KvAdaQuant.Numerics;

/// <summary>
/// Decode-attention kernels that stream the cached rows of one KV head once per step for a group of query heads:
/// raw scores q_r · x_t and weighted sums sum_t p_rt x_t, where the rows x_t are packed 2-, 4- or 8-bit codes with
/// per-token FP16 group parameters (x = a_g c + b_g), FP16 or FP32. No per-row calls: a row is decoded in 64-channel
/// slabs of four 16-lane vectors straight from its bytes (codes widened with one <c>vpmovzxbd</c> per 16 bytes and
/// split with shifts, halves by bit arithmetic, parameters converted once per block of tokens and spread to the
/// lanes by one permute per 16 bytes), dequantized once and used by up to four query heads. Packed codes are
/// decoded in their natural byte order, so the channels come out permuted within each 64-channel slab
/// (<see cref="PermutedChannel"/>); the queries are permuted to match and the weighted sums un-permuted, once per
/// step. Scores are reduced sixteen tokens at a time by a transposing tree of shuffles and adds that leaves one
/// token per lane (a tail of eight by a horizontal-add tree, the rest one token at a time).
/// AVX-512 only (<see cref="IsSupported"/>); each kernel has a scalar twin that the tests compare it with.
/// </summary>
internal static unsafe class FusedAttentionKernels
{
    /// <summary>Query heads served per pass over the rows.</summary>
    public const int HeadBlock = 4;

    /// <summary>Tokens whose parameters are converted at once (and whose values are summed per slab in registers).</summary>
    public const int TokenBlock = 64;

    /// <summary>Channels per slab: four 16-lane vectors.</summary>
    public const int Slab = 64;

    /// <summary>Largest number of float parameters (a, b per group) of one token the permutes reach.</summary>
    public const int MaxParamFloats = 32;


    /// <summary>
    /// Rows a prefill batch decodes or widens at a time before its tokens score and sum them with the FP32 kernels: 32 KiB
    /// of FP32 rows, so that every token of the batch reads them from L1 (128 at head dim 64, 64 at 128), a multiple of
    /// <see cref="TokenBlock"/> (so each token's rows keep the kernels' block starts, and their bits), at most 256.
    /// </summary>
    public static int SharedRows(int headDim) => Math.Clamp(32768 / (headDim * sizeof(float)) / TokenBlock * TokenBlock, TokenBlock, 256);

    /// <summary>Whether the vector kernels run on this CPU.</summary>
    public static bool IsSupported => Avx512F.IsSupported && Vector512.IsHardwareAccelerated;

    /// <summary>Whether the packed kernels handle this shape (head dim a multiple of 64, 2/4/8 bits, at most 16 groups a token).</summary>
    public static bool SupportsPacked(int bits, int headDim, int groupChannels) =>
        bits is 2 or 4 or 8 && headDim % Slab == 0 && groupChannels > 0 && headDim % groupChannels == 0
        && groupChannels % (8 / bits) == 0 && 2 * (headDim / groupChannels) <= MaxParamFloats;

    /// <summary>Whether the FP16/FP32 kernels handle this head dim.</summary>
    public static bool SupportsDense(int headDim) => headDim % Slab == 0;

    /// <summary>
    /// The channel decoded into position <paramref name="position"/> of a row of <paramref name="bits"/>-bit codes:
    /// within each 64-channel slab, position slot * 16 + lane holds channel chunk * 16 * cpb + lane * cpb + k with
    /// cpb = 8 / bits codes per byte, slot = chunk * cpb + k (16-byte chunk, shift k * bits). 8 bits is the identity.
    /// </summary>
    public static int PermutedChannel(int position, int bits)
    {
        int cpb = 8 / bits;
        int s = position / Slab, slot = (position % Slab) / 16, lane = position % 16;
        int chunk = slot / cpb, k = slot % cpb;
        return (s * Slab) + (chunk * 16 * cpb) + (lane * cpb) + k;
    }

    /// <summary>The table p -> <see cref="PermutedChannel"/>(p, bits) for one head (identity for 8 bits).</summary>
    public static int[] PermutationTable(int headDim, int bits)
    {
        var table = new int[headDim];
        for (int p = 0; p < headDim; p++)
        {
            table[p] = PermutedChannel(p, bits);
        }

        return table;
    }

    /// <summary>dst[h + p] = src[h + table[p]] for each head h of table.Length in <paramref name="src"/>.</summary>
    public static void Permute(ReadOnlySpan<float> src, ReadOnlySpan<int> table, Span<float> dst)
    {
        int hd = table.Length;
        for (int h = 0; h < src.Length; h += hd)
        {
            var s = src.Slice(h, hd);
            var d = dst.Slice(h, hd);
            for (int p = 0; p < hd; p++)
            {
                d[p] = s[table[p]];
            }
        }
    }

    /// <summary>dst[h + table[p]] += src[h + p] for each head h of table.Length in <paramref name="src"/>.</summary>
    public static void AddUnpermuted(ReadOnlySpan<float> src, ReadOnlySpan<int> table, Span<float> dst)
    {
        int hd = table.Length;
        for (int h = 0; h < src.Length; h += hd)
        {
            var s = src.Slice(h, hd);
            var d = dst.Slice(h, hd);
            for (int p = 0; p < hd; p++)
            {
                d[table[p]] += s[p];
            }
        }
    }

    /// <summary>
    /// scores[r * stride + t] = q_r · x_t for t &lt; rows.Count and r &lt; rep, x_t dequantized from packed codes.
    /// <paramref name="permutedQueries"/> holds rep heads in <see cref="PermutedChannel"/> order.
    /// </summary>
    public static void ScoresPacked(in PackedRows rows, float* permutedQueries, int rep, float* scores, int stride)
    {
        RowLayoutOnly(rows);
        bool wide = ChunkInOneGroup(rows);
        switch (rows.Bits)
        {
            case 2 when wide:
                Scores<Packed2<BroadcastParams>>(rows, permutedQueries, rep, scores, stride);
                break;
            case 2:
                Scores<Packed2<PermutedParams>>(rows, permutedQueries, rep, scores, stride);
                break;
            case 4 when wide:
                Scores<Packed4<BroadcastParams>>(rows, permutedQueries, rep, scores, stride);
                break;
            case 4:
                Scores<Packed4<PermutedParams>>(rows, permutedQueries, rep, scores, stride);
                break;
            case 8 when wide:
                Scores<Packed8<BroadcastParams>>(rows, permutedQueries, rep, scores, stride);
                break;
            default:
                Scores<Packed8<PermutedParams>>(rows, permutedQueries, rep, scores, stride);
                break;
        }
    }

    /// <summary>permutedOutput[r] += sum_t probs[r * stride + t] x_t (outputs in <see cref="PermutedChannel"/> order).</summary>
    public static void AccumulatePacked(in PackedRows rows, float* probs, int stride, int rep, float* permutedOutput)
    {
        RowLayoutOnly(rows);
        bool wide = ChunkInOneGroup(rows);
        switch (rows.Bits)
        {
            case 2 when wide:
                Accumulate<Packed2<BroadcastParams>>(rows, probs, stride, rep, permutedOutput);
                break;
            case 2:
                Accumulate<Packed2<PermutedParams>>(rows, probs, stride, rep, permutedOutput);
                break;
            case 4 when wide:
                Accumulate<Packed4<BroadcastParams>>(rows, probs, stride, rep, permutedOutput);
                break;
            case 4:
                Accumulate<Packed4<PermutedParams>>(rows, probs, stride, rep, permutedOutput);
                break;
            case 8 when wide:
                Accumulate<Packed8<BroadcastParams>>(rows, probs, stride, rep, permutedOutput);
                break;
            default:
                Accumulate<Packed8<PermutedParams>>(rows, probs, stride, rep, permutedOutput);
                break;
        }
    }

    /// <summary>
    /// dst[t * HeadDim + p] = x_t at channel <see cref="PermutedChannel"/>(p) for t &lt; rows.Count: the values the
    /// packed kernels' decoders compute, so that <see cref="ScoresDense"/> / <see cref="AccumulateDense"/> (FP32) over
    /// them, with permuted queries / outputs and from the same 64-token block starts, give <see cref="ScoresPacked"/>'s
    /// and <see cref="AccumulatePacked"/>'s bits (a prefill batch's tokens then share one decoding of the rows).
    /// </summary>
    public static void DequantizePacked(in PackedRows rows, float* dst)
    {
        RowLayoutOnly(rows);
        bool wide = ChunkInOneGroup(rows);
        switch (rows.Bits)
        {
            case 2 when wide:
                Dequantize<Packed2<BroadcastParams>>(rows, dst);
                break;
            case 2:
                Dequantize<Packed2<PermutedParams>>(rows, dst);
                break;
            case 4 when wide:
                Dequantize<Packed4<BroadcastParams>>(rows, dst);
                break;
            case 4:
                Dequantize<Packed4<PermutedParams>>(rows, dst);
                break;
            case 8 when wide:
                Dequantize<Packed8<BroadcastParams>>(rows, dst);
                break;
            default:
                Dequantize<Packed8<PermutedParams>>(rows, dst);
                break;
        }
    }

    /// <summary>
    /// One chunk of FP32 rows of a causal batch (decoded by <see cref="DequantizePacked"/> or widened from FP16): rows
    /// [0, <paramref name="count"/>) hold positions <paramref name="first"/>.. of the cache. Token t of the batch (its
    /// queries at queries + t * queryStride, in the rows' channel order) attends firstLength + t positions, of which it
    /// scores those in the chunk below min(its length, <paramref name="limit"/>) into
    /// scores[t * perToken + r * length + position]. Chunk after chunk from a multiple of <see cref="TokenBlock"/>,
    /// each token's scores have the bits of one <see cref="ScoresDense"/> call over all its rows.
    /// </summary>
    public static void ScoresCausalChunk(float* rows, int first, int count, int limit, int headDim, float* queries, int queryStride, int rep, int firstLength, int tokens, float* scores, int perToken)
    {
        for (int t = 0; t < tokens; t++)
        {
            int length = firstLength + t, end = Math.Min(count, Math.Min(length, limit) - first);
            if (end > 0)
            {
                ScoresDense(rows, false, end, headDim, queries + ((long)t * queryStride), rep, scores + ((long)t * perToken) + first, length);
            }
        }
    }

    /// <summary>
    /// The value side of <see cref="ScoresCausalChunk"/>: token t adds its weights (laid out as the scores) times the
    /// chunk's rows below its end into output + t * outputStride, with the bits of one <see cref="AccumulateDense"/>
    /// call over all its rows when called chunk after chunk.
    /// </summary>
    public static void AccumulateCausalChunk(float* rows, int first, int count, int limit, int headDim, float* probs, int perToken, int rep, int firstLength, int tokens, float* output, int outputStride)
    {
        for (int t = 0; t < tokens; t++)
        {
            int length = firstLength + t, end = Math.Min(count, Math.Min(length, limit) - first);
            if (end > 0)
            {
                AccumulateDense(rows, false, end, headDim, probs + ((long)t * perToken) + first, length, rep, output + ((long)t * outputStride));
            }
        }
    }

    /// <summary>
    /// <see cref="ScoresCausalChunk"/> over a head's FP16 rows from position 0: each <see cref="SharedRows"/> chunk widened
    /// once into <paramref name="rows"/> (exactly, as the kernels' own widening), then scored for every token of the batch
    /// (the bits of one FP16 <see cref="ScoresDense"/> call per token).
    /// </summary>
    public static void ScoresCausalHalf(ushort* head, int headDim, float* rows, float* queries, int queryStride, int rep, int firstLength, int tokens, float* scores, int perToken)
    {
        int last = firstLength + tokens - 1, chunk = SharedRows(headDim);
        for (int c0 = 0; c0 < last; c0 += chunk)
        {
            int m = WidenRows(head, c0, Math.Min(chunk, last - c0), headDim, rows);
            ScoresCausalChunk(rows, c0, m, int.MaxValue, headDim, queries, queryStride, rep, firstLength, tokens, scores, perToken);
        }
    }

    /// <summary>The value side of <see cref="ScoresCausalHalf"/> (<see cref="AccumulateCausalChunk"/> chunk after chunk).</summary>
    public static void AccumulateCausalHalf(ushort* head, int headDim, float* rows, float* probs, int perToken, int rep, int firstLength, int tokens, float* output, int outputStride)
    {
        int last = firstLength + tokens - 1, chunk = SharedRows(headDim);
        for (int c0 = 0; c0 < last; c0 += chunk)
        {
            int m = WidenRows(head, c0, Math.Min(chunk, last - c0), headDim, rows);
            AccumulateCausalChunk(rows, c0, m, int.MaxValue, headDim, probs, perToken, rep, firstLength, tokens, output, outputStride);
        }
    }

    // FP16 rows [first, first + count) of a head into FP32 rows; returns count.
    private static int WidenRows(ushort* head, int first, int count, int headDim, float* rows)
    {
        System.Numerics.Tensors.TensorPrimitives.ConvertToSingle(
            new ReadOnlySpan<Half>((Half*)head + ((long)first * headDim), count * headDim),
            new Span<float>(rows, count * headDim));
        return count;
    }

    // The packed kernels read rows one after the other; keys in KeyTiles go through ColumnScoreKernels (or the int8 path).
    private static void RowLayoutOnly(in PackedRows rows)
    {
        if (rows.Tiled)
        {
            throw new ArgumentException("the packed kernels read rows one after the other; these codes lie in KeyTiles (score them with ColumnScoreKernels)", nameof(rows));
        }
    }

    /// <summary>Scalar twin of <see cref="DequantizePacked"/>: <see cref="DequantizeScalar"/> per row, then permuted.</summary>
    public static void DequantizePackedScalar(in PackedRows rows, float* dst)
    {
        int hd = rows.HeadDim;
        float* x = stackalloc float[hd];
        for (int t = 0; t < rows.Count; t++)
        {
            DequantizeScalar(rows, t, x);
            for (int p = 0; p < hd; p++)
            {
                dst[((long)t * hd) + p] = x[PermutedChannel(p, rows.Bits)];
            }
        }
    }

    // Whether every 16-byte chunk of codes lies in one parameter group (then a and b are broadcast, not permuted).
    private static bool ChunkInOneGroup(in PackedRows rows) => rows.GroupChannels % (16 * 8 / rows.Bits) == 0;

    /// <summary>scores[r * stride + t] = q_r · x_t over <paramref name="count"/> FP16 (or FP32) rows of headDim (natural order).</summary>
    public static void ScoresDense(void* data, bool half, int count, int headDim, float* queries, int rep, float* scores, int stride)
    {
        var rows = new PackedRows((byte*)data, null, count, headDim, half ? 16 : 32, headDim, false, 0, 0);
        if (half)
        {
            Scores<Dense16>(rows, queries, rep, scores, stride);
        }
        else
        {
            Scores<Dense32>(rows, queries, rep, scores, stride);
        }
    }

    /// <summary>output[r] += sum_t probs[r * stride + t] x_t over FP16 (or FP32) rows (natural order).</summary>
    public static void AccumulateDense(void* data, bool half, int count, int headDim, float* probs, int stride, int rep, float* output)
    {
        var rows = new PackedRows((byte*)data, null, count, headDim, half ? 16 : 32, headDim, false, 0, 0);
        if (half)
        {
            Accumulate<Dense16>(rows, probs, stride, rep, output);
        }
        else
        {
            Accumulate<Dense32>(rows, probs, stride, rep, output);
        }
    }

    /// <summary>Scalar twin of <see cref="ScoresPacked"/>, in natural channel order (<paramref name="queries"/> unpermuted).</summary>
    public static void ScoresPackedScalar(in PackedRows rows, float* queries, int rep, float* scores, int stride)
    {
        int hd = rows.HeadDim;
        float* x = stackalloc float[hd];
        for (int t = 0; t < rows.Count; t++)
        {
            DequantizeScalar(rows, t, x);
            for (int r = 0; r < rep; r++)
            {
                float s = 0;
                for (int c = 0; c < hd; c++)
                {
                    s += queries[(r * hd) + c] * x[c];
                }

                scores[(r * stride) + t] = s;
            }
        }
    }

    /// <summary>Scalar twin of <see cref="AccumulatePacked"/>, in natural channel order.</summary>
    public static void AccumulatePackedScalar(in PackedRows rows, float* probs, int stride, int rep, float* output)
    {
        int hd = rows.HeadDim;
        float* x = stackalloc float[hd];
        for (int t = 0; t < rows.Count; t++)
        {
            DequantizeScalar(rows, t, x);
            for (int r = 0; r < rep; r++)
            {
                float p = probs[(r * stride) + t];
                for (int c = 0; c < hd; c++)
                {
                    output[(r * hd) + c] += p * x[c];
                }
            }
        }
    }

    /// <summary>Scalar twin of <see cref="ScoresDense"/>.</summary>
    public static void ScoresDenseScalar(void* data, bool half, int count, int headDim, float* queries, int rep, float* scores, int stride)
    {
        for (int t = 0; t < count; t++)
        {
            for (int r = 0; r < rep; r++)
            {
                float s = 0;
                for (int c = 0; c < headDim; c++)
                {
                    s += queries[(r * headDim) + c] * DenseAt(data, half, ((long)t * headDim) + c);
                }

                scores[(r * stride) + t] = s;
            }
        }
    }

    /// <summary>Scalar twin of <see cref="AccumulateDense"/>.</summary>
    public static void AccumulateDenseScalar(void* data, bool half, int count, int headDim, float* probs, int stride, int rep, float* output)
    {
        for (int t = 0; t < count; t++)
        {
            for (int r = 0; r < rep; r++)
            {
                float p = probs[(r * stride) + t];
                for (int c = 0; c < headDim; c++)
                {
                    output[(r * headDim) + c] += p * DenseAt(data, half, ((long)t * headDim) + c);
                }
            }
        }
    }

    /// <summary>Row t of <paramref name="rows"/> dequantized (x = a c + b) in natural channel order.</summary>
    public static void DequantizeScalar(in PackedRows rows, int t, float* x)
    {
        int hd = rows.HeadDim, b = rows.Bits, g = rows.GroupChannels;
        byte* row = rows.Codes + ((long)t * rows.RowBytes);
        int pp = rows.Symmetric ? 1 : 2;
        ushort* prm = rows.Params + ((long)t * (hd / g) * pp);
        uint mask = (1u << b) - 1;
        for (int c = 0; c < hd; c++)
        {
            int bit = c * b;
            uint code = ((uint)row[bit >> 3] >> (bit & 7)) & mask;
            int grp = c / g;
            float a, z;
            if (rows.Symmetric)
            {
                float s = HalfBits.ToSingle(prm[grp]);
                a = s * rows.SymStep;
                z = s * rows.SymOffset;
            }
            else
            {
                a = HalfBits.ToSingle(prm[2 * grp]);
                z = HalfBits.ToSingle(prm[(2 * grp) + 1]);
            }

            x[c] = (a * code) + z;
        }
    }

    private static float DenseAt(void* data, bool half, long i) =>
        half ? HalfBits.ToSingle(((ushort*)data)[i]) : ((float*)data)[i];

    private static void Scores<TDecoder>(in PackedRows rows, float* q, int rep, float* scores, int stride)
        where TDecoder : ISlabDecoder
    {
        int hd = rows.HeadDim;
        int np = TDecoder.HasParams ? 2 * (hd / rows.GroupChannels) : 0;
        float* pbuf = stackalloc float[(TokenBlock * np) + MaxParamFloats];
        int* idx = stackalloc int[TDecoder.HasParams ? (hd / 16 * 32) + 16 : 16];
        if (TDecoder.HasParams)
        {
            BuildParamIndex(rows.Bits, hd, rows.GroupChannels, idx);
        }

        var fold = stackalloc Vector256<float>[HeadBlock * 8];
        var pairs = stackalloc Vector512<float>[HeadBlock * 8];
        int rowBytes = rows.RowBytes;
        for (int h0 = 0; h0 < rep; h0 += HeadBlock)
        {
            int nh = Math.Min(HeadBlock, rep - h0);
            float* q0 = q + (h0 * hd);
            float* q1 = nh > 1 ? q0 + hd : q0;
            float* q2 = nh > 2 ? q0 + (2 * hd) : q0;
            float* q3 = nh > 3 ? q0 + (3 * hd) : q0;
            for (int t0 = 0; t0 < rows.Count; t0 += TokenBlock)
            {
                int n = Math.Min(TokenBlock, rows.Count - t0);
                if (TDecoder.HasParams)
                {
                    ConvertParams(rows, t0, n, pbuf);
                }

                int t = 0;
                byte* block = rows.Codes + ((long)t0 * rowBytes);
                for (; t + 16 <= n; t += 16)
                {
                    Score16<TDecoder>(block + (t * rowBytes), rowBytes, hd, pbuf + (t * np), np, idx, q0, q1, q2, q3, pairs, scores + (h0 * stride) + t0 + t, stride, nh);
                }

                for (; t + 8 <= n; t += 8)
                {
                    for (int u = 0; u < 8; u += 2)
                    {
                        // The pair's 16-lane sums split into the two tokens' 8-lane partials (the same adds as a
                        // lower + upper fold of each token's accumulator).
                        ScorePairWide<TDecoder>(block + ((t + u) * rowBytes), rowBytes, hd, pbuf + ((t + u) * np), np, idx, q0, q1, q2, q3, pairs);
                        for (int r = 0; r < HeadBlock; r++)
                        {
                            fold[(r * 8) + u] = pairs[r * 8].GetLower();
                            fold[(r * 8) + u + 1] = pairs[r * 8].GetUpper();
                        }
                    }

                    for (int r = 0; r < nh; r++)
                    {
                        Reduce8(fold + (r * 8)).Store(scores + ((h0 + r) * stride) + t0 + t);
                    }
                }

                for (; t < n; t++)
                {
                    ScoreToken<TDecoder>(block + (t * rowBytes), hd, pbuf + (t * np), idx, q0, q1, q2, q3, out fold[0], out fold[8], out fold[16], out fold[24]);
                    for (int r = 0; r < nh; r++)
                    {
                        scores[((h0 + r) * stride) + t0 + t] = Vector256.Sum(fold[r * 8]);
                    }
                }
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void ScoreToken<TDecoder>(byte* row, int hd, float* prm, int* idx, float* q0, float* q1, float* q2, float* q3, out Vector256<float> f0, out Vector256<float> f1, out Vector256<float> f2, out Vector256<float> f3)
        where TDecoder : ISlabDecoder
    {
        Vector512<float> p0 = default, p1 = default;
        if (TDecoder.NeedsParamVectors)
        {
            p0 = Vector512.Load(prm);
            p1 = Vector512.Load(prm + 16);
        }

        // Two partial sums per head (slots 0-1 and 2-3 of each slab) halve the dependent FMA chain of a token.
        var a0 = Vector512<float>.Zero;
        var a1 = Vector512<float>.Zero;
        var a2 = Vector512<float>.Zero;
        var a3 = Vector512<float>.Zero;
        var b0 = Vector512<float>.Zero;
        var b1 = Vector512<float>.Zero;
        var b2 = Vector512<float>.Zero;
        var b3 = Vector512<float>.Zero;
        for (int s = 0; s < hd; s += Slab)
        {
            TDecoder.Decode(row, s, prm, p0, p1, idx, out var y0, out var y1, out var y2, out var y3);
            a0 = Dot2(y0, y1, q0 + s, a0);
            b0 = Dot2(y2, y3, q0 + s + 32, b0);
            a1 = Dot2(y0, y1, q1 + s, a1);
            b1 = Dot2(y2, y3, q1 + s + 32, b1);
            a2 = Dot2(y0, y1, q2 + s, a2);
            b2 = Dot2(y2, y3, q2 + s + 32, b2);
            a3 = Dot2(y0, y1, q3 + s, a3);
            b3 = Dot2(y2, y3, q3 + s + 32, b3);
        }

        a0 += b0;
        a1 += b1;
        a2 += b2;
        a3 += b3;
        f0 = a0.GetLower() + a0.GetUpper();
        f1 = a1.GetLower() + a1.GetUpper();
        f2 = a2.GetLower() + a2.GetUpper();
        f3 = a3.GetLower() + a3.GetUpper();
    }

    // Sixteen consecutive tokens' scores for the four heads, one 16-lane vector per head (lane j = token j): the
    // tokens go through in pairs (ScorePairWide), whose 16-lane partial sums (lanes 0-7 the first token's, 8-15 the
    // second's) wait in <paramref name="pairs"/>; then a transposing tree of block and lane shuffles (Merge2..Merge4:
    // 7 shuffle pairs and adds per head, after the 8 of Merge1) instead of a horizontal reduction per token leaves
    // token j + 4i in lane 4j + i, and one permute puts them in order.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Score16<TDecoder>(byte* row, int rowBytes, int hd, float* prm, int np, int* idx, float* q0, float* q1, float* q2, float* q3, Vector512<float>* pairs, float* dst, int stride, int nh)
        where TDecoder : ISlabDecoder
    {
        for (int u = 0; u < 8; u++)
        {
            ScorePairWide<TDecoder>(row + (2 * u * rowBytes), rowBytes, hd, prm + (2 * u * np), np, idx, q0, q1, q2, q3, pairs + u);
        }

        var order = Vector512.Create(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
        for (int r = 0; r < nh; r++)
        {
            var z = pairs + (r * 8);
            var v0 = Merge3(Merge2(z[0], z[1]), Merge2(z[2], z[3]));
            var v1 = Merge3(Merge2(z[4], z[5]), Merge2(z[6], z[7]));
            Avx512F.PermuteVar16x32(Merge4(v0, v1), order).Store(dst + (r * stride));
        }
    }

    // Two tokens: per head r, z[r * 8] gets the first token's eight partial sums in lanes 0-7 and the second's in 8-15.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void ScorePairWide<TDecoder>(byte* row, int rowBytes, int hd, float* prm, int np, int* idx, float* q0, float* q1, float* q2, float* q3, Vector512<float>* z)
        where TDecoder : ISlabDecoder
    {
        Vector512<float> p0 = default, p1 = default, r0 = default, r1 = default;
        if (TDecoder.NeedsParamVectors)
        {
            p0 = Vector512.Load(prm);
            p1 = Vector512.Load(prm + 16);
            r0 = Vector512.Load(prm + np);
            r1 = Vector512.Load(prm + np + 16);
        }

        var a0 = Vector512<float>.Zero;
        var a1 = Vector512<float>.Zero;
        var a2 = Vector512<float>.Zero;
        var a3 = Vector512<float>.Zero;
        var b0 = Vector512<float>.Zero;
        var b1 = Vector512<float>.Zero;
        var b2 = Vector512<float>.Zero;
        var b3 = Vector512<float>.Zero;
        for (int s = 0; s < hd; s += Slab)
        {
            TDecoder.Decode(row, s, prm, p0, p1, idx, out var y0, out var y1, out var y2, out var y3);
            TDecoder.Decode(row + rowBytes, s, prm + np, r0, r1, idx, out var x0, out var x1, out var x2, out var x3);
            DotPair(y0, y1, y2, y3, x0, x1, x2, x3, q0 + s, ref a0, ref b0);
            DotPair(y0, y1, y2, y3, x0, x1, x2, x3, q1 + s, ref a1, ref b1);
            DotPair(y0, y1, y2, y3, x0, x1, x2, x3, q2 + s, ref a2, ref b2);
            DotPair(y0, y1, y2, y3, x0, x1, x2, x3, q3 + s, ref a3, ref b3);
        }

        z[0] = Merge1(a0, b0);
        z[8] = Merge1(a1, b1);
        z[16] = Merge1(a2, b2);
        z[24] = Merge1(a3, b3);
    }

    // [a.b0 + a.b2, a.b1 + a.b3, b.b0 + b.b2, b.b1 + b.b3] (128-bit blocks): 8 partial sums of a, then 8 of b.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Merge1(Vector512<float> a, Vector512<float> b) =>
        Avx512F.Shuffle4x128(a, b, 0x44) + Avx512F.Shuffle4x128(a, b, 0xEE);

    // Blocks [a.b0 + a.b1, a.b2 + a.b3, b.b0 + b.b1, b.b2 + b.b3]: four tokens, one block of 4 partial sums each.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Merge2(Vector512<float> a, Vector512<float> b) =>
        Avx512F.Shuffle4x128(a, b, 0x88) + Avx512F.Shuffle4x128(a, b, 0xDD);

    // Per block: [a0 + a2, a1 + a3, b0 + b2, b1 + b3]: block j holds a's token j and b's token j, two partials each.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Merge3(Vector512<float> a, Vector512<float> b) =>
        Avx512F.Shuffle(a, b, 0x44) + Avx512F.Shuffle(a, b, 0xEE);

    // Per block: [a0 + a1, a2 + a3, b0 + b1, b2 + b3]: one sum per token.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Merge4(Vector512<float> a, Vector512<float> b) =>
        Avx512F.Shuffle(a, b, 0x88) + Avx512F.Shuffle(a, b, 0xDD);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void DotPair(Vector512<float> y0, Vector512<float> y1, Vector512<float> y2, Vector512<float> y3, Vector512<float> z0, Vector512<float> z1, Vector512<float> z2, Vector512<float> z3, float* q, ref Vector512<float> a, ref Vector512<float> b)
    {
        var v = Vector512.Load(q);
        a = Vector512.FusedMultiplyAdd(y0, v, a);
        b = Vector512.FusedMultiplyAdd(z0, v, b);
        v = Vector512.Load(q + 16);
        a = Vector512.FusedMultiplyAdd(y1, v, a);
        b = Vector512.FusedMultiplyAdd(z1, v, b);
        v = Vector512.Load(q + 32);
        a = Vector512.FusedMultiplyAdd(y2, v, a);
        b = Vector512.FusedMultiplyAdd(z2, v, b);
        v = Vector512.Load(q + 48);
        a = Vector512.FusedMultiplyAdd(y3, v, a);
        b = Vector512.FusedMultiplyAdd(z3, v, b);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Dot2(Vector512<float> y0, Vector512<float> y1, float* q, Vector512<float> acc) =>
        Vector512.FusedMultiplyAdd(y1, Vector512.Load(q + 16), Vector512.FusedMultiplyAdd(y0, Vector512.Load(q), acc));

    // Eight 8-lane partial sums (one per token) -> the eight token sums, by a horizontal-add tree.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Reduce8(Vector256<float>* v)
    {
        var h01 = Avx.HorizontalAdd(v[0], v[1]);
        var h23 = Avx.HorizontalAdd(v[2], v[3]);
        var h45 = Avx.HorizontalAdd(v[4], v[5]);
        var h67 = Avx.HorizontalAdd(v[6], v[7]);
        var h0123 = Avx.HorizontalAdd(h01, h23);
        var h4567 = Avx.HorizontalAdd(h45, h67);
        return Avx.Permute2x128(h0123, h4567, 0x20) + Avx.Permute2x128(h0123, h4567, 0x31);
    }

    private static void Dequantize<TDecoder>(in PackedRows rows, float* dst)
        where TDecoder : ISlabDecoder
    {
        int hd = rows.HeadDim;
        int np = 2 * (hd / rows.GroupChannels);
        float* pbuf = stackalloc float[(TokenBlock * np) + MaxParamFloats];
        int* idx = stackalloc int[(hd / 16 * 32) + 16];
        BuildParamIndex(rows.Bits, hd, rows.GroupChannels, idx);
        int rowBytes = rows.RowBytes;
        for (int t0 = 0; t0 < rows.Count; t0 += TokenBlock)
        {
            int n = Math.Min(TokenBlock, rows.Count - t0);
            ConvertParams(rows, t0, n, pbuf);
            for (int t = 0; t < n; t++)
            {
                byte* row = rows.Codes + ((long)(t0 + t) * rowBytes);
                float* prm = pbuf + (t * np);
                Vector512<float> p0 = default, p1 = default;
                if (TDecoder.NeedsParamVectors)
                {
                    p0 = Vector512.Load(prm);
                    p1 = Vector512.Load(prm + 16);
                }

                float* d = dst + ((long)(t0 + t) * hd);
                for (int s = 0; s < hd; s += Slab)
                {
                    TDecoder.Decode(row, s, prm, p0, p1, idx, out var y0, out var y1, out var y2, out var y3);
                    y0.Store(d + s);
                    y1.Store(d + s + 16);
                    y2.Store(d + s + 32);
                    y3.Store(d + s + 48);
                }
            }
        }
    }

    private static void Accumulate<TDecoder>(in PackedRows rows, float* probs, int stride, int rep, float* output)
        where TDecoder : ISlabDecoder
    {
        int hd = rows.HeadDim;
        int np = TDecoder.HasParams ? 2 * (hd / rows.GroupChannels) : 0;
        float* pbuf = stackalloc float[(TokenBlock * np) + MaxParamFloats];
        int* idx = stackalloc int[TDecoder.HasParams ? (hd / 16 * 32) + 16 : 16];
        if (TDecoder.HasParams)
        {
            BuildParamIndex(rows.Bits, hd, rows.GroupChannels, idx);
        }

        float* zero = stackalloc float[TokenBlock];
        new Span<float>(zero, TokenBlock).Clear();
        for (int h0 = 0; h0 < rep; h0 += HeadBlock)
        {
            int nh = Math.Min(HeadBlock, rep - h0);
            for (int t0 = 0; t0 < rows.Count; t0 += TokenBlock)
            {
                int n = Math.Min(TokenBlock, rows.Count - t0);
                if (TDecoder.HasParams)
                {
                    ConvertParams(rows, t0, n, pbuf);
                }

                float* pr0 = probs + (h0 * stride) + t0;
                float* pr1 = nh > 1 ? pr0 + stride : zero;
                float* pr2 = nh > 2 ? pr0 + (2 * stride) : zero;
                float* pr3 = nh > 3 ? pr0 + (3 * stride) : zero;
                for (int s = 0; s < hd; s += Slab)
                {
                    AccumulateSlab<TDecoder>(rows, t0, n, s, pbuf, np, idx, pr0, pr1, pr2, pr3, output + (h0 * hd) + s, nh);
                }
            }
        }
    }

    private static void AccumulateSlab<TDecoder>(in PackedRows rows, int t0, int n, int s, float* pbuf, int np, int* idx, float* pr0, float* pr1, float* pr2, float* pr3, float* o, int nh)
        where TDecoder : ISlabDecoder
    {
        int hd = rows.HeadDim;
        Vector512<float> c00 = default, c01 = default, c02 = default, c03 = default;
        Vector512<float> c10 = default, c11 = default, c12 = default, c13 = default;
        Vector512<float> c20 = default, c21 = default, c22 = default, c23 = default;
        Vector512<float> c30 = default, c31 = default, c32 = default, c33 = default;
        int rowBytes = rows.RowBytes;
        byte* row = rows.Codes + ((long)t0 * rowBytes);
        Vector512<float> p0 = default, p1 = default;
        for (int t = 0; t < n; t++, row += rowBytes)
        {
            if (TDecoder.NeedsParamVectors)
            {
                p0 = Vector512.Load(pbuf + (t * np));
                p1 = Vector512.Load(pbuf + (t * np) + 16);
            }

            TDecoder.Decode(row, s, pbuf + (t * np), p0, p1, idx, out var y0, out var y1, out var y2, out var y3);
            var w = Vector512.Create(pr0[t]);
            c00 = Vector512.FusedMultiplyAdd(y0, w, c00);
            c01 = Vector512.FusedMultiplyAdd(y1, w, c01);
            c02 = Vector512.FusedMultiplyAdd(y2, w, c02);
            c03 = Vector512.FusedMultiplyAdd(y3, w, c03);
            w = Vector512.Create(pr1[t]);
            c10 = Vector512.FusedMultiplyAdd(y0, w, c10);
            c11 = Vector512.FusedMultiplyAdd(y1, w, c11);
            c12 = Vector512.FusedMultiplyAdd(y2, w, c12);
            c13 = Vector512.FusedMultiplyAdd(y3, w, c13);
            w = Vector512.Create(pr2[t]);
            c20 = Vector512.FusedMultiplyAdd(y0, w, c20);
            c21 = Vector512.FusedMultiplyAdd(y1, w, c21);
            c22 = Vector512.FusedMultiplyAdd(y2, w, c22);
            c23 = Vector512.FusedMultiplyAdd(y3, w, c23);
            w = Vector512.Create(pr3[t]);
            c30 = Vector512.FusedMultiplyAdd(y0, w, c30);
            c31 = Vector512.FusedMultiplyAdd(y1, w, c31);
            c32 = Vector512.FusedMultiplyAdd(y2, w, c32);
            c33 = Vector512.FusedMultiplyAdd(y3, w, c33);
        }

        AddTo(o, c00, c01, c02, c03);
        if (nh > 1)
        {
            AddTo(o + hd, c10, c11, c12, c13);
        }

        if (nh > 2)
        {
            AddTo(o + (2 * hd), c20, c21, c22, c23);
        }

        if (nh > 3)
        {
            AddTo(o + (3 * hd), c30, c31, c32, c33);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void AddTo(float* o, Vector512<float> v0, Vector512<float> v1, Vector512<float> v2, Vector512<float> v3)
    {
        (Vector512.Load(o) + v0).Store(o);
        (Vector512.Load(o + 16) + v1).Store(o + 16);
        (Vector512.Load(o + 32) + v2).Store(o + 32);
        (Vector512.Load(o + 48) + v3).Store(o + 48);
    }

    // For each 16-byte chunk of a row, the lane -> parameter index of a (at chunk * 32) and of b (at chunk * 32 + 16).
    private static void BuildParamIndex(int bits, int hd, int groupChannels, int* idx)
    {
        int cpb = 8 / bits;
        int chunks = hd * bits / 128;
        for (int c = 0; c < chunks; c++)
        {
            for (int lane = 0; lane < 16; lane++)
            {
                int g = ((c * 16 * cpb) + (lane * cpb)) / groupChannels;
                idx[(c * 32) + lane] = 2 * g;
                idx[(c * 32) + 16 + lane] = (2 * g) + 1;
            }
        }
    }

    // Parameters of tokens t0..t0+n-1 as floats [token][group][a, b] (symmetric scales expanded to a = s * step, b = s * offset).
    private static void ConvertParams(in PackedRows rows, int t0, int n, float* dst)
    {
        int groups = rows.HeadDim / rows.GroupChannels;
        if (!rows.Symmetric)
        {
            ConvertHalves(rows.Params + ((long)t0 * groups * 2), dst, n * groups * 2);
            return;
        }

        ushort* src = rows.Params + ((long)t0 * groups);
        float step = rows.SymStep, offset = rows.SymOffset;
        for (int i = 0; i < n * groups; i++)
        {
            float sc = HalfBits.ToSingle(src[i]);
            dst[2 * i] = sc * step;
            dst[(2 * i) + 1] = sc * offset;
        }
    }

    private static void ConvertHalves(ushort* src, float* dst, int n)
    {
        int i = 0;
        for (; i + 16 <= n; i += 16)
        {
            HalfToSingle(src + i).Store(dst + i);
        }

        for (; i < n; i++)
        {
            dst[i] = HalfBits.ToSingle(src[i]);
        }
    }

    // Sixteen finite halves to floats (cache rows hold no Inf or NaN): HalfBits.FiniteToSingle16.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> HalfToSingle(ushort* src) => HalfBits.FiniteToSingle16(src);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<int> Widen(byte* p) => Avx512F.ConvertToVector512Int32(Vector128.Load(p));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Affine(Vector512<int> codes, Vector512<float> a, Vector512<float> b) =>
        Vector512.FusedMultiplyAdd(Avx512F.ConvertToVector512Single(codes), a, b);

    /// <summary>Decodes one 64-channel slab of a row into four 16-lane vectors (in the kernel's channel order).</summary>
    private interface ISlabDecoder
    {
        static abstract bool HasParams { get; }

        /// <summary>Whether Decode reads the parameters as two vectors p0, p1 (else straight from prm).</summary>
        static abstract bool NeedsParamVectors { get; }

        static abstract void Decode(byte* row, int slab, float* prm, Vector512<float> p0, Vector512<float> p1, int* idx, out Vector512<float> y0, out Vector512<float> y1, out Vector512<float> y2, out Vector512<float> y3);
    }

    private readonly struct Packed2<TSpread> : ISlabDecoder
        where TSpread : IParamSpread
    {
        public static bool HasParams => true;

        public static bool NeedsParamVectors => TSpread.NeedsVectors;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void Decode(byte* row, int slab, float* prm, Vector512<float> p0, Vector512<float> p1, int* idx, out Vector512<float> y0, out Vector512<float> y1, out Vector512<float> y2, out Vector512<float> y3)
        {
            int c = slab / 64; // one 16-byte chunk per slab
            TSpread.Get(c, prm, p0, p1, idx, out var a, out var b);
            var w = Widen(row + (c * 16));
            var m = Vector512.Create(3);
            y0 = Affine(w & m, a, b);
            y1 = Affine(Avx512F.ShiftRightLogical(w, 2) & m, a, b);
            y2 = Affine(Avx512F.ShiftRightLogical(w, 4) & m, a, b);
            y3 = Affine(Avx512F.ShiftRightLogical(w, 6), a, b);
        }
    }

    private readonly struct Packed4<TSpread> : ISlabDecoder
        where TSpread : IParamSpread
    {
        public static bool HasParams => true;

        public static bool NeedsParamVectors => TSpread.NeedsVectors;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void Decode(byte* row, int slab, float* prm, Vector512<float> p0, Vector512<float> p1, int* idx, out Vector512<float> y0, out Vector512<float> y1, out Vector512<float> y2, out Vector512<float> y3)
        {
            int c = slab / 32; // two 16-byte chunks per slab
            var m = Vector512.Create(15);
            TSpread.Get(c, prm, p0, p1, idx, out var a, out var b);
            var w = Widen(row + (c * 16));
            y0 = Affine(w & m, a, b);
            y1 = Affine(Avx512F.ShiftRightLogical(w, 4), a, b);
            TSpread.Get(c + 1, prm, p0, p1, idx, out a, out b);
            w = Widen(row + (c * 16) + 16);
            y2 = Affine(w & m, a, b);
            y3 = Affine(Avx512F.ShiftRightLogical(w, 4), a, b);
        }
    }

    private readonly struct Packed8<TSpread> : ISlabDecoder
        where TSpread : IParamSpread
    {
        public static bool HasParams => true;

        public static bool NeedsParamVectors => TSpread.NeedsVectors;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void Decode(byte* row, int slab, float* prm, Vector512<float> p0, Vector512<float> p1, int* idx, out Vector512<float> y0, out Vector512<float> y1, out Vector512<float> y2, out Vector512<float> y3)
        {
            int c = slab / 16; // four 16-byte chunks per slab
            byte* r = row + slab;
            TSpread.Get(c, prm, p0, p1, idx, out var a, out var b);
            y0 = Affine(Widen(r), a, b);
            TSpread.Get(c + 1, prm, p0, p1, idx, out a, out b);
            y1 = Affine(Widen(r + 16), a, b);
            TSpread.Get(c + 2, prm, p0, p1, idx, out a, out b);
            y2 = Affine(Widen(r + 32), a, b);
            TSpread.Get(c + 3, prm, p0, p1, idx, out a, out b);
            y3 = Affine(Widen(r + 48), a, b);
        }
    }

    /// <summary>How a 16-byte chunk's lanes get their group's step a and offset b.</summary>
    private interface IParamSpread
    {
        static abstract bool NeedsVectors { get; }

        static abstract void Get(int chunk, float* prm, Vector512<float> p0, Vector512<float> p1, int* idx, out Vector512<float> a, out Vector512<float> b);
    }

    // Lanes of one chunk in different groups: one two-table permute each for a and b.
    private readonly struct PermutedParams : IParamSpread
    {
        public static bool NeedsVectors => true;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void Get(int chunk, float* prm, Vector512<float> p0, Vector512<float> p1, int* idx, out Vector512<float> a, out Vector512<float> b)
        {
            a = Avx512F.PermuteVar16x32x2(p0, Vector512.Load(idx + (chunk * 32)), p1);
            b = Avx512F.PermuteVar16x32x2(p0, Vector512.Load(idx + (chunk * 32) + 16), p1);
        }
    }

    // The whole chunk in one group: a and b broadcast from memory (no shuffle).
    private readonly struct BroadcastParams : IParamSpread
    {
        public static bool NeedsVectors => false;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void Get(int chunk, float* prm, Vector512<float> p0, Vector512<float> p1, int* idx, out Vector512<float> a, out Vector512<float> b)
        {
            float* g = prm + idx[chunk * 32];
            a = Vector512.Create(g[0]);
            b = Vector512.Create(g[1]);
        }
    }

    private readonly struct Dense16 : ISlabDecoder
    {
        public static bool HasParams => false;

        public static bool NeedsParamVectors => false;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void Decode(byte* row, int slab, float* prm, Vector512<float> p0, Vector512<float> p1, int* idx, out Vector512<float> y0, out Vector512<float> y1, out Vector512<float> y2, out Vector512<float> y3)
        {
            ushort* r = (ushort*)row + slab;
            y0 = HalfToSingle(r);
            y1 = HalfToSingle(r + 16);
            y2 = HalfToSingle(r + 32);
            y3 = HalfToSingle(r + 48);
        }
    }

    private readonly struct Dense32 : ISlabDecoder
    {
        public static bool HasParams => false;

        public static bool NeedsParamVectors => false;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void Decode(byte* row, int slab, float* prm, Vector512<float> p0, Vector512<float> p1, int* idx, out Vector512<float> y0, out Vector512<float> y1, out Vector512<float> y2, out Vector512<float> y3)
        {
            float* r = (float*)row + slab;
            y0 = Vector512.Load(r);
            y1 = Vector512.Load(r + 16);
            y2 = Vector512.Load(r + 32);
            y3 = Vector512.Load(r + 48);
        }
    }
}
