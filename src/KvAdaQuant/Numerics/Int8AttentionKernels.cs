using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace KvAdaQuant.Numerics;

/// <summary>
/// Decode-attention scores with int8 queries over packed 2-, 4- or 8-bit key rows (the idea of llama.cpp's quantized
/// K cache: the query goes to the key type's dot type and the dot products are integer). Each query head is quantized
/// per parameter group of the keys (symmetric, round to nearest, one FP32 step sq = max|q| / 127 per group, codes in
/// [-127, 127], like Q8_0), and a token's score is
/// <c>s = sum_g ( (a_g * sq_g) * idot_g + b_g * qsum_g )</c>, with idot_g = sum over the group of code * q8 (exact, int32),
/// a_g, b_g the token's FP16 group step and offset, and qsum_g the exact FP32 sum of the query over the group.
/// The keys lie in <see cref="KeyTiles"/> (the store writes them so for this path): a tile of sixteen tokens is the
/// transpose of their rows' dwords, so one 64-byte load gives a column in which each 32-bit lane holds four code bytes
/// of one token (the row layout took two unpack levels over sixteen 16-byte loads per four columns); the bit fields
/// are split with shifts and masks, and each
/// field is multiplied with a repeated dword of four int8 query channels, for up to four query heads of a GQA group
/// per pass: 2- and 4-bit codes sixteen tokens at a time at 512 bits with <c>vpmaddubsw</c> (AVX-512BW, u8 x s8 pair
/// sums, which cannot saturate for these codes) summed in int16 and widened by <c>vpmaddwd</c>; 8-bit codes (and the
/// last 8 to 15 tokens) eight at a time with <c>vpdpbusd</c> (AVX-VNNI, u8 x s8 -> s32; 256 bits is the widest .NET 10
/// exposes on such a CPU; the 512-bit route measured about 10 % faster for 4-bit codes). CPUs without AVX-VNNI (AMD
/// Zen 4, Intel Ice Lake and Skylake-X: AVX-512 VNNI only, which .NET 10 does not expose) take <c>vpmaddubsw</c> +
/// <c>vpmaddwd</c> there, 8-bit codes split into nibbles, the same exact sums. The FP16 parameters of eight
/// tokens are gathered with one word permute and converted by bit arithmetic.
/// Scalar twin: <see cref="ScoresScalar"/> (bit-identical: the integer dots are exact, the float steps the same).
/// </summary>
internal static unsafe class Int8AttentionKernels
{
    /// <summary>Query heads served per pass over the rows.</summary>
    public const int HeadBlock = 4;

    /// <summary>Tokens per vector step (the eight int32 lanes of a 256-bit vector).</summary>
    public const int TokenStep = 8;

    /// <summary>
    /// Whether the vector kernel runs on this CPU (AVX-512BW with VL; the 8-token steps take AVX-VNNI's vpdpbusd where
    /// the CPU has it, else vpmaddubsw + vpmaddwd with the same exact sums).
    /// </summary>
    public static bool IsSupported => Avx512BW.IsSupported && Avx512BW.VL.IsSupported && Avx512F.IsSupported;

    /// <summary>
    /// Whether this key layout is handled: 2, 4 or 8 bits, rows of whole 16-byte chunks (head dim x bits a multiple of
    /// 128: head dim 32 at 4 and 8 bits, any multiple of 64 at 2 bits), whole dwords of codes per group
    /// (group channels a multiple of 32 / bits), and at most 4 groups per token (the eight tokens' FP16 parameters
    /// then lie in one 64-word window).
    /// </summary>
    public static bool Supports(int bits, int headDim, int groupChannels) =>
        bits is 2 or 4 or 8 && headDim > 0 && headDim * bits % 128 == 0 && groupChannels > 0 && headDim % groupChannels == 0
        && groupChannels % (32 / bits) == 0 && headDim / groupChannels <= 4;

    /// <summary>Times each query dword is repeated in the table (one 512-bit vector).</summary>
    public const int QueryRepeat = 16;

    /// <summary>Ints of the dword table <see cref="QuantizeQueries"/> fills for one head block: headDim / 4 per head, each repeated 16 times.</summary>
    public static int DwordCount(int headDim) => headDim / 4 * HeadBlock * QueryRepeat;

    /// <summary>
    /// Quantizes <paramref name="nh"/> (at most <see cref="HeadBlock"/>) query heads of <paramref name="headDim"/> floats
    /// per group of <paramref name="groupChannels"/>: <paramref name="q8"/> [HeadBlock][headDim] the int8 codes
    /// (round(q / sq), sq = max|q| / 127 of the group; 0 where the group is all zero), <paramref name="steps"/>[g * 4 + r] = sq,
    /// <paramref name="sums"/>[g * 4 + r] = the exact sum of q over the group, and <paramref name="dwords"/>
    /// [((k * cpb + j) * 4 + r) * 16 + lane] the four int8 codes of channels (4k + i) * cpb + j (i = 0..3; cpb = 8 / bits)
    /// that meet the code bytes 4k..4k+3 of a row at shift j * bits, repeated in 16 lanes (so the kernels read them
    /// as a vector memory operand, no broadcast instruction). Heads nh..3 are zero.
    /// </summary>
    public static void QuantizeQueries(float* q, int nh, int headDim, int bits, int groupChannels, sbyte* q8, float* steps, float* sums, int* dwords)
    {
        int groups = headDim / groupChannels;
        for (int r = 0; r < HeadBlock; r++)
        {
            for (int g = 0; g < groups; g++)
            {
                float* src = q + (r * headDim) + (g * groupChannels);
                sbyte* dst = q8 + (r * headDim) + (g * groupChannels);
                float amax = 0, sum = 0;
                if (r < nh)
                {
                    for (int c = 0; c < groupChannels; c++)
                    {
                        amax = MathF.Max(amax, MathF.Abs(src[c]));
                        sum += src[c];
                    }
                }

                float step = amax / 127f;
                float inv = amax > 0 ? 127f / amax : 0f;
                for (int c = 0; c < groupChannels; c++)
                {
                    dst[c] = r < nh ? (sbyte)Math.Clamp(MathF.Round(src[c] * inv), -127f, 127f) : (sbyte)0;
                }

                steps[(g * HeadBlock) + r] = r < nh ? step : 0f;
                sums[(g * HeadBlock) + r] = sum;
            }
        }

        int cpb = 8 / bits;
        int columns = headDim * bits / 32;
        for (int k = 0; k < columns; k++)
        {
            for (int j = 0; j < cpb; j++)
            {
                for (int r = 0; r < HeadBlock; r++)
                {
                    sbyte* qr = q8 + (r * headDim);
                    int c0 = 4 * k * cpb;
                    uint packed = (byte)qr[c0 + j] | ((uint)(byte)qr[c0 + cpb + j] << 8) | ((uint)(byte)qr[c0 + (2 * cpb) + j] << 16) | ((uint)(byte)qr[c0 + (3 * cpb) + j] << 24);
                    new Span<int>(dwords + ((((k * cpb) + j) * HeadBlock) + r) * QueryRepeat, QueryRepeat).Fill((int)packed);
                }
            }
        }
    }

    /// <summary>
    /// scores[r * stride + t] for t &lt; rows.Count and r &lt; nh (the formula of the type's remarks), and max[r] = the
    /// largest of them (-infinity for no rows); vector path where <see cref="IsSupported"/>, else <see cref="ScoresScalar"/>.
    /// </summary>
    public static void Scores(in PackedRows rows, sbyte* q8, int* dwords, float* steps, float* sums, int nh, float* scores, int stride, float* max)
    {
        if (!rows.Tiled)
        {
            throw new ArgumentException("int8 scores read keys laid out in KeyTiles (PackedRows.Tiled); these rows lie row after row", nameof(rows));
        }

        if (!IsSupported)
        {
            ScoresScalar(rows, q8, steps, sums, nh, scores, stride, max);
            return;
        }

        switch (rows.Bits)
        {
            case 2:
                ScoresVector<Width2>(rows, q8, dwords, steps, sums, nh, scores, stride, max);
                break;
            case 4:
                ScoresVector<Width4>(rows, q8, dwords, steps, sums, nh, scores, stride, max);
                break;
            default:
                ScoresVector<Width8>(rows, q8, dwords, steps, sums, nh, scores, stride, max);
                break;
        }
    }

    /// <summary>
    /// Scalar twin of <see cref="Scores"/>: the same integer dots and the same float steps in the same order. Reads rows
    /// in either layout (tiled or row after row), so the tests can check the tiles against the rows.
    /// </summary>
    public static void ScoresScalar(in PackedRows rows, sbyte* q8, float* steps, float* sums, int nh, float* scores, int stride, float* max)
    {
        for (int r = 0; r < nh; r++)
        {
            max[r] = float.NegativeInfinity;
        }

        ScoresScalarRange(rows, 0, rows.Count, q8, steps, sums, nh, scores, stride, max);
    }

    /// <summary>
    /// x = exp(x - max) in place (the <see cref="GgmlArithmetic.Exp(Vector512{float})"/> polynomial), returning the sum
    /// of the new x: the softmax without its normalisation, which the caller folds into the weighted value sum.
    /// </summary>
    public static float ExpSum(float* x, int n, float max)
    {
        int i = 0;
        float sum = 0;
        if (Vector512.IsHardwareAccelerated && Avx512F.IsSupported)
        {
            var vm = Vector512.Create(max);
            var s0 = Vector512<float>.Zero;
            var s1 = Vector512<float>.Zero;
            for (; i + 32 <= n; i += 32)
            {
                var e0 = GgmlArithmetic.Exp(Vector512.Load(x + i) - vm);
                var e1 = GgmlArithmetic.Exp(Vector512.Load(x + i + 16) - vm);
                e0.Store(x + i);
                e1.Store(x + i + 16);
                s0 += e0;
                s1 += e1;
            }

            for (; i + 16 <= n; i += 16)
            {
                var e0 = GgmlArithmetic.Exp(Vector512.Load(x + i) - vm);
                e0.Store(x + i);
                s0 += e0;
            }

            sum = Vector512.Sum(s0 + s1);
        }

        for (; i < n; i++)
        {
            float e = GgmlArithmetic.Exp(x[i] - max);
            x[i] = e;
            sum += e;
        }

        return sum;
    }

    /// <summary>Scalar twin of <see cref="ExpSum"/> (the same exp per element; the sum in another order, so not bit-identical).</summary>
    public static float ExpSumScalar(float* x, int n, float max)
    {
        float sum = 0;
        for (int i = 0; i < n; i++)
        {
            float e = GgmlArithmetic.Exp(x[i] - max);
            x[i] = e;
            sum += e;
        }

        return sum;
    }

    private static void ScoresScalarRange(in PackedRows rows, int t0, int t1, sbyte* q8, float* steps, float* sums, int nh, float* scores, int stride, float* max)
    {
        int hd = rows.HeadDim, bits = rows.Bits, gc = rows.GroupChannels, groups = hd / gc;
        int pp = rows.Symmetric ? 1 : 2;
        uint mask = (1u << bits) - 1;
        byte* copy = stackalloc byte[rows.RowBytes];
        for (int t = t0; t < t1; t++)
        {
            byte* row = rows.Codes + ((long)t * rows.RowBytes);
            if (rows.Tiled)
            {
                KeyTiles.ReadRow(rows.Codes, t, rows.RowBytes, new Span<byte>(copy, rows.RowBytes));
                row = copy;
            }

            ushort* prm = rows.Params + ((long)t * groups * pp);
            for (int r = 0; r < nh; r++)
            {
                sbyte* qr = q8 + (r * hd);
                float s = 0;
                for (int g = 0; g < groups; g++)
                {
                    int idot = 0;
                    for (int c = g * gc; c < (g + 1) * gc; c++)
                    {
                        int bit = c * bits;
                        int code = (int)(((uint)row[bit >> 3] >> (bit & 7)) & mask);
                        idot += code * qr[c];
                    }

                    float a, b;
                    if (rows.Symmetric)
                    {
                        float sc = HalfBits.ToSingle(prm[g]);
                        a = sc * rows.SymStep;
                        b = sc * rows.SymOffset;
                    }
                    else
                    {
                        a = HalfBits.ToSingle(prm[2 * g]);
                        b = HalfBits.ToSingle(prm[(2 * g) + 1]);
                    }

                    s = MathF.FusedMultiplyAdd(idot, a * steps[(g * HeadBlock) + r], s);
                    s = MathF.FusedMultiplyAdd(b, sums[(g * HeadBlock) + r], s);
                }

                scores[(r * stride) + t] = s;
                max[r] = s > max[r] ? s : max[r];
            }
        }
    }

    // How far ahead the 16-token pass prefetches its codes. With the row layout the pass read its rows out of order
    // (four tokens 4 rows apart per load), which the hardware prefetchers followed poorly for 64-byte rows: without it
    // the Llama-3.1-8B shape's streamed int8 scores took 2.2-2.4 ms at 32k against 1.23 ms with it (= its
    // cache-resident time); 1 KB to 4 KB measured alike, 2 KB best (min-probe, alternated runs). With the tiles the
    // reads are in order, and dropping the prefetch measured alike or slightly slower (three alternated pairs).
    private const int PrefetchBytes = 2048;

    private static void ScoresVector<TWidth>(in PackedRows rows, sbyte* q8, int* dwords, float* steps, float* sums, int nh, float* scores, int stride, float* max)
        where TWidth : ICodeWidth
    {
        int hd = rows.HeadDim, gc = rows.GroupChannels, groups = hd / gc;
        int rb = rows.RowBytes;
        int columns = rb / 4;
        int columnsPerGroup = gc * TWidth.Bits / 32;
        int pp = rows.Symmetric ? 1 : 2;
        int paramWords = TokenStep * groups * pp;
        ushort* index = stackalloc ushort[64];
        BuildParamIndex(groups, rows.Symmetric, index);
        var idxLo = Vector512.Load(index);
        var idxHi = Vector512.Load(index + 32);
        var symScale = rows.Symmetric
            ? Vector512.Create(Vector256.Create(rows.SymStep), Vector256.Create(rows.SymOffset))
            : Vector512<float>.One;
        float* prm = stackalloc float[(16 * groups) + 16];
        var m0 = Vector256.Create(float.NegativeInfinity);
        var m1 = m0;
        var m2 = m0;
        var m3 = m0;
        int n = rows.Count;
        int t = 0;
        var w0 = Vector512.Create(float.NegativeInfinity);
        var w1 = w0;
        var w2 = w0;
        var w3 = w0;
        float* prmHi = stackalloc float[(16 * groups) + 16];
        byte* codes = rows.Codes;
        ushort* prms = rows.Params;
        bool symmetric = rows.Symmetric;
        int qColumn = 8 / TWidth.Bits * HeadBlock * QueryRepeat;
        int widenEvery = TWidth.MaxWordAdds / (8 / TWidth.Bits);
        bool longGroups = columnsPerGroup > widenEvery;
        for (; TWidth.Bits < 8 && t + (2 * TokenStep) <= n; t += 2 * TokenStep)
        {
            // Sixteen tokens (one tile) at 512 bits, a column per load. 2- and 4-bit codes times int8 queries fit
            // vpmaddubsw's int16 pair sums without saturation; those are added in int16 (at most MaxWordAdds at a
            // time) and widened by vpmaddwd with ones. All EVEX, short dependency chains.
            ConvertParams(prms + ((long)t * groups * pp), paramWords, groups, idxLo, idxHi, symmetric, symScale, prm);
            ConvertParams(prms + ((long)(t + TokenStep) * groups * pp), paramWords, groups, idxLo, idxHi, symmetric, symScale, prmHi);
            // Group by group: the group's columns (one 64-byte load each, the load PrefetchBytes ahead requested with
            // it), then its int16 sums widened and folded into the float scores. Groups of at most widenEvery columns
            // (the usual 32 channels) widen once, at the flush, straight into the values the flush converts.
            byte* col = codes + ((long)t * rb);
            var f0 = Vector512<float>.Zero;
            var f1 = Vector512<float>.Zero;
            var f2 = Vector512<float>.Zero;
            var f3 = Vector512<float>.Zero;
            WordAccumulators acc = default;
            int* q = dwords;
            for (int g = 0; g < groups; g++)
            {
                int untilWiden = widenEvery;
                for (int k = 0; k < columnsPerGroup; k++, col += 64, q += qColumn)
                {
                    Sse.Prefetch0(col + PrefetchBytes);
                    TWidth.Madd16(Vector512.Load((uint*)col), q, ref acc);
                    if (--untilWiden == 0 && k + 1 < columnsPerGroup)
                    {
                        Widen(ref acc);
                        untilWiden = widenEvery;
                    }
                }

                Flush16(ref acc, longGroups, prm, prmHi, steps, sums, g, ref f0, ref f1, ref f2, ref f3);
            }

            f0.Store(scores + t);
            w0 = Avx512F.Max(f0, w0);
            if (nh > 1)
            {
                f1.Store(scores + stride + t);
                w1 = Avx512F.Max(f1, w1);
            }

            if (nh > 2)
            {
                f2.Store(scores + (2 * stride) + t);
                w2 = Avx512F.Max(f2, w2);
            }

            if (nh > 3)
            {
                f3.Store(scores + (3 * stride) + t);
                w3 = Avx512F.Max(f3, w3);
            }
        }

        m0 = Avx.Max(w0.GetLower(), Avx.Max(w0.GetUpper(), m0));
        m1 = Avx.Max(w1.GetLower(), Avx.Max(w1.GetUpper(), m1));
        m2 = Avx.Max(w2.GetLower(), Avx.Max(w2.GetUpper(), m2));
        m3 = Avx.Max(w3.GetLower(), Avx.Max(w3.GetUpper(), m3));
        for (; t + TokenStep <= n; t += TokenStep)
        {
            ConvertParams(rows.Params + ((long)t * groups * pp), paramWords, groups, idxLo, idxHi, rows.Symmetric, symScale, prm);
            // Eight tokens from the start or the middle of a tile: the first or second half of each 64-byte column.
            byte* blk = rows.Codes + KeyTiles.Offset(t, 0, rb);
            var f0 = Vector256<float>.Zero;
            var f1 = Vector256<float>.Zero;
            var f2 = Vector256<float>.Zero;
            var f3 = Vector256<float>.Zero;
            Accumulators acc = default;
            int left = columnsPerGroup, g = 0;
            int* q = dwords;
            for (int k = 0; k < columns; k++, q += qColumn)
            {
                // Column k's first or second half; even and odd columns go to the A and B accumulators.
                TWidth.Dot(Vector256.Load((uint*)(blk + (k * 64))), q, (k & 1) != 0, ref acc);
                if (--left == 0)
                {
                    Flush(ref acc, prm, steps, sums, ref g, ref f0, ref f1, ref f2, ref f3);
                    left = columnsPerGroup;
                }
            }

            f0.Store(scores + t);
            m0 = Avx.Max(f0, m0);
            if (nh > 1)
            {
                f1.Store(scores + stride + t);
                m1 = Avx.Max(f1, m1);
            }

            if (nh > 2)
            {
                f2.Store(scores + (2 * stride) + t);
                m2 = Avx.Max(f2, m2);
            }

            if (nh > 3)
            {
                f3.Store(scores + (3 * stride) + t);
                m3 = Avx.Max(f3, m3);
            }
        }

        max[0] = MaxOf(m0);
        if (nh > 1)
        {
            max[1] = MaxOf(m1);
        }

        if (nh > 2)
        {
            max[2] = MaxOf(m2);
        }

        if (nh > 3)
        {
            max[3] = MaxOf(m3);
        }

        ScoresScalarRange(rows, t, n, q8, steps, sums, nh, scores, stride, max);
    }

    // Folds group g's integer dots into the float scores (f_r += cvt(A_r + B_r) * (a * sq_r) + b * qsum_r), clears them, moves to g + 1.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Flush(ref Accumulators acc, float* prm, float* steps, float* sums, ref int g, ref Vector256<float> f0, ref Vector256<float> f1, ref Vector256<float> f2, ref Vector256<float> f3)
    {
        var a = Vector256.Load(prm + (g * 16));
        var b = Vector256.Load(prm + (g * 16) + 8);
        float* sg = steps + (g * HeadBlock);
        float* zg = sums + (g * HeadBlock);
        f0 = Vector256.FusedMultiplyAdd(b, Vector256.Create(zg[0]), Vector256.FusedMultiplyAdd(Avx.ConvertToVector256Single(acc.A0 + acc.B0), a * Vector256.Create(sg[0]), f0));
        f1 = Vector256.FusedMultiplyAdd(b, Vector256.Create(zg[1]), Vector256.FusedMultiplyAdd(Avx.ConvertToVector256Single(acc.A1 + acc.B1), a * Vector256.Create(sg[1]), f1));
        f2 = Vector256.FusedMultiplyAdd(b, Vector256.Create(zg[2]), Vector256.FusedMultiplyAdd(Avx.ConvertToVector256Single(acc.A2 + acc.B2), a * Vector256.Create(sg[2]), f2));
        f3 = Vector256.FusedMultiplyAdd(b, Vector256.Create(zg[3]), Vector256.FusedMultiplyAdd(Avx.ConvertToVector256Single(acc.A3 + acc.B3), a * Vector256.Create(sg[3]), f3));
        acc = default;
        g++;
    }

    // Flush for sixteen tokens: I_r = the group's int32 dots (its int16 sums widened by vpmaddwd with ones, plus the
    // dots widened before where the group is long), then f_r += cvt(I_r) * (a * sq_r) + b * qsum_r; sums cleared.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Flush16(ref WordAccumulators acc, bool longGroups, float* prmLo, float* prmHi, float* steps, float* sums, int g, ref Vector512<float> f0, ref Vector512<float> f1, ref Vector512<float> f2, ref Vector512<float> f3)
    {
        var one = Vector512.Create((short)1);
        var i0 = Avx512BW.MultiplyAddAdjacent(acc.H0, one);
        var i1 = Avx512BW.MultiplyAddAdjacent(acc.H1, one);
        var i2 = Avx512BW.MultiplyAddAdjacent(acc.H2, one);
        var i3 = Avx512BW.MultiplyAddAdjacent(acc.H3, one);
        if (longGroups)
        {
            i0 += acc.I0;
            i1 += acc.I1;
            i2 += acc.I2;
            i3 += acc.I3;
            acc.I0 = default;
            acc.I1 = default;
            acc.I2 = default;
            acc.I3 = default;
        }

        acc.H0 = default;
        acc.H1 = default;
        acc.H2 = default;
        acc.H3 = default;
        var a = Join(Vector256.Load(prmLo + (g * 16)), Vector256.Load(prmHi + (g * 16)));
        var b = Join(Vector256.Load(prmLo + (g * 16) + 8), Vector256.Load(prmHi + (g * 16) + 8));
        float* sg = steps + (g * HeadBlock);
        float* zg = sums + (g * HeadBlock);
        f0 = Vector512.FusedMultiplyAdd(Vector512.Create(zg[0]), b, Vector512.FusedMultiplyAdd(Avx512F.ConvertToVector512Single(i0), a * Vector512.Create(sg[0]), f0));
        f1 = Vector512.FusedMultiplyAdd(Vector512.Create(zg[1]), b, Vector512.FusedMultiplyAdd(Avx512F.ConvertToVector512Single(i1), a * Vector512.Create(sg[1]), f1));
        f2 = Vector512.FusedMultiplyAdd(Vector512.Create(zg[2]), b, Vector512.FusedMultiplyAdd(Avx512F.ConvertToVector512Single(i2), a * Vector512.Create(sg[2]), f2));
        f3 = Vector512.FusedMultiplyAdd(Vector512.Create(zg[3]), b, Vector512.FusedMultiplyAdd(Avx512F.ConvertToVector512Single(i3), a * Vector512.Create(sg[3]), f3));
    }

    // The int16 pair sums into the int32 dots (vpmaddwd by 1 adds each token's two halves), int16 sums cleared.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Widen(ref WordAccumulators acc)
    {
        var one = Vector512.Create((short)1);
        acc.I0 += Avx512BW.MultiplyAddAdjacent(acc.H0, one);
        acc.I1 += Avx512BW.MultiplyAddAdjacent(acc.H1, one);
        acc.I2 += Avx512BW.MultiplyAddAdjacent(acc.H2, one);
        acc.I3 += Avx512BW.MultiplyAddAdjacent(acc.H3, one);
        acc.H0 = default;
        acc.H1 = default;
        acc.H2 = default;
        acc.H3 = default;
    }

    // (lo, hi) as one 512-bit vector by one insert (Vector512.Create(lo, hi) went through the stack here).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<T> Join<T>(Vector256<T> lo, Vector256<T> hi) => Avx512F.InsertVector256(lo.ToVector512Unsafe().AsInt32(), hi.AsInt32(), 1).As<int, T>();

    private static float MaxOf(Vector256<float> v)
    {
        float m = float.NegativeInfinity;
        for (int l = 0; l < 8; l++)
        {
            float x = v.GetElement(l);
            m = x > m ? x : m;
        }

        return m;
    }

    // Word index into the eight tokens' FP16 parameters for output word o = g * 16 + ab * 8 + token: the step a (ab 0) or
    // offset b (ab 1) of group g; symmetric rows have one scale per group, used for both (scaled by step / offset later).
    private static void BuildParamIndex(int groups, bool symmetric, ushort* index)
    {
        for (int o = 0; o < 64; o++)
        {
            int g = o / 16, ab = (o % 16) / 8, tok = o % 8;
            int src = g >= groups ? 0 : symmetric ? (tok * groups) + g : (tok * 2 * groups) + (2 * g) + ab;
            index[o] = (ushort)src;
        }
    }

    // The eight tokens' parameters as floats [g][a x 8, b x 8]: one word permute per two groups (vpermw / vpermt2w
    // over the 64-word window), then sixteen halves to floats by bit arithmetic (exact, as HalfBits.ToSingle).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void ConvertParams(ushort* src, int words, int groups, Vector512<ushort> idxLo, Vector512<ushort> idxHi, bool symmetric, Vector512<float> symScale, float* dst)
    {
        // The parameter buffer is padded (QuantizedTensorStore) so a 64-word window never reads past its end.
        var w0 = Vector512.Load(src);
        Vector512<ushort> lo, hi = default;
        if (words <= 32)
        {
            lo = Avx512BW.PermuteVar32x16(w0, idxLo);
            if (groups > 2)
            {
                hi = Avx512BW.PermuteVar32x16(w0, idxHi);
            }
        }
        else
        {
            var w1 = Vector512.Load(src + 32);
            lo = Avx512BW.PermuteVar32x16x2(w0, idxLo, w1);
            hi = Avx512BW.PermuteVar32x16x2(w0, idxHi, w1);
        }

        var f = HalfToSingle(lo.GetLower());
        if (symmetric)
        {
            f *= symScale;
        }

        f.Store(dst);
        if (groups > 1)
        {
            f = HalfToSingle(lo.GetUpper());
            if (symmetric)
            {
                f *= symScale;
            }

            f.Store(dst + 16);
        }

        if (groups > 2)
        {
            f = HalfToSingle(hi.GetLower());
            if (symmetric)
            {
                f *= symScale;
            }

            f.Store(dst + 32);
            f = HalfToSingle(hi.GetUpper());
            if (symmetric)
            {
                f *= symScale;
            }

            f.Store(dst + 48);
        }
    }

    // Sixteen finite halves to floats: sign-extend, shift the exponent and mantissa into place, rebias by 2^112 (exact).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> HalfToSingle(Vector256<ushort> h16)
    {
        var h = Avx512F.ConvertToVector512Int32(h16.AsInt16());
        var bits = Avx512F.ShiftLeftLogical(h, 13) & Vector512.Create(unchecked((int)0x8FFFE000));
        return bits.AsSingle() * Vector512.Create(HalfBits.ExponentRebias);
    }

    /// <summary>One code width: the dot of a transposed column (four code bytes per token lane) with the query dwords.</summary>
    private interface ICodeWidth
    {
        static abstract int Bits { get; }

        /// <summary>
        /// acc_r += dot(fields of col, q[(j * 4) + r]) for each bit field j of the bytes and head r, split over the A and B
        /// accumulators (two dependency chains per head; <paramref name="odd"/>: the column's parity, used where a column has one field).
        /// </summary>
        static abstract void Dot(Vector256<uint> col, int* q, bool odd, ref Accumulators acc);

        /// <summary>vpmaddubsw results (each at most 2 x max code x 127) that an int16 sum holds without overflow (0: none).</summary>
        static abstract int MaxWordAdds { get; }

        /// <summary>Sixteen tokens' column: H_r += vpmaddubsw(field j, q[(j * 4 + r) * 16]) for each bit field j and head r.</summary>
        static abstract void Madd16(Vector512<uint> col, int* q, ref WordAccumulators acc);
    }

    /// <summary>Per head, int16 pair sums of sixteen tokens (H) and their widened int32 dots (I).</summary>
    private struct WordAccumulators
    {
        public Vector512<short> H0;
        public Vector512<short> H1;
        public Vector512<short> H2;
        public Vector512<short> H3;
        public Vector512<int> I0;
        public Vector512<int> I1;
        public Vector512<int> I2;
        public Vector512<int> I3;
    }

    /// <summary>Two int32 dot accumulators per head (A, B: independent chains, summed at the group's end).</summary>
    private struct Accumulators
    {
        public Vector256<int> A0;
        public Vector256<int> A1;
        public Vector256<int> A2;
        public Vector256<int> A3;
        public Vector256<int> B0;
        public Vector256<int> B1;
        public Vector256<int> B2;
        public Vector256<int> B3;
    }

    private readonly struct Width2 : ICodeWidth
    {
        public static int Bits => 2;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void Dot(Vector256<uint> col, int* q, bool odd, ref Accumulators acc)
        {
            var m = Vector256.Create(0x03030303u);
            Dot4((col & m).AsByte(), q, ref acc.A0, ref acc.A1, ref acc.A2, ref acc.A3);
            Dot4(((col >> 2) & m).AsByte(), q + (4 * QueryRepeat), ref acc.B0, ref acc.B1, ref acc.B2, ref acc.B3);
            Dot4(((col >> 4) & m).AsByte(), q + (8 * QueryRepeat), ref acc.A0, ref acc.A1, ref acc.A2, ref acc.A3);
            Dot4(((col >> 6) & m).AsByte(), q + (12 * QueryRepeat), ref acc.B0, ref acc.B1, ref acc.B2, ref acc.B3);
        }

        public static int MaxWordAdds => 32767 / (2 * 3 * 127);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void Madd16(Vector512<uint> col, int* q, ref WordAccumulators acc)
        {
            var m = Vector512.Create(0x03030303u);
            Madd4((col & m).AsByte(), q, ref acc);
            Madd4(((col >> 2) & m).AsByte(), q + (4 * QueryRepeat), ref acc);
            Madd4(((col >> 4) & m).AsByte(), q + (8 * QueryRepeat), ref acc);
            Madd4(((col >> 6) & m).AsByte(), q + (12 * QueryRepeat), ref acc);
        }
    }

    private readonly struct Width4 : ICodeWidth
    {
        public static int Bits => 4;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void Dot(Vector256<uint> col, int* q, bool odd, ref Accumulators acc)
        {
            var m = Vector256.Create(0x0F0F0F0Fu);
            Dot4((col & m).AsByte(), q, ref acc.A0, ref acc.A1, ref acc.A2, ref acc.A3);
            Dot4(((col >> 4) & m).AsByte(), q + (4 * QueryRepeat), ref acc.B0, ref acc.B1, ref acc.B2, ref acc.B3);
        }

        public static int MaxWordAdds => 32767 / (2 * 15 * 127);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void Madd16(Vector512<uint> col, int* q, ref WordAccumulators acc)
        {
            var m = Vector512.Create(0x0F0F0F0Fu);
            Madd4((col & m).AsByte(), q, ref acc);
            Madd4(((col >> 4) & m).AsByte(), q + (4 * QueryRepeat), ref acc);
        }
    }

    private readonly struct Width8 : ICodeWidth
    {
        public static int Bits => 8;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void Dot(Vector256<uint> col, int* q, bool odd, ref Accumulators acc)
        {
            if (odd)
            {
                Dot4Bytes(col.AsByte(), q, ref acc.B0, ref acc.B1, ref acc.B2, ref acc.B3);
            }
            else
            {
                Dot4Bytes(col.AsByte(), q, ref acc.A0, ref acc.A1, ref acc.A2, ref acc.A3);
            }
        }

        public static int MaxWordAdds => 0;

        public static void Madd16(Vector512<uint> col, int* q, ref WordAccumulators acc) => throw new NotSupportedException("8-bit codes saturate vpmaddubsw");
    }

    // H_r += vpmaddubsw(codes, query dwords of head r) for the four heads.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Madd4(Vector512<byte> codes, int* q, ref WordAccumulators acc)
    {
        acc.H0 += Avx512BW.MultiplyAddAdjacent(codes, Vector512.Load((sbyte*)q));
        acc.H1 += Avx512BW.MultiplyAddAdjacent(codes, Vector512.Load((sbyte*)(q + QueryRepeat)));
        acc.H2 += Avx512BW.MultiplyAddAdjacent(codes, Vector512.Load((sbyte*)(q + (2 * QueryRepeat))));
        acc.H3 += Avx512BW.MultiplyAddAdjacent(codes, Vector512.Load((sbyte*)(q + (3 * QueryRepeat))));
    }

    // i_r += the lane dots of the codes with head r's query dwords. Codes of at most 4 bits (pair sums within
    // 2 x 15 x 127, no vpmaddubsw saturation) or, with VNNI, any byte.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Dot4(Vector256<byte> codes, int* q, ref Vector256<int> i0, ref Vector256<int> i1, ref Vector256<int> i2, ref Vector256<int> i3)
    {
        i0 = LaneDot(i0, codes, Vector256.Load((sbyte*)q));
        i1 = LaneDot(i1, codes, Vector256.Load((sbyte*)(q + QueryRepeat)));
        i2 = LaneDot(i2, codes, Vector256.Load((sbyte*)(q + (2 * QueryRepeat))));
        i3 = LaneDot(i3, codes, Vector256.Load((sbyte*)(q + (3 * QueryRepeat))));
    }

    // Dot4 for 8-bit codes: with VNNI one vpdpbusd per head; without it (codes up to 255 would saturate vpmaddubsw's
    // int16 pair sums) the codes split into nibbles, c = lo + 16 hi, each nibble's pair sums widened by vpmaddwd
    // with ones and with sixteens: the same exact int32 lanes.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Dot4Bytes(Vector256<byte> codes, int* q, ref Vector256<int> i0, ref Vector256<int> i1, ref Vector256<int> i2, ref Vector256<int> i3)
    {
        if (AvxVnni.IsSupported)
        {
            Dot4(codes, q, ref i0, ref i1, ref i2, ref i3);
            return;
        }

        var m = Vector256.Create((byte)0x0F);
        var lo = codes & m;
        var hi = (codes.AsUInt16() >> 4).AsByte() & m;
        i0 += NibbleDots(lo, hi, Vector256.Load((sbyte*)q));
        i1 += NibbleDots(lo, hi, Vector256.Load((sbyte*)(q + QueryRepeat)));
        i2 += NibbleDots(lo, hi, Vector256.Load((sbyte*)(q + (2 * QueryRepeat))));
        i3 += NibbleDots(lo, hi, Vector256.Load((sbyte*)(q + (3 * QueryRepeat))));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> NibbleDots(Vector256<byte> lo, Vector256<byte> hi, Vector256<sbyte> q) =>
        Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(lo, q), Vector256.Create((short)1))
        + Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(hi, q), Vector256.Create((short)16));

    // acc + the dot of each lane's four code bytes with its four int8 query bytes: vpdpbusd where AVX-VNNI runs, else
    // vpmaddubsw + vpmaddwd with ones (exact for codes of at most 4 bits).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> LaneDot(Vector256<int> acc, Vector256<byte> codes, Vector256<sbyte> q)
    {
        if (AvxVnni.IsSupported)
        {
            return AvxVnni.MultiplyWideningAndAdd(acc, codes, q);
        }

        return acc + Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(codes, q), Vector256.Create((short)1));
    }
}
