using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace KvAdaQuant.Numerics;

/// <summary>
/// Eight Q2_K or IQ4_XS rows from their dword-interleaved row-group copy (<see cref="KQuantRowGroups"/>; <c>group</c> is the
/// group's first unit) times 1 to 4 activation vectors quantized to Q8_K (<see cref="Q8KActivations"/>). Token t's values
/// start at t x <c>xStride</c>, its scales at t x superBlocks, its 16-value sums at t x superBlocks x 16 and its sum pairs
/// at t x superBlocks x 8 (<see cref="Q8KActivations.Sums16Pairs"/>); output[t x outStride + r] is row r's result.
/// One 256-bit load of a chunk gives each row four code bytes in its own 32-bit lane, so the products build up lane by lane
/// against broadcast activations (vpdpbusd) with no horizontal sum, and the scales of all 8 rows unpack in a few vector
/// operations per super-block. The arithmetic is that of the row-by-row kernels (<see cref="LowBitDot.DotQ2_K"/>,
/// <see cref="LowBitDot.DotIq4_XS"/>), so the results are the same bits:
/// <list type="bullet">
/// <item>Q2_K: per super-block the exact integers S = sum_j scale_j (sum of q x over the 16 values of j) and
/// M = sum_j min_j (sum of x over j); acc = fma(S, d x dx, acc), mins = fma(M, dmin x dx, mins); the result is acc - mins.</item>
/// <item>IQ4_XS: per super-block the exact integer S = sum_j (scale_j - 32) (sum of kvalues[code] x over the 32 values of
/// j), taken as sum_j (scale_j - 32) (sum of (kvalues[code] + 128) x - 128 B_j) with B_j the 32 values' sum, so that
/// vpdpbusd multiplies unsigned bytes (1..241); acc = fma(S, d x dx, acc).</item>
/// </list>
/// Scalar twins: <see cref="DotQ2_KScalar"/>, <see cref="DotIq4_XSScalar"/>, reading the unit through
/// <see cref="KQuantRowGroups.InterleavedOffset"/>.
/// </summary>
public static unsafe class LowBitRowGroupDot
{
    // Chunk offsets within a unit (KQuantRowGroups: dword i of each row in chunk i).
    private const int Q2Codes = 4 * 32;
    private const int Q2Halves = 20 * 32;
    private const int Iq4Low = 32;
    private const int Iq4Codes = 2 * 32;

    /// <summary>True when the Q2_K vector path runs on this machine (AVX2 and FMA; vpdpbusd where AVX-VNNI is present).</summary>
    public static bool Q2_KVectorPathSupported => Avx2.IsSupported && Fma.IsSupported;

    /// <summary>
    /// True when the IQ4_XS vector path runs on this machine: it needs AVX-VNNI (the biased codes, up to 241, times
    /// activations down to -128 would saturate vpmaddubsw's 16-bit pair sums).
    /// </summary>
    public static bool Iq4_XSVectorPathSupported => AvxVnni.IsSupported && Avx2.IsSupported && Fma.IsSupported;

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
                        int q = (unit[KQuantRowGroups.InterleavedOffset(r, 16 + (32 * (e >> 7)) + (e & 31))] >> (2 * ((e >> 5) & 3))) & 3;
                        sum += (unit[KQuantRowGroups.InterleavedOffset(r, e >> 4)] & 0xF) * q * x[e];
                    }

                    for (int j = 0; j < 16; j++)
                    {
                        summ += (unit[KQuantRowGroups.InterleavedOffset(r, j)] >> 4) * sx[j];
                    }

                    float dx = xd[((long)t * superBlocks) + b];
                    acc = MathF.FusedMultiplyAdd(sum, HalfBits.ToSingleNoSubnormals(*(ushort*)(unit + KQuantRowGroups.InterleavedOffset(r, 80))) * dx, acc);
                    mins = MathF.FusedMultiplyAdd(summ, HalfBits.ToSingleNoSubnormals(*(ushort*)(unit + KQuantRowGroups.InterleavedOffset(r, 82))) * dx, mins);
                }

                output[(t * outStride) + r] = acc - mins;
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
                    ushort h = *(ushort*)(unit + KQuantRowGroups.InterleavedOffset(r, 2));
                    var scalesL = new ReadOnlySpan<byte>(unit + KQuantRowGroups.InterleavedOffset(r, 4), 4);
                    int sum = 0;
                    for (int ib = 0; ib < 8; ib++)
                    {
                        int s = 0;
                        for (int j = 0; j < 16; j++)
                        {
                            byte q = unit[KQuantRowGroups.InterleavedOffset(r, 8 + (16 * ib) + j)];
                            s += (kv[q & 0xF] * x[(32 * ib) + j]) + (kv[q >> 4] * x[(32 * ib) + 16 + j]);
                        }

                        sum += (RowDequantizer.ScaleIq4_XS(ib, h, scalesL) - 32) * s;
                    }

                    float dx = xd[((long)t * superBlocks) + b];
                    acc = MathF.FusedMultiplyAdd(sum, HalfBits.ToSingleNoSubnormals(*(ushort*)(unit + KQuantRowGroups.InterleavedOffset(r, 0))) * dx, acc);
                }

                output[(t * outStride) + r] = acc;
            }
        }
    }

    /// <summary>Vector path for Q2_K row groups (AVX-VNNI where present, else AVX2 multiply-adds: codes &lt;= 3 cannot saturate them).</summary>
    public static void DotQ2_KAvx2(byte* group, int superBlocks, int tokens, sbyte* xq, long xStride, float* xd, int* xpairs, float* output, long outStride)
    {
        CheckTokens(tokens);
        if (tokens == 4)
        {
            Q2_KTile4(group, superBlocks, xq, xStride, xd, xpairs, output, outStride);
            return;
        }

        for (int t = 0; t < tokens; t++)
        {
            Q2_KToken(group, superBlocks, xq + (t * xStride), xd + ((long)t * superBlocks), xpairs + ((long)t * superBlocks * 8), output + (t * outStride));
        }
    }

    /// <summary>Vector path for IQ4_XS row groups (needs <see cref="Iq4_XSVectorPathSupported"/>).</summary>
    public static void DotIq4_XSAvx2(byte* group, int superBlocks, int tokens, sbyte* xq, long xStride, float* xd, short* xsum, float* output, long outStride)
    {
        CheckTokens(tokens);
        if (!Iq4_XSVectorPathSupported)
        {
            throw new PlatformNotSupportedException("the IQ4_XS row-group vector path needs AVX-VNNI, AVX2 and FMA");
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

    // One token of Q2_K: per half of the super-block eight accumulators (shift s = 0..3 x first or second 16 values of
    // each 32-value run), eight independent chains; then each times its sub-block's scale.
    private static void Q2_KToken(byte* group, int superBlocks, sbyte* xq, float* xd, int* xpairs, float* output)
    {
        var acc = Vector256<float>.Zero;
        var mins = Vector256<float>.Zero;
        var three = Vector256.Create((byte)3);
        var low4 = Vector256.Create(0x0F0F0F0Fu);
        byte* unit = group;
        for (int b = 0; b < superBlocks; b++, unit += KQuantRowGroups.Q2_KUnitBytes)
        {
            int* x = (int*)(xq + (b * 256));
            byte* q = unit + Q2Codes;
            var total = Vector256<int>.Zero;
            for (int n = 0; n < 2; n++, q += 256, x += 32)
            {
                Vector256<int> a0 = default, a1 = default, a2 = default, a3 = default, a4 = default, a5 = default, a6 = default, a7 = default;
                for (int c = 0; c < 4; c++)
                {
                    // chunk c: code bytes 4c.. of this half (values 4c.. of each 32-value run), chunk c + 4: bytes 16 + 4c..
                    var v = Avx.LoadVector256(q + (32 * c)).AsUInt16();
                    a0 = KQuantRowGroupDot.Dp(a0, v.AsByte() & three, x[c]);
                    a1 = KQuantRowGroupDot.Dp(a1, Avx2.ShiftRightLogical(v, 2).AsByte() & three, x[8 + c]);
                    a2 = KQuantRowGroupDot.Dp(a2, Avx2.ShiftRightLogical(v, 4).AsByte() & three, x[16 + c]);
                    a3 = KQuantRowGroupDot.Dp(a3, Avx2.ShiftRightLogical(v, 6).AsByte() & three, x[24 + c]);
                    var w = Avx.LoadVector256(q + 128 + (32 * c)).AsUInt16();
                    a4 = KQuantRowGroupDot.Dp(a4, w.AsByte() & three, x[4 + c]);
                    a5 = KQuantRowGroupDot.Dp(a5, Avx2.ShiftRightLogical(w, 2).AsByte() & three, x[12 + c]);
                    a6 = KQuantRowGroupDot.Dp(a6, Avx2.ShiftRightLogical(w, 4).AsByte() & three, x[20 + c]);
                    a7 = KQuantRowGroupDot.Dp(a7, Avx2.ShiftRightLogical(w, 6).AsByte() & three, x[28 + c]);
                }

                // Sub-block 8n + 2s + h (shift s, h = 1 for a4..a7): scale byte (2s + h) % 4 of scale chunk 2n + s / 2.
                var lo = Avx.LoadVector256((uint*)(unit + (64 * n))) & low4;
                var hi = Avx.LoadVector256((uint*)(unit + (64 * n) + 32)) & low4;
                total += (a0 * KQuantRowGroupDot.ByteOf(lo, 0)) + (a4 * KQuantRowGroupDot.ByteOf(lo, 1)) + (a1 * KQuantRowGroupDot.ByteOf(lo, 2)) + (a5 * KQuantRowGroupDot.ByteOf(lo, 3));
                total += (a2 * KQuantRowGroupDot.ByteOf(hi, 0)) + (a6 * KQuantRowGroupDot.ByteOf(hi, 1)) + (a3 * KQuantRowGroupDot.ByteOf(hi, 2)) + (a7 * KQuantRowGroupDot.ByteOf(hi, 3));
            }

            Q2Finish(unit, total, xpairs + (b * 8), xd[b], ref acc, ref mins);
        }

        (acc - mins).Store(output);
    }

    // acc = fma(S, d dx, acc), mins = fma(M, dmin dx, mins) with M = sum_j min_j B_j: the minimums (high nibbles of the
    // scale bytes) as 16-bit pairs (4k, 4k + 2) and (4k + 1, 4k + 3) against the activation's sum pairs.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Q2Finish(byte* unit, Vector256<int> total, int* pairs, float xd, ref Vector256<float> acc, ref Vector256<float> mins)
    {
        var low4 = Vector256.Create(0x0F0F0F0Fu);
        var even = Vector256.Create(0x00FF00FFu);
        var m = Vector256<int>.Zero;
        for (int k = 0; k < 4; k++)
        {
            var mn = Avx2.ShiftRightLogical(Avx.LoadVector256((uint*)(unit + (32 * k))), 4) & low4;
            m += Avx2.MultiplyAddAdjacent((mn & even).AsInt16(), Vector256.Create(pairs[2 * k]).AsInt16());
            m += Avx2.MultiplyAddAdjacent((Avx2.ShiftRightLogical(mn, 8) & even).AsInt16(), Vector256.Create(pairs[(2 * k) + 1]).AsInt16());
        }

        var halves = Avx.LoadVector256((int*)(unit + Q2Halves));
        var dx = Vector256.Create(xd);
        acc = Fma.MultiplyAdd(Avx.ConvertToVector256Single(total), HalfBits.ToSingle8(halves) * dx, acc);
        mins = Fma.MultiplyAdd(Avx.ConvertToVector256Single(m), HalfBits.ToSingle8(Avx2.ShiftRightLogical(halves, 16)) * dx, mins);
    }

    // Four tokens: per half n and h (first or second 16 values of each run), two passes of two tokens (eight accumulators,
    // see KQuantRowGroupDot.Dp) over the four chunks; the per-token integer and float sums stay in memory.
    private static void Q2_KTile4(byte* group, int superBlocks, sbyte* xq, long xStride, float* xd, int* xpairs, float* output, long outStride)
    {
        var f = stackalloc Vector256<float>[8];
        var sums = stackalloc Vector256<int>[4];
        for (int t = 0; t < 8; t++)
        {
            f[t] = default;
        }

        var low4 = Vector256.Create(0x0F0F0F0Fu);
        long pStride = (long)superBlocks * 8;
        byte* unit = group;
        for (int b = 0; b < superBlocks; b++, unit += KQuantRowGroups.Q2_KUnitBytes)
        {
            for (int t = 0; t < 4; t++)
            {
                sums[t] = default;
            }

            for (int n = 0; n < 2; n++)
            {
                var lo = Avx.LoadVector256((uint*)(unit + (64 * n))) & low4;
                var hi = Avx.LoadVector256((uint*)(unit + (64 * n) + 32)) & low4;
                for (int h = 0; h < 2; h++)
                {
                    byte* q = unit + Q2Codes + (256 * n) + (128 * h);
                    var s0 = KQuantRowGroupDot.ByteOf(lo, h);
                    var s1 = KQuantRowGroupDot.ByteOf(lo, 2 + h);
                    var s2 = KQuantRowGroupDot.ByteOf(hi, h);
                    var s3 = KQuantRowGroupDot.ByteOf(hi, 2 + h);
                    int* x = (int*)(xq + (b * 256)) + (32 * n) + (4 * h);
                    Q2Pass(q, x, xStride, sums, s0, s1, s2, s3);
                    Q2Pass(q, (int*)((sbyte*)x + (2 * xStride)), xStride, sums + 2, s0, s1, s2, s3);
                }
            }

            for (int t = 0; t < 4; t++)
            {
                Q2Finish(unit, sums[t], xpairs + (t * pStride) + (b * 8), xd[(t * superBlocks) + b], ref f[2 * t], ref f[(2 * t) + 1]);
            }
        }

        for (int t = 0; t < 4; t++)
        {
            (f[2 * t] - f[(2 * t) + 1]).Store(output + (t * outStride));
        }
    }

    // Two tokens (x, and x + xStride bytes) over the four chunks at q: sums[0], sums[1] += sum_s (the shift-s sums) x s_s.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Q2Pass(byte* q, int* x, long xStride, Vector256<int>* sums, Vector256<int> s0, Vector256<int> s1, Vector256<int> s2, Vector256<int> s3)
    {
        var three = Vector256.Create((byte)3);
        int* y = (int*)((sbyte*)x + xStride);
        Vector256<int> a0 = default, a1 = default, a2 = default, a3 = default, b0 = default, b1 = default, b2 = default, b3 = default;
        for (int c = 0; c < 4; c++, q += 32)
        {
            var v = Avx.LoadVector256(q).AsUInt16();
            var c0 = v.AsByte() & three;
            a0 = KQuantRowGroupDot.Dp(a0, c0, x[c]);
            b0 = KQuantRowGroupDot.Dp(b0, c0, y[c]);
            var c1 = Avx2.ShiftRightLogical(v, 2).AsByte() & three;
            a1 = KQuantRowGroupDot.Dp(a1, c1, x[8 + c]);
            b1 = KQuantRowGroupDot.Dp(b1, c1, y[8 + c]);
            var c2 = Avx2.ShiftRightLogical(v, 4).AsByte() & three;
            a2 = KQuantRowGroupDot.Dp(a2, c2, x[16 + c]);
            b2 = KQuantRowGroupDot.Dp(b2, c2, y[16 + c]);
            var c3 = Avx2.ShiftRightLogical(v, 6).AsByte() & three;
            a3 = KQuantRowGroupDot.Dp(a3, c3, x[24 + c]);
            b3 = KQuantRowGroupDot.Dp(b3, c3, y[24 + c]);
        }

        sums[0] += (a0 * s0) + (a1 * s1) + (a2 * s2) + (a3 * s3);
        sums[1] += (b0 * s0) + (b1 * s1) + (b2 * s2) + (b3 * s3);
    }

    // The IQ4_NL values plus 128 (1..241) in both 128-bit halves, for vpshufb.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<byte> BiasedIq4Table()
    {
        var v = RowDequantizer.Iq4Values;
        var half = Vector128.Create(
            (byte)(v[0] + 128), (byte)(v[1] + 128), (byte)(v[2] + 128), (byte)(v[3] + 128), (byte)(v[4] + 128), (byte)(v[5] + 128), (byte)(v[6] + 128), (byte)(v[7] + 128),
            (byte)(v[8] + 128), (byte)(v[9] + 128), (byte)(v[10] + 128), (byte)(v[11] + 128), (byte)(v[12] + 128), (byte)(v[13] + 128), (byte)(v[14] + 128), (byte)(v[15] + 128));
        return Vector256.Create(half, half);
    }

    // The 8 rows' biased values of one chunk: low nibbles (lo) and high nibbles (hi) looked up.
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

    // 128 x (the 32-value sum B_ib of the activations), broadcast.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> Bias(short* sums16, int ib) => Vector256.Create(128 * (sums16[2 * ib] + sums16[(2 * ib) + 1]));

    // One token of IQ4_XS: one accumulator per 32-value sub-block (eight chains), chunk k of each sub-block per step.
    private static void Iq4_XSToken(byte* group, int superBlocks, sbyte* xq, float* xd, short* xsum, float* output)
    {
        var acc = Vector256<float>.Zero;
        var table = BiasedIq4Table();
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
                a0 = KQuantRowGroupDot.Dp(KQuantRowGroupDot.Dp(a0, l0, x[0]), h0, x[4]);
                Iq4Lookup(q + 128, table, out var l1, out var h1);
                a1 = KQuantRowGroupDot.Dp(KQuantRowGroupDot.Dp(a1, l1, x[8]), h1, x[12]);
                Iq4Lookup(q + 256, table, out var l2, out var h2);
                a2 = KQuantRowGroupDot.Dp(KQuantRowGroupDot.Dp(a2, l2, x[16]), h2, x[20]);
                Iq4Lookup(q + 384, table, out var l3, out var h3);
                a3 = KQuantRowGroupDot.Dp(KQuantRowGroupDot.Dp(a3, l3, x[24]), h3, x[28]);
                Iq4Lookup(q + 512, table, out var l4, out var h4);
                a4 = KQuantRowGroupDot.Dp(KQuantRowGroupDot.Dp(a4, l4, x[32]), h4, x[36]);
                Iq4Lookup(q + 640, table, out var l5, out var h5);
                a5 = KQuantRowGroupDot.Dp(KQuantRowGroupDot.Dp(a5, l5, x[40]), h5, x[44]);
                Iq4Lookup(q + 768, table, out var l6, out var h6);
                a6 = KQuantRowGroupDot.Dp(KQuantRowGroupDot.Dp(a6, l6, x[48]), h6, x[52]);
                Iq4Lookup(q + 896, table, out var l7, out var h7);
                a7 = KQuantRowGroupDot.Dp(KQuantRowGroupDot.Dp(a7, l7, x[56]), h7, x[60]);
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

        var table = BiasedIq4Table();
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
                    l0 = KQuantRowGroupDot.Dp(l0, lo, x0[k]);
                    h0 = KQuantRowGroupDot.Dp(h0, hi, x0[4 + k]);
                    l1 = KQuantRowGroupDot.Dp(l1, lo, x1[k]);
                    h1 = KQuantRowGroupDot.Dp(h1, hi, x1[4 + k]);
                    l2 = KQuantRowGroupDot.Dp(l2, lo, x2[k]);
                    h2 = KQuantRowGroupDot.Dp(h2, hi, x2[4 + k]);
                    l3 = KQuantRowGroupDot.Dp(l3, lo, x3[k]);
                    h3 = KQuantRowGroupDot.Dp(h3, hi, x3[4 + k]);
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

    private static void CheckTokens(int tokens)
    {
        if (tokens is < 1 or > 4)
        {
            throw new ArgumentOutOfRangeException(nameof(tokens), tokens, "low-bit row-group products take 1 to 4 tokens at once");
        }
    }
}
