using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace KvAdaQuant.Numerics;

/// <summary>
/// FP32 scores over 2- and 4-bit packed keys at head dims up to 64, one token per lane: sixteen rows at a time are
/// transposed into code columns (lane i of column k = dword k of token i: 8 four-bit or 16 two-bit codes; two-source
/// dword permutes in registers), each code becomes its float value by one shift and one <c>vpermps</c> from a 16-entry
/// table (the permute reads only the index's low four bits, so no mask and no conversion), and each query head takes
/// one FMA per code and sixteen tokens. The affine parameters factor out of a group's sum: q · x over group g is
/// a_g (sum_d q_d c_d) + b_g (sum_d q_d), so the codes are never dequantized and the scores need no horizontal
/// reduction. The per-group code sums run in two chains (even and odd channels), then score = fma(a_g, D_g, score),
/// score = fma(b_g, Q_g, score), group after group; <see cref="ScoresScalar"/> does the same operations in the same
/// order, so the two agree bit for bit, and so does a prefill batch (<see cref="DecodeColumns"/> once a chunk, then
/// <see cref="ScoresCausalChunk"/> per token): every lane's arithmetic is its own token's. A tail of fewer than sixteen
/// rows goes through a zero-padded copy. Rows already in <see cref="KeyTiles"/> (how the quantized store keeps the keys
/// this kernel scores) are loaded as columns with no transposition. The quantized store takes it where it applies instead of
/// <see cref="FusedAttentionKernels.ScoresPacked"/> (1.1-1.3x on that part at head dim 64; at 128 the per-row kernel
/// measured as fast or faster, so it keeps that one). AVX-512 only (<see cref="IsSupported"/>).
/// </summary>
internal static unsafe class ColumnScoreKernels
{
    /// <summary>Tokens per tile: the sixteen lanes of a 512-bit vector.</summary>
    public const int Tokens = 16;

    /// <summary>Query heads served per pass over the rows.</summary>
    public const int HeadBlock = 4;

    private const int MaxColumns = 8;

    // The permute indices of the 2-, 4- and 8-column transpositions, one after the other (at 0, 32 and 32 + 128 ints).
    private static readonly int[] StageTable = [.. BuildStages(1), .. BuildStages(2), .. BuildStages(3)];

    /// <summary>Whether the vector kernel runs on this CPU.</summary>
    public static bool IsSupported => Avx512F.IsSupported && Vector512.IsHardwareAccelerated;

    /// <summary>
    /// Whether the kernel takes this layout: 2- or 4-bit codes, head dim at most 64 with rows of 1, 2, 4 or 8 dwords,
    /// groups of whole dwords, and 1, 2, 4 or 8 FP16 parameters a token.
    /// </summary>
    public static bool Supports(int bits, int headDim, int groupChannels, bool symmetric)
    {
        if (bits is not (2 or 4) || headDim <= 0 || groupChannels <= 0 || headDim % groupChannels != 0)
        {
            return false;
        }

        int codesPerDword = 32 / bits;
        int groups = headDim / groupChannels;
        int parameters = groups * (symmetric ? 1 : 2);
        return headDim <= 64 && headDim % codesPerDword == 0 && IsPowerOfTwoUpTo8(headDim / codesPerDword)
            && groupChannels % codesPerDword == 0 && IsPowerOfTwoUpTo8(parameters);
    }

    /// <summary>
    /// scores[r * stride + t] = q_r · x_t for t &lt; rows.Count and r &lt; rep, with <paramref name="queries"/> in natural
    /// channel order (rep heads of rows.HeadDim). Rows in row layout or in <see cref="KeyTiles"/>.
    /// </summary>
    public static void Scores(in PackedRows rows, float* queries, int rep, float* scores, int stride)
    {
        Check(rows);
        if (rows.Count == 0)
        {
            return;
        }

        int hd = rows.HeadDim, groups = hd / rows.GroupChannels, parameters = Parameters(rows);
        int columnsPerGroup = rows.GroupChannels * rows.Bits / 32, codesPerDword = 32 / rows.Bits;
        bool fourBits = rows.Bits == 4;
        float* qsum = stackalloc float[rep * groups];
        GroupSums(queries, rep, hd, rows.GroupChannels, qsum);
        var cols = stackalloc Vector512<int>[MaxColumns];
        var planes = stackalloc Vector512<float>[MaxColumns];
        float* tail = stackalloc float[Tokens];
        byte* codePad = stackalloc byte[Tokens * rows.RowBytes];
        ushort* prmPad = stackalloc ushort[Tokens * parameters];
        var table = Table(rows.Bits);
        fixed (int* stages = StageTable)
        {
            for (int t0 = 0; t0 < rows.Count; t0 += Tokens)
            {
                int n = Math.Min(Tokens, rows.Count - t0);
                LoadTile(rows, t0, n, codePad, prmPad, stages, cols, planes);
                for (int h0 = 0; h0 < rep; h0 += HeadBlock)
                {
                    int nh = HeadQueries(queries, h0, rep, hd, out float* q0, out float* q1, out float* q2, out float* q3);
                    Vector512<float> s0 = default, s1 = default, s2 = default, s3 = default;
                    for (int g = 0; g < groups; g++)
                    {
                        Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default;
                        Vector512<float> b0 = default, b1 = default, b2 = default, b3 = default;
                        int k0 = g * columnsPerGroup;
                        for (int k = k0; k < k0 + columnsPerGroup; k++)
                        {
                            int d = k * codesPerDword;
                            if (fourBits)
                            {
                                Column4(cols[k], table, q0 + d, q1 + d, q2 + d, q3 + d, ref a0, ref a1, ref a2, ref a3, ref b0, ref b1, ref b2, ref b3);
                            }
                            else
                            {
                                Column2(cols[k], table, q0 + d, q1 + d, q2 + d, q3 + d, ref a0, ref a1, ref a2, ref a3, ref b0, ref b1, ref b2, ref b3);
                            }
                        }

                        FinishGroup(rows, planes, qsum + (h0 * groups), groups, g, a0 + b0, a1 + b1, a2 + b2, a3 + b3, ref s0, ref s1, ref s2, ref s3);
                    }

                    StoreHeads(scores + (h0 * stride) + t0, stride, n, nh, tail, s0, s1, s2, s3);
                }
            }
        }
    }

    /// <summary>
    /// The decoded form of <paramref name="rows"/> that <see cref="ScoresCausalChunk"/> scores for many query tokens:
    /// per tile of sixteen rows (the last zero-padded) the code values as floats, hd vectors of sixteen tokens in channel
    /// order, at codes + tile * hd * 16, and the FP32 parameter planes at planes + tile * Parameters * 16.
    /// </summary>
    public static void DecodeColumns(in PackedRows rows, float* codes, float* planes)
    {
        Check(rows);
        int hd = rows.HeadDim, parameters = Parameters(rows), columns = rows.RowBytes / 4;
        var cols = stackalloc Vector512<int>[MaxColumns];
        var pl = stackalloc Vector512<float>[MaxColumns];
        byte* codePad = stackalloc byte[Tokens * rows.RowBytes];
        ushort* prmPad = stackalloc ushort[Tokens * parameters];
        var table = Table(rows.Bits);
        fixed (int* stages = StageTable)
        {
            for (int t0 = 0, tile = 0; t0 < rows.Count; t0 += Tokens, tile++)
            {
                LoadTile(rows, t0, Math.Min(Tokens, rows.Count - t0), codePad, prmPad, stages, cols, pl);
                float* c = codes + ((long)tile * hd * Tokens);
                // Code j of column k (channel k * codes + j) at c + (k * codes + j) * 16; a variable shift is fine
                // here, once a chunk (the decode kernel unrolls its constant shifts).
                int codesPerDword = 32 / rows.Bits;
                for (int k = 0; k < columns; k++)
                {
                    for (int j = 0; j < codesPerDword; j++)
                    {
                        Avx512F.PermuteVar16x32(table, Vector512.ShiftRightLogical(cols[k], j * rows.Bits)).Store(c + (((k * codesPerDword) + j) * Tokens));
                    }
                }

                float* p = planes + ((long)tile * parameters * Tokens);
                for (int v = 0; v < parameters; v++)
                {
                    pl[v].Store(p + (v * Tokens));
                }
            }
        }
    }

    /// <summary>
    /// One chunk of a causal batch's keys in <see cref="DecodeColumns"/> form: rows [0, <paramref name="count"/>) of the
    /// chunk hold cache positions <paramref name="first"/>..; token t of the batch (queries at queries + t *
    /// <paramref name="queryStride"/>, natural channel order) attends firstLength + t positions and scores those in the
    /// chunk below min(its length, <paramref name="limit"/>) into scores[t * perToken + r * length + position], with the
    /// bits of <see cref="Scores"/> (each lane's arithmetic is its own, so tiles and chunks do not change them).
    /// </summary>
    public static void ScoresCausalChunk(in PackedRows layout, float* codes, float* planes, int first, int count, int limit, float* queries, int queryStride, int rep, int firstLength, int tokens, float* scores, int perToken)
    {
        Check(layout);
        int hd = layout.HeadDim, groups = hd / layout.GroupChannels, parameters = Parameters(layout);
        float* qsum = stackalloc float[rep * groups];
        float* tail = stackalloc float[Tokens];
        var pl = stackalloc Vector512<float>[MaxColumns];
        for (int t = 0; t < tokens; t++)
        {
            int length = firstLength + t, end = Math.Min(count, Math.Min(length, limit) - first);
            if (end <= 0)
            {
                continue;
            }

            float* q = queries + ((long)t * queryStride);
            GroupSums(q, rep, hd, layout.GroupChannels, qsum);
            for (int t0 = 0, tile = 0; t0 < end; t0 += Tokens, tile++)
            {
                int n = Math.Min(Tokens, end - t0);
                float* c = codes + ((long)tile * hd * Tokens);
                float* p = planes + ((long)tile * parameters * Tokens);
                for (int v = 0; v < parameters; v++)
                {
                    pl[v] = Vector512.Load(p + (v * Tokens));
                }

                for (int h0 = 0; h0 < rep; h0 += HeadBlock)
                {
                    int nh = HeadQueries(q, h0, rep, hd, out float* q0, out float* q1, out float* q2, out float* q3);
                    Vector512<float> s0 = default, s1 = default, s2 = default, s3 = default;
                    for (int g = 0; g < groups; g++)
                    {
                        Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default;
                        Vector512<float> b0 = default, b1 = default, b2 = default, b3 = default;
                        for (int d = g * layout.GroupChannels; d < (g + 1) * layout.GroupChannels; d += 2)
                        {
                            Pair(Vector512.Load(c + (d * Tokens)), Vector512.Load(c + ((d + 1) * Tokens)), q0 + d, q1 + d, q2 + d, q3 + d, 0, ref a0, ref a1, ref a2, ref a3, ref b0, ref b1, ref b2, ref b3);
                        }

                        FinishGroup(layout, pl, qsum + (h0 * groups), groups, g, a0 + b0, a1 + b1, a2 + b2, a3 + b3, ref s0, ref s1, ref s2, ref s3);
                    }

                    StoreHeads(scores + ((long)t * perToken) + (h0 * length) + first + t0, length, n, nh, tail, s0, s1, s2, s3);
                }
            }
        }
    }

    /// <summary>FP16 parameters a token (a and b per group, or one scale per group where symmetric).</summary>
    public static int Parameters(in PackedRows rows) => rows.HeadDim / rows.GroupChannels * (rows.Symmetric ? 1 : 2);

    private static void Check(in PackedRows rows)
    {
        if (!Supports(rows.Bits, rows.HeadDim, rows.GroupChannels, rows.Symmetric))
        {
            throw new ArgumentException($"column scores take 2- or 4-bit rows of 1-8 dwords with groups of whole dwords and at most 8 parameters a token; got {rows.Bits} bits, head dim {rows.HeadDim}, groups of {rows.GroupChannels}");
        }
    }

    private static Vector512<float> Table(int bits) => bits == 4
        ? Vector512.Create(0f, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)
        : Vector512.Create(0f, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3);

    // Tile t0 of n rows (n < 16: a zero-padded copy) as code columns and FP32 parameter planes.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void LoadTile(in PackedRows rows, int t0, int n, byte* codePad, ushort* prmPad, int* stages, Vector512<int>* cols, Vector512<float>* planes)
    {
        int rowBytes = rows.RowBytes, columns = rowBytes / 4, parameters = Parameters(rows);
        ushort* prm = rows.Params + ((long)t0 * parameters);
        if (n < Tokens)
        {
            new Span<ushort>(prmPad, Tokens * parameters).Clear();
            new Span<ushort>(prm, n * parameters).CopyTo(new Span<ushort>(prmPad, Tokens * parameters));
            prm = prmPad;
        }

        if (rows.Tiled)
        {
            // A tile is already the columns (a part-filled last tile is read whole; its lanes past n are not stored).
            byte* tile = rows.Codes + ((long)t0 * rowBytes);
            for (int k = 0; k < columns; k++)
            {
                cols[k] = Vector512.Load((int*)(tile + (64 * k)));
            }
        }
        else
        {
            byte* block = rows.Codes + ((long)t0 * rowBytes);
            if (n < Tokens)
            {
                new Span<byte>(codePad, Tokens * rowBytes).Clear();
                new Span<byte>(block, n * rowBytes).CopyTo(new Span<byte>(codePad, Tokens * rowBytes));
                block = codePad;
            }

            for (int v = 0; v < columns; v++)
            {
                cols[v] = Vector512.Load((int*)(block + (64 * v)));
            }

            Transpose(cols, columns, stages);
        }

        var pi = (Vector512<int>*)planes;
        for (int v = 0; v < parameters; v++)
        {
            pi[v] = HalfBits.FiniteToSingle16(prm + (16 * v)).AsInt32();
        }

        Transpose(pi, parameters, stages);
    }

    // The queries of heads h0..h0 + 3 (a head past rep repeats h0's; its scores are not stored); returns how many are real.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int HeadQueries(float* queries, int h0, int rep, int hd, out float* q0, out float* q1, out float* q2, out float* q3)
    {
        int nh = Math.Min(HeadBlock, rep - h0);
        q0 = queries + (h0 * hd);
        q1 = nh > 1 ? q0 + hd : q0;
        q2 = nh > 2 ? q0 + (2 * hd) : q0;
        q3 = nh > 3 ? q0 + (3 * hd) : q0;
        return nh;
    }

    // score = fma(b_g, Q_g, fma(a_g, D_g, score)) for four heads, D = the group's code sums (even + odd chains).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void FinishGroup(in PackedRows rows, Vector512<float>* planes, float* qs, int groups, int g, Vector512<float> d0, Vector512<float> d1, Vector512<float> d2, Vector512<float> d3, ref Vector512<float> s0, ref Vector512<float> s1, ref Vector512<float> s2, ref Vector512<float> s3)
    {
        Vector512<float> a, b;
        if (rows.Symmetric)
        {
            var s = planes[g];
            a = s * Vector512.Create(rows.SymStep);
            b = s * Vector512.Create(rows.SymOffset);
        }
        else
        {
            a = planes[2 * g];
            b = planes[(2 * g) + 1];
        }

        s0 = Vector512.FusedMultiplyAdd(b, Vector512.Create(qs[g]), Vector512.FusedMultiplyAdd(a, d0, s0));
        s1 = Vector512.FusedMultiplyAdd(b, Vector512.Create(qs[groups + g]), Vector512.FusedMultiplyAdd(a, d1, s1));
        s2 = Vector512.FusedMultiplyAdd(b, Vector512.Create(qs[(2 * groups) + g]), Vector512.FusedMultiplyAdd(a, d2, s2));
        s3 = Vector512.FusedMultiplyAdd(b, Vector512.Create(qs[(3 * groups) + g]), Vector512.FusedMultiplyAdd(a, d3, s3));
    }

    // The first n lanes of the nh heads' scores, head r at dst + r * stride.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreHeads(float* dst, int stride, int n, int nh, float* tail, Vector512<float> s0, Vector512<float> s1, Vector512<float> s2, Vector512<float> s3)
    {
        Store(s0, dst, n, tail);
        if (nh > 1)
        {
            Store(s1, dst + stride, n, tail);
        }

        if (nh > 2)
        {
            Store(s2, dst + (2 * stride), n, tail);
        }

        if (nh > 3)
        {
            Store(s3, dst + (3 * stride), n, tail);
        }
    }

    /// <summary>Scalar twin of <see cref="Scores"/>: the same operations in the same order, token by token.</summary>
    public static void ScoresScalar(in PackedRows rows, float* queries, int rep, float* scores, int stride)
    {
        int hd = rows.HeadDim, bits = rows.Bits, g = rows.GroupChannels, groups = hd / g, pp = rows.Symmetric ? 1 : 2;
        float* qsum = stackalloc float[rep * groups];
        GroupSums(queries, rep, hd, g, qsum);
        byte* row = stackalloc byte[rows.RowBytes];
        uint mask = (1u << bits) - 1;
        for (int t = 0; t < rows.Count; t++)
        {
            if (rows.Tiled)
            {
                KeyTiles.ReadRow(rows.Codes, t, rows.RowBytes, new Span<byte>(row, rows.RowBytes));
            }
            else
            {
                new ReadOnlySpan<byte>(rows.Codes + ((long)t * rows.RowBytes), rows.RowBytes).CopyTo(new Span<byte>(row, rows.RowBytes));
            }

            ushort* prm = rows.Params + ((long)t * groups * pp);
            for (int r = 0; r < rep; r++)
            {
                float* q = queries + (r * hd);
                float s = 0;
                for (int grp = 0; grp < groups; grp++)
                {
                    float even = 0, odd = 0;
                    for (int c = grp * g; c < (grp + 1) * g; c++)
                    {
                        int bit = c * bits;
                        float code = ((uint)row[bit >> 3] >> (bit & 7)) & mask;
                        if ((c & 1) == 0)
                        {
                            even = MathF.FusedMultiplyAdd(code, q[c], even);
                        }
                        else
                        {
                            odd = MathF.FusedMultiplyAdd(code, q[c], odd);
                        }
                    }

                    float a, b;
                    if (rows.Symmetric)
                    {
                        float sc = HalfBits.ToSingle(prm[grp]);
                        a = sc * rows.SymStep;
                        b = sc * rows.SymOffset;
                    }
                    else
                    {
                        a = HalfBits.ToSingle(prm[2 * grp]);
                        b = HalfBits.ToSingle(prm[(2 * grp) + 1]);
                    }

                    s = MathF.FusedMultiplyAdd(a, even + odd, s);
                    s = MathF.FusedMultiplyAdd(b, qsum[(r * groups) + grp], s);
                }

                scores[(r * stride) + t] = s;
            }
        }
    }

    /// <summary>
    /// The transposition's permute indices for 2^w columns: w stages, each 2^w vectors of 16 two-source dword indices
    /// (index + 16 picks the pair's upper vector). Stage s swaps vector bit s (initially bit 4 + s of the flat index
    /// i * 2^w + k of dword k of token i) for bit s of k; the last stage leaves token i in lane i of column k.
    /// </summary>
    internal static int[] BuildStages(int w)
    {
        int cols = 1 << w;
        var vec = new int[cols * Tokens];
        var lane = new int[cols * Tokens];
        for (int f = 0; f < cols * Tokens; f++)
        {
            vec[f] = f >> 4;
            lane[f] = f & 15;
        }

        var result = new int[w * cols * Tokens];
        for (int s = 0; s < w; s++)
        {
            var newVec = new int[cols * Tokens];
            var newLane = new int[cols * Tokens];
            for (int v = 0; v < cols; v++)
            {
                // The elements that land in output vector v: from v's pair, those whose column has bit s = v's bit s.
                var members = new List<int>();
                for (int f = 0; f < cols * Tokens; f++)
                {
                    int k = f & (cols - 1);
                    int target = (vec[f] & ~(1 << s)) | (((k >> s) & 1) << s);
                    if (target == v)
                    {
                        members.Add(f);
                    }
                }

                if (members.Count != Tokens)
                {
                    throw new InvalidOperationException($"transposition stage {s} of {cols} columns puts {members.Count} dwords in vector {v}");
                }

                // Lanes in flat order (token, then column): in the last stage, where a vector holds one column, each
                // token's own lane.
                for (int l = 0; l < Tokens; l++)
                {
                    int f = members[l];
                    int pairUpper = (vec[f] >> s) & 1;
                    result[(((s * cols) + v) * Tokens) + l] = lane[f] + (16 * pairUpper);
                    newVec[f] = v;
                    newLane[f] = l;
                }
            }

            vec = newVec;
            lane = newLane;
        }

        for (int f = 0; f < cols * Tokens; f++)
        {
            if (vec[f] != (f & (cols - 1)) || lane[f] != f / cols)
            {
                throw new InvalidOperationException($"transposition of {cols} columns leaves dword {f & (cols - 1)} of token {f / cols} in vector {vec[f]}, lane {lane[f]}");
            }
        }

        return result;
    }

    // Sixteen rows of `count` dwords, row-major over the vectors at v (vector j holds dwords 16 j..16 j + 15 of the
    // sixteen rows), to `count` columns in place (vector k, lane i = dword k of row i), in registers: 1, 2 or 3 stages of
    // two-source permutes for 2, 4 or 8 columns.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Transpose(Vector512<int>* v, int count, int* stages)
    {
        switch (count)
        {
            case 2:
                {
                    var a = v[0];
                    var b = v[1];
                    v[0] = P(a, stages, 0, b);
                    v[1] = P(a, stages, 1, b);
                    break;
                }

            case 4:
                Transpose4(v, stages + 32);
                break;
            case 8:
                Transpose8(v, v, stages + 32 + 128);
                break;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Transpose4(Vector512<int>* v, int* idx)
    {
        var t0 = P(v[0], idx, 0, v[1]);
        var t1 = P(v[0], idx, 1, v[1]);
        var t2 = P(v[2], idx, 2, v[3]);
        var t3 = P(v[2], idx, 3, v[3]);
        int* x = idx + (4 * Tokens);
        v[0] = P(t0, x, 0, t2);
        v[1] = P(t1, x, 1, t3);
        v[2] = P(t0, x, 2, t2);
        v[3] = P(t1, x, 3, t3);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Transpose8(Vector512<int>* src, Vector512<int>* dst, int* idx)
    {
        var v0 = src[0];
        var v1 = src[1];
        var v2 = src[2];
        var v3 = src[3];
        var v4 = src[4];
        var v5 = src[5];
        var v6 = src[6];
        var v7 = src[7];
        var t0 = P(v0, idx, 0, v1);
        var t1 = P(v0, idx, 1, v1);
        var t2 = P(v2, idx, 2, v3);
        var t3 = P(v2, idx, 3, v3);
        var t4 = P(v4, idx, 4, v5);
        var t5 = P(v4, idx, 5, v5);
        var t6 = P(v6, idx, 6, v7);
        var t7 = P(v6, idx, 7, v7);
        idx += 8 * Tokens;
        v0 = P(t0, idx, 0, t2);
        v1 = P(t1, idx, 1, t3);
        v2 = P(t0, idx, 2, t2);
        v3 = P(t1, idx, 3, t3);
        v4 = P(t4, idx, 4, t6);
        v5 = P(t5, idx, 5, t7);
        v6 = P(t4, idx, 6, t6);
        v7 = P(t5, idx, 7, t7);
        idx += 8 * Tokens;
        dst[0] = P(v0, idx, 0, v4);
        dst[1] = P(v1, idx, 1, v5);
        dst[2] = P(v2, idx, 2, v6);
        dst[3] = P(v3, idx, 3, v7);
        dst[4] = P(v0, idx, 4, v4);
        dst[5] = P(v1, idx, 5, v5);
        dst[6] = P(v2, idx, 6, v6);
        dst[7] = P(v3, idx, 7, v7);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<int> P(Vector512<int> lo, int* idx, int o, Vector512<int> hi) =>
        Avx512F.PermuteVar16x32x2(lo, Vector512.Load(idx + (o * Tokens)), hi);

    // A column of eight 4-bit codes (at bits 0, 4, ..., 28) for four heads: even codes into a, odd into b.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Column4(Vector512<int> col, Vector512<float> table, float* q0, float* q1, float* q2, float* q3, ref Vector512<float> a0, ref Vector512<float> a1, ref Vector512<float> a2, ref Vector512<float> a3, ref Vector512<float> b0, ref Vector512<float> b1, ref Vector512<float> b2, ref Vector512<float> b3)
    {
        Pair(Avx512F.PermuteVar16x32(table, col), Avx512F.PermuteVar16x32(table, Avx512F.ShiftRightLogical(col, 4)), q0, q1, q2, q3, 0, ref a0, ref a1, ref a2, ref a3, ref b0, ref b1, ref b2, ref b3);
        Pair(Avx512F.PermuteVar16x32(table, Avx512F.ShiftRightLogical(col, 8)), Avx512F.PermuteVar16x32(table, Avx512F.ShiftRightLogical(col, 12)), q0, q1, q2, q3, 2, ref a0, ref a1, ref a2, ref a3, ref b0, ref b1, ref b2, ref b3);
        Pair(Avx512F.PermuteVar16x32(table, Avx512F.ShiftRightLogical(col, 16)), Avx512F.PermuteVar16x32(table, Avx512F.ShiftRightLogical(col, 20)), q0, q1, q2, q3, 4, ref a0, ref a1, ref a2, ref a3, ref b0, ref b1, ref b2, ref b3);
        Pair(Avx512F.PermuteVar16x32(table, Avx512F.ShiftRightLogical(col, 24)), Avx512F.PermuteVar16x32(table, Avx512F.ShiftRightLogical(col, 28)), q0, q1, q2, q3, 6, ref a0, ref a1, ref a2, ref a3, ref b0, ref b1, ref b2, ref b3);
    }

    // A column of sixteen 2-bit codes (at bits 0, 2, ..., 30; the table repeats 0-3, so the permute's four index bits
    // read one code) for four heads: even codes into a, odd into b.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Column2(Vector512<int> col, Vector512<float> table, float* q0, float* q1, float* q2, float* q3, ref Vector512<float> a0, ref Vector512<float> a1, ref Vector512<float> a2, ref Vector512<float> a3, ref Vector512<float> b0, ref Vector512<float> b1, ref Vector512<float> b2, ref Vector512<float> b3)
    {
        Pair(Avx512F.PermuteVar16x32(table, col), Avx512F.PermuteVar16x32(table, Avx512F.ShiftRightLogical(col, 2)), q0, q1, q2, q3, 0, ref a0, ref a1, ref a2, ref a3, ref b0, ref b1, ref b2, ref b3);
        Pair(Avx512F.PermuteVar16x32(table, Avx512F.ShiftRightLogical(col, 4)), Avx512F.PermuteVar16x32(table, Avx512F.ShiftRightLogical(col, 6)), q0, q1, q2, q3, 2, ref a0, ref a1, ref a2, ref a3, ref b0, ref b1, ref b2, ref b3);
        Pair(Avx512F.PermuteVar16x32(table, Avx512F.ShiftRightLogical(col, 8)), Avx512F.PermuteVar16x32(table, Avx512F.ShiftRightLogical(col, 10)), q0, q1, q2, q3, 4, ref a0, ref a1, ref a2, ref a3, ref b0, ref b1, ref b2, ref b3);
        Pair(Avx512F.PermuteVar16x32(table, Avx512F.ShiftRightLogical(col, 12)), Avx512F.PermuteVar16x32(table, Avx512F.ShiftRightLogical(col, 14)), q0, q1, q2, q3, 6, ref a0, ref a1, ref a2, ref a3, ref b0, ref b1, ref b2, ref b3);
        Pair(Avx512F.PermuteVar16x32(table, Avx512F.ShiftRightLogical(col, 16)), Avx512F.PermuteVar16x32(table, Avx512F.ShiftRightLogical(col, 18)), q0, q1, q2, q3, 8, ref a0, ref a1, ref a2, ref a3, ref b0, ref b1, ref b2, ref b3);
        Pair(Avx512F.PermuteVar16x32(table, Avx512F.ShiftRightLogical(col, 20)), Avx512F.PermuteVar16x32(table, Avx512F.ShiftRightLogical(col, 22)), q0, q1, q2, q3, 10, ref a0, ref a1, ref a2, ref a3, ref b0, ref b1, ref b2, ref b3);
        Pair(Avx512F.PermuteVar16x32(table, Avx512F.ShiftRightLogical(col, 24)), Avx512F.PermuteVar16x32(table, Avx512F.ShiftRightLogical(col, 26)), q0, q1, q2, q3, 12, ref a0, ref a1, ref a2, ref a3, ref b0, ref b1, ref b2, ref b3);
        Pair(Avx512F.PermuteVar16x32(table, Avx512F.ShiftRightLogical(col, 28)), Avx512F.PermuteVar16x32(table, Avx512F.ShiftRightLogical(col, 30)), q0, q1, q2, q3, 14, ref a0, ref a1, ref a2, ref a3, ref b0, ref b1, ref b2, ref b3);
    }

    // Codes j (values e) and j + 1 (values o) of sixteen tokens for four heads.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Pair(Vector512<float> e, Vector512<float> o, float* q0, float* q1, float* q2, float* q3, int j, ref Vector512<float> a0, ref Vector512<float> a1, ref Vector512<float> a2, ref Vector512<float> a3, ref Vector512<float> b0, ref Vector512<float> b1, ref Vector512<float> b2, ref Vector512<float> b3)
    {
        a0 = Vector512.FusedMultiplyAdd(e, Vector512.Create(q0[j]), a0);
        a1 = Vector512.FusedMultiplyAdd(e, Vector512.Create(q1[j]), a1);
        a2 = Vector512.FusedMultiplyAdd(e, Vector512.Create(q2[j]), a2);
        a3 = Vector512.FusedMultiplyAdd(e, Vector512.Create(q3[j]), a3);
        b0 = Vector512.FusedMultiplyAdd(o, Vector512.Create(q0[j + 1]), b0);
        b1 = Vector512.FusedMultiplyAdd(o, Vector512.Create(q1[j + 1]), b1);
        b2 = Vector512.FusedMultiplyAdd(o, Vector512.Create(q2[j + 1]), b2);
        b3 = Vector512.FusedMultiplyAdd(o, Vector512.Create(q3[j + 1]), b3);
    }

    // qsum[r * groups + g] = the sum of head r's queries over group g, in channel order.
    private static void GroupSums(float* queries, int rep, int hd, int groupChannels, float* qsum)
    {
        int groups = hd / groupChannels;
        for (int r = 0; r < rep; r++)
        {
            for (int g = 0; g < groups; g++)
            {
                float s = 0;
                for (int c = g * groupChannels; c < (g + 1) * groupChannels; c++)
                {
                    s += queries[(r * hd) + c];
                }

                qsum[(r * groups) + g] = s;
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store(Vector512<float> s, float* dst, int n, float* tmp)
    {
        if (n == Tokens)
        {
            s.Store(dst);
            return;
        }

        s.Store(tmp);
        new ReadOnlySpan<float>(tmp, n).CopyTo(new Span<float>(dst, n));
    }

    private static bool IsPowerOfTwoUpTo8(int x) => x is 1 or 2 or 4 or 8;
}
