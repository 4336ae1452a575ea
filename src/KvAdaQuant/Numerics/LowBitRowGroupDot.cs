using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace KvAdaQuant.Numerics;

/// <summary>
/// Eight Q2_K, Q3_K or IQ4_XS rows from their dword-interleaved row-group copy (<see cref="KQuantRowGroups"/>; <c>group</c> is the
/// group's first unit) times 1 to 4 activation vectors quantized to Q8_K (<see cref="Q8KActivations"/>). Token t's values
/// start at t x <c>xStride</c>, its scales at t x superBlocks, its 16-value sums at t x superBlocks x 16 and its sum pairs
/// at t x superBlocks x 8 (<see cref="Q8KActivations.Sums16Pairs"/>); output[t x outStride + r] is row r's result.
/// One 256-bit load of a chunk gives each row four code bytes in its own 32-bit lane, so the products build up lane by lane
/// against broadcast activations (vpdpbusd) with no horizontal sum, and the scales of all 8 rows unpack in a few vector
/// operations per super-block. The arithmetic is that of the row-by-row kernels (<see cref="LowBitDot.DotQ2_K"/>,
/// <see cref="LowBitDot.DotQ3_K"/>, <see cref="LowBitDot.DotIq4_XS"/>), so the results are the same bits:
/// <list type="bullet">
/// <item>Q2_K: per super-block the exact integers S = sum_j scale_j (sum of q x over the 16 values of j) and
/// M = sum_j min_j (sum of x over j); acc = fma(S, d x dx, acc), mins = fma(M, dmin x dx, mins); the result is acc - mins.</item>
/// <item>Q3_K: per super-block the exact integer S = sum_j scale_j (sum of q x over the 16 values of j), q in -4..3, taken as
/// sum_j (L_j - 32) (sum of u x) - 4 sum_j scale_j B_j with u = q + 4 (0..7) and L_j = scale_j + 32 (0..63);
/// acc = fma(S, d x dx, acc).</item>
/// <item>IQ4_XS: per super-block the exact integer S = sum_j (scale_j - 32) (sum of kvalues[code] x over the 32 values of
/// j), taken as sum_j (scale_j - 32) (sum of (kvalues[code] + 128) x - 128 B_j) with B_j the 32 values' sum, so that
/// vpdpbusd multiplies unsigned bytes (1..241); without AVX-VNNI the signed levels times the activations, |x| times the
/// level with x's sign through vpmaddubsw + vpmaddwd (the same S); acc = fma(S, d x dx, acc).</item>
/// </list>
/// Scalar twins: <see cref="DotQ2_KScalar"/>, <see cref="DotQ3_KScalar"/>, <see cref="DotIq4_XSScalar"/>, reading the unit through
/// <see cref="KQuantRowGroups.InterleavedOffset"/>.
/// </summary>
public static unsafe class LowBitRowGroupDot
{
    // Chunk offsets within a unit (KQuantRowGroups: dword i of each row in chunk i).
    private const int Q2CodeStart = 4 * 32;
    private const int Q2Halves = 20 * 32;
    private const int Q3CodeStart = 8 * 32;
    private const int Q3Scales0 = 24 * 32;
    private const int Q3Halves = 27 * 32;
    private const int Iq4Low = 32;
    private const int Iq4Codes = 2 * 32;

    /// <summary>True when the Q2_K vector path runs on this machine (AVX2 and FMA; vpdpbusd where AVX-VNNI is present).</summary>
    public static bool Q2_KVectorPathSupported => Avx2.IsSupported && Fma.IsSupported;

    /// <summary>
    /// True when the IQ4_XS and IQ4_NL vector paths run on this machine (AVX2 and FMA). With AVX-VNNI vpdpbusd multiplies
    /// the levels + 128 (unsigned) by the activations; without it the biased bytes (up to 241) would saturate
    /// vpmaddubsw's 16-bit pair sums, so each product is |x| times the level with x's sign (<see cref="Iq4Dp"/>): the
    /// same exact integer sums.
    /// </summary>
    public static bool Iq4_XSVectorPathSupported => Avx2.IsSupported && Fma.IsSupported;

    /// <summary>Q2_K row group · Q8_K activations (vector path where supported, else the scalar twin).</summary>
    public static void DotQ2_K(byte* group, int superBlocks, int tokens, sbyte* xq, long xStride, float* xd, short* xsum, int* xpairs, float* output, long outStride)
    {
        if (Q2_KVectorPathSupported)
        {
            DotQ2_KAvx2(group, superBlocks, tokens, xq, xStride, xd, xpairs, output, outStride);
        }
        else
        {
            DotQ2_KScalar(group, superBlocks, tokens, xq, xStride, xd, xsum, output, outStride);
        }
    }

    /// <summary>Q3_K row group · Q8_K activations (vector path where supported, else the scalar twin).</summary>
    public static void DotQ3_K(byte* group, int superBlocks, int tokens, sbyte* xq, long xStride, float* xd, short* xsum, int* xpairs, float* output, long outStride)
    {
        if (Q2_KVectorPathSupported)
        {
            DotQ3_KAvx2(group, superBlocks, tokens, xq, xStride, xd, xpairs, output, outStride);
        }
        else
        {
            DotQ3_KScalar(group, superBlocks, tokens, xq, xStride, xd, xsum, output, outStride);
        }
    }

    /// <summary>IQ4_XS row group · Q8_K activations (vector path where supported, else the scalar twin).</summary>
    public static void DotIq4_XS(byte* group, int superBlocks, int tokens, sbyte* xq, long xStride, float* xd, short* xsum, float* output, long outStride)
    {
        if (Iq4_XSVectorPathSupported)
        {
            DotIq4_XSAvx2(group, superBlocks, tokens, xq, xStride, xd, xsum, output, outStride);
        }
        else
        {
            DotIq4_XSScalar(group, superBlocks, tokens, xq, xStride, xd, xsum, output, outStride);
        }
    }

    /// <summary>Scalar twin of the Q2_K vector path: row by row, token by token, value e = d scale_(e/16) q_e - dmin min_(e/16).</summary>
    public static void DotQ2_KScalar(byte* group, int superBlocks, int tokens, sbyte* xq, long xStride, float* xd, short* xsum, float* output, long outStride)
    {
        CheckTokens(tokens);
        for (int t = 0; t < tokens; t++)
        {
            for (int r = 0; r < KQuantRowGroups.GroupRows; r++)
            {
                float acc = 0, mins = 0;
                for (int b = 0; b < superBlocks; b++)
                {
                    byte* unit = group + ((long)b * KQuantRowGroups.Q2_KUnitBytes);
                    sbyte* x = xq + (t * xStride) + (b * 256);
                    short* sx = xsum + ((((long)t * superBlocks) + b) * 16);
                    int sum = 0, summ = 0;
                    for (int e = 0; e < 256; e++)
                    {
                        int q = (unit[KQuantRowGroups.InterleavedOffset(r, 16 + (32 * (e >> 7)) + (e & 31), LowBitDot.Q2_KBlockBytes)] >> (2 * ((e >> 5) & 3))) & 3;
                        sum += (unit[KQuantRowGroups.InterleavedOffset(r, e >> 4, LowBitDot.Q2_KBlockBytes)] & 0xF) * q * x[e];
                    }

                    for (int j = 0; j < 16; j++)
                    {
                        summ += (unit[KQuantRowGroups.InterleavedOffset(r, j, LowBitDot.Q2_KBlockBytes)] >> 4) * sx[j];
                    }

                    float dx = xd[((long)t * superBlocks) + b];
                    acc = MathF.FusedMultiplyAdd(sum, HalfBits.ToSingleNoSubnormals(*(ushort*)(unit + KQuantRowGroups.InterleavedOffset(r, 80, LowBitDot.Q2_KBlockBytes))) * dx, acc);
                    mins = MathF.FusedMultiplyAdd(summ, HalfBits.ToSingleNoSubnormals(*(ushort*)(unit + KQuantRowGroups.InterleavedOffset(r, 82, LowBitDot.Q2_KBlockBytes))) * dx, mins);
                }

                output[(t * outStride) + r] = acc - mins;
            }
        }
    }

    /// <summary>Scalar twin of the Q3_K vector path: row by row, token by token, value e = d scale_(e/16) q_e, q_e in -4..3.</summary>
    public static void DotQ3_KScalar(byte* group, int superBlocks, int tokens, sbyte* xq, long xStride, float* xd, short* xsum, float* output, long outStride)
    {
        CheckTokens(tokens);
        _ = xsum;
        const int bb = LowBitDot.Q3_KBlockBytes;
        Span<byte> hmask = stackalloc byte[32];
        Span<byte> qs = stackalloc byte[64];
        Span<byte> sc = stackalloc byte[12];
        for (int t = 0; t < tokens; t++)
        {
            for (int r = 0; r < KQuantRowGroups.GroupRows; r++)
            {
                float acc = 0;
                for (int b = 0; b < superBlocks; b++)
                {
                    byte* unit = group + ((long)b * KQuantRowGroups.Q3_KUnitBytes);
                    sbyte* x = xq + (t * xStride) + (b * 256);
                    for (int i = 0; i < 32; i++)
                    {
                        hmask[i] = unit[KQuantRowGroups.InterleavedOffset(r, i, bb)];
                    }

                    for (int i = 0; i < 64; i++)
                    {
                        qs[i] = unit[KQuantRowGroups.InterleavedOffset(r, 32 + i, bb)];
                    }

                    for (int i = 0; i < 12; i++)
                    {
                        sc[i] = unit[KQuantRowGroups.InterleavedOffset(r, 96 + i, bb)];
                    }

                    int sum = 0;
                    for (int e = 0; e < 256; e++)
                    {
                        sum += RowDequantizer.ScaleQ3_K(e >> 4, sc) * RowDequantizer.ValueQ3_K(e, hmask, qs) * x[e];
                    }

                    float d = HalfBits.ToSingleNoSubnormals(*(ushort*)(unit + KQuantRowGroups.InterleavedOffset(r, 108, bb)));
                    acc = MathF.FusedMultiplyAdd(sum, d * xd[((long)t * superBlocks) + b], acc);
                }

                output[(t * outStride) + r] = acc;
            }
        }
    }

    /// <summary>Scalar twin of the IQ4_XS vector path: row by row, token by token, value e = d (scale_(e/32) - 32) kvalues[code_e].</summary>
    public static void DotIq4_XSScalar(byte* group, int superBlocks, int tokens, sbyte* xq, long xStride, float* xd, short* xsum, float* output, long outStride)
    {
        CheckTokens(tokens);
        _ = xsum;
        var kv = RowDequantizer.Iq4Values;
        for (int t = 0; t < tokens; t++)
        {
            for (int r = 0; r < KQuantRowGroups.GroupRows; r++)
            {
                float acc = 0;
                for (int b = 0; b < superBlocks; b++)
                {
                    byte* unit = group + ((long)b * KQuantRowGroups.Iq4_XSUnitBytes);
                    sbyte* x = xq + (t * xStride) + (b * 256);
                    ushort h = *(ushort*)(unit + KQuantRowGroups.InterleavedOffset(r, 2, LowBitDot.Iq4_XSBlockBytes));
                    var scalesL = new ReadOnlySpan<byte>(unit + KQuantRowGroups.InterleavedOffset(r, 4, LowBitDot.Iq4_XSBlockBytes), 4);
                    int sum = 0;
                    for (int ib = 0; ib < 8; ib++)
                    {
                        int s = 0;
                        for (int j = 0; j < 16; j++)
                        {
                            byte q = unit[KQuantRowGroups.InterleavedOffset(r, 8 + (16 * ib) + j, LowBitDot.Iq4_XSBlockBytes)];
                            s += (kv[q & 0xF] * x[(32 * ib) + j]) + (kv[q >> 4] * x[(32 * ib) + 16 + j]);
                        }

                        sum += (RowDequantizer.ScaleIq4_XS(ib, h, scalesL) - 32) * s;
                    }

                    float dx = xd[((long)t * superBlocks) + b];
                    acc = MathF.FusedMultiplyAdd(sum, HalfBits.ToSingleNoSubnormals(*(ushort*)(unit + KQuantRowGroups.InterleavedOffset(r, 0, LowBitDot.Iq4_XSBlockBytes))) * dx, acc);
                }

                output[(t * outStride) + r] = acc;
            }
        }
    }

    /// <summary>Vector path for Q2_K row groups (AVX-VNNI where present, else AVX2 multiply-adds: codes &lt;= 3 cannot saturate them).</summary>
    public static void DotQ2_KAvx2(byte* group, int superBlocks, int tokens, sbyte* xq, long xStride, float* xd, int* xpairs, float* output, long outStride) =>
        TwoBitAvx2<Q2Codes>(group, superBlocks, tokens, xq, xStride, xd, xpairs, output, outStride);

    /// <summary>Vector path for Q3_K row groups (AVX-VNNI where present, else AVX2 multiply-adds: codes &lt;= 7 cannot saturate them).</summary>
    public static void DotQ3_KAvx2(byte* group, int superBlocks, int tokens, sbyte* xq, long xStride, float* xd, int* xpairs, float* output, long outStride) =>
        TwoBitAvx2<Q3Codes>(group, superBlocks, tokens, xq, xStride, xd, xpairs, output, outStride);

    // Q2_K and Q3_K: a 4-token tile, or token by token.
    private static void TwoBitAvx2<T>(byte* group, int superBlocks, int tokens, sbyte* xq, long xStride, float* xd, int* xpairs, float* output, long outStride)
        where T : struct, ICodes
    {
        CheckTokens(tokens);
        if (tokens == 4)
        {
            Tile4<T>(group, superBlocks, xq, xStride, xd, xpairs, output, outStride);
            return;
        }

        for (int t = 0; t < tokens; t++)
        {
            T.Token(group, superBlocks, xq + (t * xStride), xd + ((long)t * superBlocks), xpairs + ((long)t * superBlocks * 8), output + (t * outStride));
        }
    }

    /// <summary>Vector path for IQ4_XS row groups (needs <see cref="Iq4_XSVectorPathSupported"/>).</summary>
    public static void DotIq4_XSAvx2(byte* group, int superBlocks, int tokens, sbyte* xq, long xStride, float* xd, short* xsum, float* output, long outStride)
    {
        CheckTokens(tokens);
        if (!Iq4_XSVectorPathSupported)
        {
            throw new PlatformNotSupportedException("the IQ4_XS row-group vector path needs AVX2 and FMA");
        }

        if (tokens == 4)
        {
            Iq4_XSTile4(group, superBlocks, xq, xStride, xd, xsum, output, outStride);
            return;
        }

        for (int t = 0; t < tokens; t++)
        {
            Iq4_XSToken(group, superBlocks, xq + (t * xStride), xd + ((long)t * superBlocks), xsum + ((long)t * superBlocks * 16), output + (t * outStride));
        }
    }

    // One token of Q2_K: per half of the super-block eight accumulators (HalfSums), then the minimums.
    private static void Q2_KToken(byte* group, int superBlocks, sbyte* xq, float* xd, int* xpairs, float* output)
    {
        var acc = Vector256<float>.Zero;
        var mins = Vector256<float>.Zero;
        var low4 = Vector256.Create(0x0F0F0F0Fu);
        byte* unit = group;
        for (int b = 0; b < superBlocks; b++, unit += KQuantRowGroups.Q2_KUnitBytes)
        {
            int* x = (int*)(xq + (b * 256));
            var total = HalfSums<Q2Codes>(unit, 0, x, Avx.LoadVector256((uint*)unit) & low4, Avx.LoadVector256((uint*)(unit + 32)) & low4);
            total += HalfSums<Q2Codes>(unit, 1, x + 32, Avx.LoadVector256((uint*)(unit + 64)) & low4, Avx.LoadVector256((uint*)(unit + 96)) & low4);
            Q2Steps(unit, out var d, out var dmin);
            Q2Finish(unit, total, xpairs + (b * 8), xd[b], d, dmin, ref acc, ref mins);
        }

        (acc - mins).Store(output);
    }

    // One token of Q3_K: HalfSums of the unsigned codes u = q + 4 with the unsigned scales L = scale + 32, less 32 each,
    // then less 4 sum_j scale_j b_j (Q3Offsets): the exact integer sum_j scale_j sum q x.
    private static void Q3_KToken(byte* group, int superBlocks, sbyte* xq, float* xd, int* xpairs, float* output)
    {
        var acc = Vector256<float>.Zero;
        byte* unit = group;
        for (int b = 0; b < superBlocks; b++, unit += KQuantRowGroups.Q3_KUnitBytes)
        {
            int* x = (int*)(xq + (b * 256));
            Q3Scales(unit, out var l0, out var l1, out var l2, out var l3);
            var total = HalfSums<Q3Codes>(unit, 0, x, l0, l1) + HalfSums<Q3Codes>(unit, 1, x + 32, l2, l3);
            total -= Q3Offsets(l0, l1, l2, l3, xpairs + (b * 8)) << 2;
            acc = Fma.MultiplyAdd(Avx.ConvertToVector256Single(total), Q3Step(unit) * Vector256.Create(xd[b]), acc);
        }

        acc.Store(output);
    }

    // How Q2_K and Q3_K differ inside HalfSums and Pass: where the 2-bit code chunks start, what a code is, and the bias
    // of the scale bytes.
    private interface ICodes
    {
        static abstract int CodeOffset { get; }

        static abstract int ScaleBias { get; }

        // The third bits of half n's codes for chunk c (0..7 of the half) shifted so that HighBit picks them; Q2_K: none.
        static abstract Vector256<ushort> High(byte* unit, int c, int n);

        // Code of shift j (0..3) of each byte of v, with its third bit from High's result.
        static abstract Vector256<byte> Code(Vector256<ushort> v, Vector256<ushort> high, int j);

        // One token through the whole row group (Q2_KToken, Q3_KToken).
        static abstract void Token(byte* group, int superBlocks, sbyte* xq, float* xd, int* xpairs, float* output);
    }

    private readonly struct Q2Codes : ICodes
    {
        public static int CodeOffset => Q2CodeStart;

        public static int ScaleBias => 0;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<ushort> High(byte* unit, int c, int n) => default;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<byte> Code(Vector256<ushort> v, Vector256<ushort> high, int j) => TwoBits(v, j);

        public static void Token(byte* group, int superBlocks, sbyte* xq, float* xd, int* xpairs, float* output) =>
            Q2_KToken(group, superBlocks, xq, xd, xpairs, output);
    }

    private readonly struct Q3Codes : ICodes
    {
        public static int CodeOffset => Q3CodeStart;

        public static int ScaleBias => 32;

        // hmask bytes 4c.. (chunk c): bit 4n + j of byte l is the third bit of value 128n + 32j + l; shifted down by 4 for n = 1.
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<ushort> High(byte* unit, int c, int n)
        {
            var h = Avx.LoadVector256((ushort*)(unit + (32 * c)));
            return n == 0 ? h : Avx2.ShiftRightLogical(h, 4);
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<byte> Code(Vector256<ushort> v, Vector256<ushort> high, int j)
        {
            var bit2 = Vector256.Create((ushort)0x0404);
            var third = j switch
            {
                0 => Avx2.ShiftLeftLogical(high, 2) & bit2,
                1 => Avx2.ShiftLeftLogical(high, 1) & bit2,
                2 => high & bit2,
                _ => Avx2.ShiftRightLogical(high, 1) & bit2,
            };
            return TwoBits(v, j) | third.AsByte();
        }

        public static void Token(byte* group, int superBlocks, sbyte* xq, float* xd, int* xpairs, float* output) =>
            Q3_KToken(group, superBlocks, xq, xd, xpairs, output);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<byte> TwoBits(Vector256<ushort> v, int j)
    {
        var three = Vector256.Create((byte)3);
        return j switch
        {
            0 => v.AsByte() & three,
            1 => Avx2.ShiftRightLogical(v, 2).AsByte() & three,
            2 => Avx2.ShiftRightLogical(v, 4).AsByte() & three,
            _ => Avx2.ShiftRightLogical(v, 6).AsByte() & three,
        };
    }

    // Byte k of each lane less the codes' scale bias.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> ScaleOf<T>(Vector256<uint> v, int k)
        where T : struct, ICodes
        => T.ScaleBias == 0 ? KQuantRowGroupDot.ByteOf(v, k) : KQuantRowGroupDot.ByteOf(v, k) - Vector256.Create(T.ScaleBias);

    // Half n of a super-block for one token (x: its 32 activation dwords), eight accumulators (shift j = 0..3 x the
    // first or second 16 values of each 32-value run), eight independent chains, each times its sub-block's scale:
    // sub-block 8n + 2j + h is byte (2j + h) % 4 of lo (j < 2) or hi.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> HalfSums<T>(byte* unit, int n, int* x, Vector256<uint> lo, Vector256<uint> hi)
        where T : struct, ICodes
    {
        byte* q = unit + T.CodeOffset + (256 * n);
        Vector256<int> a0 = default, a1 = default, a2 = default, a3 = default, a4 = default, a5 = default, a6 = default, a7 = default;
        for (int c = 0; c < 4; c++)
        {
            // chunk c: code bytes 4c.. of this half (values 4c.. of each 32-value run), chunk c + 4: bytes 16 + 4c..
            var v = Avx.LoadVector256(q + (32 * c)).AsUInt16();
            var hv = T.High(unit, c, n);
            a0 = KQuantRowGroupDot.Dp(a0, T.Code(v, hv, 0), x[c]);
            a1 = KQuantRowGroupDot.Dp(a1, T.Code(v, hv, 1), x[8 + c]);
            a2 = KQuantRowGroupDot.Dp(a2, T.Code(v, hv, 2), x[16 + c]);
            a3 = KQuantRowGroupDot.Dp(a3, T.Code(v, hv, 3), x[24 + c]);
            var w = Avx.LoadVector256(q + 128 + (32 * c)).AsUInt16();
            var hw = T.High(unit, c + 4, n);
            a4 = KQuantRowGroupDot.Dp(a4, T.Code(w, hw, 0), x[4 + c]);
            a5 = KQuantRowGroupDot.Dp(a5, T.Code(w, hw, 1), x[12 + c]);
            a6 = KQuantRowGroupDot.Dp(a6, T.Code(w, hw, 2), x[20 + c]);
            a7 = KQuantRowGroupDot.Dp(a7, T.Code(w, hw, 3), x[28 + c]);
        }

        return (a0 * ScaleOf<T>(lo, 0)) + (a4 * ScaleOf<T>(lo, 1)) + (a1 * ScaleOf<T>(lo, 2)) + (a5 * ScaleOf<T>(lo, 3))
            + (a2 * ScaleOf<T>(hi, 0)) + (a6 * ScaleOf<T>(hi, 1)) + (a3 * ScaleOf<T>(hi, 2)) + (a7 * ScaleOf<T>(hi, 3));
    }

    // acc = fma(S, d dx, acc), mins = fma(M, dmin dx, mins) with M = sum_j min_j B_j: the minimums (high nibbles of the
    // scale bytes) as 16-bit pairs (4k, 4k + 2) and (4k + 1, 4k + 3) against the activation's sum pairs.
    // (d and dmin: Q2Steps, once per super-block for all tokens)
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Q2Finish(byte* unit, Vector256<int> total, int* pairs, float xd, Vector256<float> d, Vector256<float> dmin, ref Vector256<float> acc, ref Vector256<float> mins)
    {
        var low4 = Vector256.Create(0x0F0F0F0Fu);
        var m = Vector256<int>.Zero;
        for (int k = 0; k < 4; k++)
        {
            m += PairProducts(Avx2.ShiftRightLogical(Avx.LoadVector256((uint*)(unit + (32 * k))), 4) & low4, 0, pairs + (2 * k));
        }

        var dx = Vector256.Create(xd);
        acc = Fma.MultiplyAdd(Avx.ConvertToVector256Single(total), d * dx, acc);
        mins = Fma.MultiplyAdd(Avx.ConvertToVector256Single(m), dmin * dx, mins);
    }

    // The 8 rows' d and dmin of a Q2_K unit (chunk 20: d in the low 16 bits of each lane, dmin in the high).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Q2Steps(byte* unit, out Vector256<float> d, out Vector256<float> dmin)
    {
        var halves = Avx.LoadVector256((int*)(unit + Q2Halves));
        d = HalfBits.ToSingle8(halves);
        dmin = HalfBits.ToSingle8(Avx2.ShiftRightLogical(halves, 16));
    }

    // (byte 0 - bias) b_4k + (byte 2 - bias) b_4k+2 + (byte 1 - bias) b_4k+1 + (byte 3 - bias) b_4k+3 for each lane's four
    // bytes (each at most 63), as 16-bit pairs against the activation's sum pairs (Sums16Pairs entries 2k, 2k + 1).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> PairProducts(Vector256<uint> bytes, short bias, int* pairs)
    {
        var even = Vector256.Create(0x00FF00FFu);
        var b = Vector256.Create(bias);
        var m = Avx2.MultiplyAddAdjacent((bytes & even).AsInt16() - b, Vector256.Create(pairs[0]).AsInt16());
        return m + Avx2.MultiplyAddAdjacent((Avx2.ShiftRightLogical(bytes, 8) & even).AsInt16() - b, Vector256.Create(pairs[1]).AsInt16());
    }

    // The 8 rows' unsigned 6-bit scales L = scale + 32 of a Q3_K unit, ggml's unpacking of the 12 packed bytes (chunks 24-26)
    // on every lane at once: l_k holds sub-blocks 4k..4k+3 in its bytes.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Q3Scales(byte* unit, out Vector256<uint> l0, out Vector256<uint> l1, out Vector256<uint> l2, out Vector256<uint> l3)
    {
        var a0 = Avx.LoadVector256((uint*)(unit + Q3Scales0));
        var a1 = Avx.LoadVector256((uint*)(unit + Q3Scales0 + 32));
        var tmp = Avx.LoadVector256((uint*)(unit + Q3Scales0 + 64));
        var low4 = Vector256.Create(0x0F0F0F0Fu);
        var low2 = Vector256.Create(0x03030303u);
        l0 = (a0 & low4) | Avx2.ShiftLeftLogical(tmp & low2, 4);
        l1 = (a1 & low4) | Avx2.ShiftLeftLogical(Avx2.ShiftRightLogical(tmp, 2) & low2, 4);
        l2 = (Avx2.ShiftRightLogical(a0, 4) & low4) | Avx2.ShiftLeftLogical(Avx2.ShiftRightLogical(tmp, 4) & low2, 4);
        l3 = (Avx2.ShiftRightLogical(a1, 4) & low4) | Avx2.ShiftLeftLogical(Avx2.ShiftRightLogical(tmp, 6) & low2, 4);
    }

    // sum_j scale_j b_j over the 16 sub-blocks.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> Q3Offsets(Vector256<uint> l0, Vector256<uint> l1, Vector256<uint> l2, Vector256<uint> l3, int* pairs) =>
        PairProducts(l0, 32, pairs) + PairProducts(l1, 32, pairs + 2) + PairProducts(l2, 32, pairs + 4) + PairProducts(l3, 32, pairs + 6);

    // The 8 rows' d (FP16 at the unit's tail, row r at 2r).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Q3Step(byte* unit) => HalfBits.ToSingle8(Sse2.LoadVector128((ushort*)(unit + Q3Halves)));

    // Four tokens of Q2_K or Q3_K: per half n and h (first or second 16 values of each run), two passes of two tokens
    // (eight accumulators, see KQuantRowGroupDot.Dp) over the four chunks; the per-token integer and float sums stay in
    // memory.
    private static void Tile4<T>(byte* group, int superBlocks, sbyte* xq, long xStride, float* xd, int* xpairs, float* output, long outStride)
        where T : struct, ICodes
    {
        bool q3 = T.ScaleBias != 0;
        var f = stackalloc Vector256<float>[8];
        var sums = stackalloc Vector256<int>[4];
        for (int t = 0; t < 8; t++)
        {
            f[t] = default;
        }

        var low4 = Vector256.Create(0x0F0F0F0Fu);
        long pStride = (long)superBlocks * 8;
        int unitBytes = q3 ? KQuantRowGroups.Q3_KUnitBytes : KQuantRowGroups.Q2_KUnitBytes;
        byte* unit = group;
        for (int b = 0; b < superBlocks; b++, unit += unitBytes)
        {
            for (int t = 0; t < 4; t++)
            {
                sums[t] = default;
            }

            Vector256<uint> l0, l1, l2, l3;
            if (q3)
            {
                Q3Scales(unit, out l0, out l1, out l2, out l3);
            }
            else
            {
                l0 = Avx.LoadVector256((uint*)unit) & low4;
                l1 = Avx.LoadVector256((uint*)(unit + 32)) & low4;
                l2 = Avx.LoadVector256((uint*)(unit + 64)) & low4;
                l3 = Avx.LoadVector256((uint*)(unit + 96)) & low4;
            }

            for (int n = 0; n < 2; n++)
            {
                var lo = n == 0 ? l0 : l2;
                var hi = n == 0 ? l1 : l3;
                for (int h = 0; h < 2; h++)
                {
                    var s0 = ScaleOf<T>(lo, h);
                    var s1 = ScaleOf<T>(lo, 2 + h);
                    var s2 = ScaleOf<T>(hi, h);
                    var s3 = ScaleOf<T>(hi, 2 + h);
                    int* x = (int*)(xq + (b * 256)) + (32 * n) + (4 * h);
                    Pass<T>(unit, n, h, x, xStride, sums, s0, s1, s2, s3);
                    Pass<T>(unit, n, h, (int*)((sbyte*)x + (2 * xStride)), xStride, sums + 2, s0, s1, s2, s3);
                }
            }

            // the steps once per super-block for the four tokens (Q3_K: d only)
            Vector256<float> d, dmin = default;
            if (q3)
            {
                d = Q3Step(unit);
            }
            else
            {
                Q2Steps(unit, out d, out dmin);
            }

            for (int t = 0; t < 4; t++)
            {
                int* pairs = xpairs + (t * pStride) + (b * 8);
                float dx = xd[(t * superBlocks) + b];
                if (q3)
                {
                    var total = sums[t] - (Q3Offsets(l0, l1, l2, l3, pairs) << 2);
                    f[2 * t] = Fma.MultiplyAdd(Avx.ConvertToVector256Single(total), d * Vector256.Create(dx), f[2 * t]);
                }
                else
                {
                    Q2Finish(unit, sums[t], pairs, dx, d, dmin, ref f[2 * t], ref f[(2 * t) + 1]);
                }
            }
        }

        for (int t = 0; t < 4; t++)
        {
            (f[2 * t] - f[(2 * t) + 1]).Store(output + (t * outStride));
        }
    }

    // Two tokens (x, and x + xStride bytes) over the four chunks of half n, h: sums[0], sums[1] += sum_j (the shift-j
    // sums) x s_j.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Pass<T>(byte* unit, int n, int h, int* x, long xStride, Vector256<int>* sums, Vector256<int> s0, Vector256<int> s1, Vector256<int> s2, Vector256<int> s3)
        where T : struct, ICodes
    {
        byte* q = unit + T.CodeOffset + (256 * n) + (128 * h);
        int* y = (int*)((sbyte*)x + xStride);
        Vector256<int> a0 = default, a1 = default, a2 = default, a3 = default, b0 = default, b1 = default, b2 = default, b3 = default;
        for (int c = 0; c < 4; c++, q += 32)
        {
            var v = Avx.LoadVector256(q).AsUInt16();
            var hv = T.High(unit, (4 * h) + c, n);
            var c0 = T.Code(v, hv, 0);
            a0 = KQuantRowGroupDot.Dp(a0, c0, x[c]);
            b0 = KQuantRowGroupDot.Dp(b0, c0, y[c]);
            var c1 = T.Code(v, hv, 1);
            a1 = KQuantRowGroupDot.Dp(a1, c1, x[8 + c]);
            b1 = KQuantRowGroupDot.Dp(b1, c1, y[8 + c]);
            var c2 = T.Code(v, hv, 2);
            a2 = KQuantRowGroupDot.Dp(a2, c2, x[16 + c]);
            b2 = KQuantRowGroupDot.Dp(b2, c2, y[16 + c]);
            var c3 = T.Code(v, hv, 3);
            a3 = KQuantRowGroupDot.Dp(a3, c3, x[24 + c]);
            b3 = KQuantRowGroupDot.Dp(b3, c3, y[24 + c]);
        }

        sums[0] += (a0 * s0) + (a1 * s1) + (a2 * s2) + (a3 * s3);
        sums[1] += (b0 * s0) + (b1 * s1) + (b2 * s2) + (b3 * s3);
    }

    // With AVX-VNNI the IQ4_NL values plus 128 (1..241), else the values themselves (-127..113, as bytes), in both 128-bit
    // halves, for vpshufb.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<byte> Iq4Table()
    {
        var v = RowDequantizer.Iq4Values;
        int o = Iq4Bias;
        var half = Vector128.Create(
            (byte)(v[0] + o), (byte)(v[1] + o), (byte)(v[2] + o), (byte)(v[3] + o), (byte)(v[4] + o), (byte)(v[5] + o), (byte)(v[6] + o), (byte)(v[7] + o),
            (byte)(v[8] + o), (byte)(v[9] + o), (byte)(v[10] + o), (byte)(v[11] + o), (byte)(v[12] + o), (byte)(v[13] + o), (byte)(v[14] + o), (byte)(v[15] + o));
        return Vector256.Create(half, half);
    }

    // What the looked-up bytes are offset by: 128 where vpdpbusd takes them as unsigned, 0 where they stay signed.
    private static int Iq4Bias => AvxVnni.IsSupported ? 128 : 0;

    // acc + (per 32-bit lane) the dot product of four looked-up bytes v with the four int8 activations in x. With
    // AVX-VNNI: vpdpbusd of the biased (unsigned) bytes. Without: vpmaddubsw of |x| (unsigned, 0..128: x = -128 stays
    // exact, as it would not as the signed operand) and the signed levels with x's sign (|level| <= 127, so no
    // negation overflows), pair sums within 2 x 128 x 127 < 32,768, widened by vpmaddwd with ones: the same exact sums.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> Iq4Dp(Vector256<int> acc, Vector256<byte> v, int x)
    {
        var xb = Vector256.Create(x).AsSByte();
        if (AvxVnni.IsSupported)
        {
            return AvxVnni.MultiplyWideningAndAdd(acc, v, xb);
        }

        var pairs = Avx2.MultiplyAddAdjacent(Avx2.Abs(xb), Avx2.Sign(v.AsSByte(), xb));
        return acc + Avx2.MultiplyAddAdjacent(pairs, Vector256.Create((short)1));
    }

    // The 8 rows' table values of one chunk (Iq4Table: biased or signed): low nibbles (lo) and high nibbles (hi) looked up.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Iq4Lookup(byte* chunk, Vector256<byte> table, out Vector256<byte> lo, out Vector256<byte> hi)
    {
        var nibble = Vector256.Create((byte)0x0F);
        var v = Avx.LoadVector256(chunk);
        lo = Avx2.Shuffle(table, v & nibble);
        hi = Avx2.Shuffle(table, Avx2.ShiftRightLogical(v.AsUInt16(), 4).AsByte() & nibble);
    }

    // Sub-block ib's signed scale minus 32 in each row's lane: the 4 low bits from scales_l, the 2 high ones from scales_h
    // (the high 16 bits of chunk 0).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> Iq4Scale(Vector256<int> low, Vector256<int> high, int ib) =>
        (((low >>> (4 * ib)) & Vector256.Create(0xF)) | (((high >>> (16 + (2 * ib))) & Vector256.Create(3)) << 4)) - Vector256.Create(32);

    // The bias times (the 32-value sum B_ib of the activations), broadcast (zero without AVX-VNNI: signed levels).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> Bias(short* sums16, int ib) =>
        AvxVnni.IsSupported ? Vector256.Create(128 * (sums16[2 * ib] + sums16[(2 * ib) + 1])) : Vector256<int>.Zero;

    // One token of IQ4_XS: one accumulator per 32-value sub-block (eight chains), chunk k of each sub-block per step.
    private static void Iq4_XSToken(byte* group, int superBlocks, sbyte* xq, float* xd, short* xsum, float* output)
    {
        var acc = Vector256<float>.Zero;
        var table = Iq4Table();
        byte* unit = group;
        for (int b = 0; b < superBlocks; b++, unit += KQuantRowGroups.Iq4_XSUnitBytes)
        {
            int* x = (int*)(xq + (b * 256));
            byte* q = unit + Iq4Codes;
            Vector256<int> a0 = default, a1 = default, a2 = default, a3 = default, a4 = default, a5 = default, a6 = default, a7 = default;
            for (int k = 0; k < 4; k++, q += 32, x++)
            {
                // sub-block ib: chunk 4 ib + k (at 128 ib), low nibbles values 32 ib + 4k.., high nibbles 32 ib + 16 + 4k..
                Iq4Lookup(q, table, out var l0, out var h0);
                a0 = Iq4Dp(Iq4Dp(a0, l0, x[0]), h0, x[4]);
                Iq4Lookup(q + 128, table, out var l1, out var h1);
                a1 = Iq4Dp(Iq4Dp(a1, l1, x[8]), h1, x[12]);
                Iq4Lookup(q + 256, table, out var l2, out var h2);
                a2 = Iq4Dp(Iq4Dp(a2, l2, x[16]), h2, x[20]);
                Iq4Lookup(q + 384, table, out var l3, out var h3);
                a3 = Iq4Dp(Iq4Dp(a3, l3, x[24]), h3, x[28]);
                Iq4Lookup(q + 512, table, out var l4, out var h4);
                a4 = Iq4Dp(Iq4Dp(a4, l4, x[32]), h4, x[36]);
                Iq4Lookup(q + 640, table, out var l5, out var h5);
                a5 = Iq4Dp(Iq4Dp(a5, l5, x[40]), h5, x[44]);
                Iq4Lookup(q + 768, table, out var l6, out var h6);
                a6 = Iq4Dp(Iq4Dp(a6, l6, x[48]), h6, x[52]);
                Iq4Lookup(q + 896, table, out var l7, out var h7);
                a7 = Iq4Dp(Iq4Dp(a7, l7, x[56]), h7, x[60]);
            }

            var head = Avx.LoadVector256((int*)unit);
            var low = Avx.LoadVector256((int*)(unit + Iq4Low));
            short* s16 = xsum + (b * 16);
            var total = ((a0 - Bias(s16, 0)) * Iq4Scale(low, head, 0)) + ((a1 - Bias(s16, 1)) * Iq4Scale(low, head, 1));
            total += ((a2 - Bias(s16, 2)) * Iq4Scale(low, head, 2)) + ((a3 - Bias(s16, 3)) * Iq4Scale(low, head, 3));
            total += ((a4 - Bias(s16, 4)) * Iq4Scale(low, head, 4)) + ((a5 - Bias(s16, 5)) * Iq4Scale(low, head, 5));
            total += ((a6 - Bias(s16, 6)) * Iq4Scale(low, head, 6)) + ((a7 - Bias(s16, 7)) * Iq4Scale(low, head, 7));
            acc = Fma.MultiplyAdd(Avx.ConvertToVector256Single(total), HalfBits.ToSingle8(head) * Vector256.Create(xd[b]), acc);
        }

        acc.Store(output);
    }

    // Four tokens: per sub-block eight accumulators (low and high nibbles of four tokens) over its four chunks, each chunk
    // looked up once; the per-token integer and float sums stay in memory.
    private static void Iq4_XSTile4(byte* group, int superBlocks, sbyte* xq, long xStride, float* xd, short* xsum, float* output, long outStride)
    {
        var f = stackalloc Vector256<float>[4];
        var sums = stackalloc Vector256<int>[4];
        for (int t = 0; t < 4; t++)
        {
            f[t] = default;
        }

        var table = Iq4Table();
        long sStride = (long)superBlocks * 16;
        byte* unit = group;
        for (int b = 0; b < superBlocks; b++, unit += KQuantRowGroups.Iq4_XSUnitBytes)
        {
            var head = Avx.LoadVector256((int*)unit);
            var low = Avx.LoadVector256((int*)(unit + Iq4Low));
            for (int t = 0; t < 4; t++)
            {
                sums[t] = default;
            }

            for (int ib = 0; ib < 8; ib++)
            {
                byte* q = unit + Iq4Codes + (128 * ib);
                int* x0 = (int*)(xq + (b * 256)) + (8 * ib);
                int* x1 = (int*)((sbyte*)x0 + xStride);
                int* x2 = (int*)((sbyte*)x1 + xStride);
                int* x3 = (int*)((sbyte*)x2 + xStride);
                Vector256<int> l0 = default, l1 = default, l2 = default, l3 = default, h0 = default, h1 = default, h2 = default, h3 = default;
                for (int k = 0; k < 4; k++, q += 32)
                {
                    Iq4Lookup(q, table, out var lo, out var hi);
                    l0 = Iq4Dp(l0, lo, x0[k]);
                    h0 = Iq4Dp(h0, hi, x0[4 + k]);
                    l1 = Iq4Dp(l1, lo, x1[k]);
                    h1 = Iq4Dp(h1, hi, x1[4 + k]);
                    l2 = Iq4Dp(l2, lo, x2[k]);
                    h2 = Iq4Dp(h2, hi, x2[4 + k]);
                    l3 = Iq4Dp(l3, lo, x3[k]);
                    h3 = Iq4Dp(h3, hi, x3[4 + k]);
                }

                var sc = Iq4Scale(low, head, ib);
                sums[0] += (l0 + h0 - Bias(xsum + (b * 16), ib)) * sc;
                sums[1] += (l1 + h1 - Bias(xsum + sStride + (b * 16), ib)) * sc;
                sums[2] += (l2 + h2 - Bias(xsum + (2 * sStride) + (b * 16), ib)) * sc;
                sums[3] += (l3 + h3 - Bias(xsum + (3 * sStride) + (b * 16), ib)) * sc;
            }

            var d = HalfBits.ToSingle8(head);
            for (int t = 0; t < 4; t++)
            {
                f[t] = Fma.MultiplyAdd(Avx.ConvertToVector256Single(sums[t]), d * Vector256.Create(xd[(t * superBlocks) + b]), f[t]);
            }
        }

        for (int t = 0; t < 4; t++)
        {
            f[t].Store(output + (t * outStride));
        }
    }

    /// <summary>
    /// Eight IQ4_NL rows from their row-group copy in the Q4_0 layout (<see cref="Q4_0RowGroups"/>: 8 FP16 d, then the 16 code
    /// bytes of each row in four dword-interleaved chunks) times 1 to 4 activation vectors quantized to Q8_0, laid out as for
    /// <see cref="QuantizedDot.DotQ4_0RowGroup"/> (xsum: the activations' block sums). Per row and block the exact integer
    /// s = sum kvalues[code] x, taken as sum (kvalues[code] + 128) x - 128 sum x (vpdpbusd of unsigned bytes), then
    /// y = fma(s, d_w x d_x, y) block after block, one float per row: the order of llama.cpp's repacked 8-row IQ4_NL gemv.
    /// The Q4_0 layout's kernel (<see cref="QuantizedDot.RowGroupOf4BitCodes"/>) with the levels looked up. Without
    /// AVX-VNNI the signed levels, offset 0, and each product as in IQ4_XS (the same sums). Needs
    /// <see cref="Iq4_XSVectorPathSupported"/>; scalar twin <see cref="DotIq4_NLScalar"/>.
    /// </summary>
    public static void DotIq4_NL(byte* group, int tokens, sbyte* xq, long xStride, float* xd, int* xsum, long blockStride, int blocks, float* output, long outStride)
    {
        CheckTokens(tokens);
        if (!Iq4_XSVectorPathSupported)
        {
            throw new PlatformNotSupportedException("the IQ4_NL row-group vector path needs AVX2 and FMA");
        }

        QuantizedDot.RowGroupOf4BitCodes<Iq4NlCodes>(group, tokens, xq, xStride, xd, xsum, blockStride, blocks, output, outStride);
    }

    // IQ4_NL in the Q4_0 layout's kernel: with AVX-VNNI the levels + 128 looked up, offset 128; without, the signed levels
    // (Iq4Dots); the scales converted without touching a subnormal float (the row kernel's conversion, the same values).
    private readonly struct Iq4NlCodes : QuantizedDot.IFourBitCodes
    {
        public static int Offset => Iq4Bias;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<byte> Table() => Iq4Table();

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<byte> Decode(Vector256<byte> nibbles, Vector256<byte> table) => Avx2.Shuffle(table, nibbles);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<float> Scales(byte* unit) => HalfBits.ToSingle8(Sse2.LoadVector128((ushort*)unit));

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<int> Dots(Vector256<byte> l0, Vector256<byte> l1, Vector256<byte> l2, Vector256<byte> l3, Vector256<byte> h0, Vector256<byte> h1, Vector256<byte> h2, Vector256<byte> h3, int* x, int start) =>
            AvxVnni.IsSupported ? QuantizedDot.LaneDots(l0, l1, l2, l3, h0, h1, h2, h3, x, start) : Iq4Dots(l0, l1, l2, l3, h0, h1, h2, h3, x, start);
    }

    // QuantizedDot.LaneDots for signed levels without AVX-VNNI: each product through Iq4Dp (a 16-bit sum of two of its pair
    // sums could overflow, so each is widened alone).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> Iq4Dots(Vector256<byte> l0, Vector256<byte> l1, Vector256<byte> l2, Vector256<byte> l3, Vector256<byte> h0, Vector256<byte> h1, Vector256<byte> h2, Vector256<byte> h3, int* x, int start)
    {
        var a = Iq4Dp(Iq4Dp(Vector256.Create(start), l0, x[0]), l1, x[1]);
        var c = Iq4Dp(Iq4Dp(Vector256<int>.Zero, h0, x[4]), h1, x[5]);
        a = Iq4Dp(Iq4Dp(a, l2, x[2]), l3, x[3]);
        c = Iq4Dp(Iq4Dp(c, h2, x[6]), h3, x[7]);
        return a + c;
    }

    /// <summary>Scalar twin of <see cref="DotIq4_NL"/>: row by row, token by token, value i = d kvalues[code_i].</summary>
    public static void DotIq4_NLScalar(byte* group, int tokens, sbyte* xq, long xStride, float* xd, long blockStride, int blocks, float* output, long outStride)
    {
        CheckTokens(tokens);
        var kv = RowDequantizer.Iq4Values;
        for (int k = 0; k < tokens; k++)
        {
            for (int r = 0; r < Q4_0RowGroups.GroupRows; r++)
            {
                float sum = 0;
                for (int b = 0; b < blocks; b++)
                {
                    byte* unit = group + (b * (long)Q4_0RowGroups.UnitBytes);
                    sbyte* x = xq + (k * xStride) + (b * 32);
                    int s = 0;
                    for (int i = 0; i < 16; i++)
                    {
                        byte q = unit[Q4_0RowGroups.QuantOffset(r, i)];
                        s += (kv[q & 0x0F] * x[i]) + (kv[q >> 4] * x[i + 16]);
                    }

                    sum = MathF.FusedMultiplyAdd(s, HalfBits.ToSingleNoSubnormals(*(ushort*)(unit + (2 * r))) * xd[(k * blockStride) + b], sum);
                }

                output[(k * outStride) + r] = sum;
            }
        }
    }

    private static void CheckTokens(int tokens)
    {
        if (tokens is < 1 or > 4)
        {
            throw new ArgumentOutOfRangeException(nameof(tokens), tokens, "low-bit row-group products take 1 to 4 tokens at once");
        }
    }
}
