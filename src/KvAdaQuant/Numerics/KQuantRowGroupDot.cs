using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace KvAdaQuant.Numerics;

/// <summary>
/// Eight Q4_K, Q5_K or Q6_K rows from their row-group copy (<see cref="KQuantRowGroups"/>; <c>group</c> is the group's first
/// unit) times 1 to 4 activation vectors quantized to Q8_K (<see cref="Q8KActivations"/>). Token t's values start at
/// t x <c>xStride</c>, its scales at t x superBlocks, its 16-value sums at t x superBlocks x 16 and its sum pairs at
/// t x superBlocks x 8 (<see cref="Q8KActivations.Sums16Pairs"/>) or x 4 (<see cref="Q8KActivations.Sums32Pairs"/>);
/// output[t x outStride + r] is row r's result. Arithmetic, per row and token (the summation order of llama.cpp's
/// repacked q4_K gemv: one running float per row, minimums apart):
/// <list type="bullet">
/// <item>Q4_K: per super-block the exact integers S = sum_j scale_j (sum of q x over sub-block j) and
/// M = sum_j min_j (sum of x over sub-block j); sumf = fma(S, d x dx, sumf), minf = fma(M, dmin x dx, minf); the result is
/// sumf - minf.</item>
/// <item>Q5_K: as Q4_K, with q the 5-bit value.</item>
/// <item>Q6_K: per super-block the exact integer S = sum_k scale_k (sum of (q - 32) x over the 16 values of k);
/// sum = fma(S, d x dx, sum).</item>
/// </list>
/// The integer sums are exact, so the vector paths (AVX-VNNI, else AVX2 multiply-adds) and their scalar twins give the
/// same bits, and a token gives the same bits alone and in a batch of four.
/// </summary>
public static unsafe class KQuantRowGroupDot
{
    /// <summary>True when the vector paths run on this machine.</summary>
    public static bool VectorPathSupported => Avx2.IsSupported && Fma.IsSupported;

    /// <summary>Q4_K row group · Q8_K activations (vector path where supported, else the scalar twin).</summary>
    public static void DotQ4_K(byte* group, int superBlocks, int tokens, sbyte* xq, long xStride, float* xd, short* xsum, int* xpairs, float* output, long outStride)
    {
        if (VectorPathSupported)
        {
            DotQ4_KAvx2(group, superBlocks, tokens, xq, xStride, xd, xpairs, output, outStride);
        }
        else
        {
            DotQ4_KScalar(group, superBlocks, tokens, xq, xStride, xd, xsum, output, outStride);
        }
    }

    /// <summary>Q5_K row group · Q8_K activations (<paramref name="xpairs"/>: <see cref="Q8KActivations.Sums32Pairs"/>), as <see cref="DotQ4_K"/>.</summary>
    public static void DotQ5_K(byte* group, int superBlocks, int tokens, sbyte* xq, long xStride, float* xd, short* xsum, int* xpairs, float* output, long outStride)
    {
        if (VectorPathSupported)
        {
            DotQ5_KAvx2(group, superBlocks, tokens, xq, xStride, xd, xpairs, output, outStride);
        }
        else
        {
            DotQ5_KScalar(group, superBlocks, tokens, xq, xStride, xd, xsum, output, outStride);
        }
    }

    /// <summary>Q6_K row group · Q8_K activations (vector path where supported, else the scalar twin).</summary>
    public static void DotQ6_K(byte* group, int superBlocks, int tokens, sbyte* xq, long xStride, float* xd, short* xsum, int* xpairs, float* output, long outStride)
    {
        if (VectorPathSupported)
        {
            DotQ6_KAvx2(group, superBlocks, tokens, xq, xStride, xd, xpairs, output, outStride);
        }
        else
        {
            DotQ6_KScalar(group, superBlocks, tokens, xq, xStride, xd, xsum, output, outStride);
        }
    }

    /// <summary>Scalar twin of the Q4_K vector path: row by row, token by token, reading the unit through <see cref="KQuantRowGroups.Q4_KQuantOffset"/>.</summary>
    public static void DotQ4_KScalar(byte* group, int superBlocks, int tokens, sbyte* xq, long xStride, float* xd, short* xsum, float* output, long outStride)
        => Q4Q5Scalar(false, group, superBlocks, tokens, xq, xStride, xd, xsum, output, outStride);

    /// <summary>Scalar twin of the Q5_K vector path, reading the unit through <see cref="KQuantRowGroups.Q5_KQuantOffset"/>.</summary>
    public static void DotQ5_KScalar(byte* group, int superBlocks, int tokens, sbyte* xq, long xStride, float* xd, short* xsum, float* output, long outStride)
        => Q4Q5Scalar(true, group, superBlocks, tokens, xq, xStride, xd, xsum, output, outStride);

    private static void Q4Q5Scalar(bool q5, byte* group, int superBlocks, int tokens, sbyte* xq, long xStride, float* xd, short* xsum, float* output, long outStride)
    {
        CheckTokens(tokens);
        int unitBytes = q5 ? KQuantRowGroups.Q5_KUnitBytes : KQuantRowGroups.Q4_KUnitBytes;
        byte* packed = stackalloc byte[12];
        for (int t = 0; t < tokens; t++)
        {
            for (int r = 0; r < 8; r++)
            {
                float sumf = 0, minf = 0;
                for (int b = 0; b < superBlocks; b++)
                {
                    byte* unit = group + ((long)b * unitBytes);
                    sbyte* x = xq + (t * xStride) + (b * 256);
                    short* sums = xsum + (((long)t * superBlocks) + b) * 16;
                    for (int k = 0; k < 3; k++)
                    {
                        *(uint*)(packed + (4 * k)) = *(uint*)(unit + 32 + (32 * k) + (4 * r));
                    }

                    int s = 0, m = 0;
                    for (int j = 0; j < 8; j++)
                    {
                        QuantizedDot.ScaleMinK4(j, packed, out int sc, out int mn);
                        int shift = (j % 2) * 4;
                        int sub = 0;
                        for (int e = 0; e < 32; e++)
                        {
                            int nibbleByte = ((j / 2) * 32) + e;
                            int v;
                            if (q5)
                            {
                                byte qh = unit[KQuantRowGroups.Q5_KQuantOffset(r, e)];
                                v = ((unit[KQuantRowGroups.Q5_KQuantOffset(r, 32 + nibbleByte)] >> shift) & 0x0F) | (((qh >> j) & 1) << 4);
                            }
                            else
                            {
                                v = (unit[KQuantRowGroups.Q4_KQuantOffset(r, nibbleByte)] >> shift) & 0x0F;
                            }

                            sub += v * x[(j * 32) + e];
                        }

                        s += sc * sub;
                        m += mn * (sums[2 * j] + sums[(2 * j) + 1]);
                    }

                    float dx = xd[((long)t * superBlocks) + b];
                    float d = HalfBits.ToSingle(*(ushort*)(unit + (2 * r)));
                    float dmin = HalfBits.ToSingle(*(ushort*)(unit + 16 + (2 * r)));
                    sumf = MathF.FusedMultiplyAdd(s, d * dx, sumf);
                    minf = MathF.FusedMultiplyAdd(m, dmin * dx, minf);
                }

                output[(t * outStride) + r] = sumf - minf;
            }
        }
    }

    /// <summary>Scalar twin of the Q6_K vector path.</summary>
    public static void DotQ6_KScalar(byte* group, int superBlocks, int tokens, sbyte* xq, long xStride, float* xd, short* xsum, float* output, long outStride)
    {
        CheckTokens(tokens);
        _ = xsum;
        for (int t = 0; t < tokens; t++)
        {
            for (int r = 0; r < 8; r++)
            {
                float sum = 0;
                for (int b = 0; b < superBlocks; b++)
                {
                    byte* unit = group + ((long)b * KQuantRowGroups.Q6_KUnitBytes);
                    sbyte* x = xq + (t * xStride) + (b * 256);
                    int s = 0;
                    for (int k = 0; k < 16; k++)
                    {
                        int sc = (sbyte)unit[16 + (32 * (k / 4)) + (4 * r) + (k % 4)];
                        int sub = 0;
                        for (int e = 16 * k; e < (16 * k) + 16; e++)
                        {
                            sub += (Q6Value(unit, r, e) - 32) * x[e];
                        }

                        s += sc * sub;
                    }

                    float dx = xd[((long)t * superBlocks) + b];
                    sum = MathF.FusedMultiplyAdd(s, HalfBits.ToSingle(*(ushort*)(unit + (2 * r))) * dx, sum);
                }

                output[(t * outStride) + r] = sum;
            }
        }
    }

    /// <summary>The unsigned 6-bit value of element <paramref name="e"/> (0..255) of row <paramref name="r"/> in a Q6_K unit.</summary>
    public static int Q6Value(byte* unit, int r, int e)
    {
        int h = e / 128, g = (e % 128) / 32, l = e % 32;
        byte ql = unit[KQuantRowGroups.Q6_KQuantOffset(r, (h * 64) + ((g % 2) * 32) + l)];
        byte qh = unit[KQuantRowGroups.Q6_KQuantOffset(r, 128 + (h * 32) + l)];
        int low = g < 2 ? ql & 0x0F : ql >> 4;
        return low | (((qh >> (2 * g)) & 3) << 4);
    }

    /// <summary>Vector path for Q4_K row groups (AVX-VNNI where present, else AVX2 multiply-adds).</summary>
    public static void DotQ4_KAvx2(byte* group, int superBlocks, int tokens, sbyte* xq, long xStride, float* xd, int* xpairs, float* output, long outStride)
    {
        CheckTokens(tokens);
        if (tokens == 4)
        {
            KTile4<Q4Pairs>(group, superBlocks, xq, xStride, xd, xpairs, output, outStride);
            return;
        }

        for (int t = 0; t < tokens; t++)
        {
            Q4_KToken(group, superBlocks, xq + (t * xStride), xd + ((long)t * superBlocks), xpairs + ((long)t * superBlocks * 4), output + (t * outStride));
        }
    }

    /// <summary>Vector path for Q5_K row groups (AVX-VNNI where present, else AVX2 multiply-adds).</summary>
    public static void DotQ5_KAvx2(byte* group, int superBlocks, int tokens, sbyte* xq, long xStride, float* xd, int* xpairs, float* output, long outStride)
    {
        CheckTokens(tokens);
        if (tokens == 4)
        {
            KTile4<Q5Pairs>(group, superBlocks, xq, xStride, xd, xpairs, output, outStride);
            return;
        }

        for (int t = 0; t < tokens; t++)
        {
            Q5_KToken(group, superBlocks, xq + (t * xStride), xd + ((long)t * superBlocks), xpairs + ((long)t * superBlocks * 4), output + (t * outStride));
        }
    }

    /// <summary>Vector path for Q6_K row groups (AVX-VNNI where present, else AVX2 multiply-adds).</summary>
    public static void DotQ6_KAvx2(byte* group, int superBlocks, int tokens, sbyte* xq, long xStride, float* xd, int* xpairs, float* output, long outStride)
    {
        CheckTokens(tokens);
        if (tokens == 4)
        {
            Q6_KTile4(group, superBlocks, xq, xStride, xd, xpairs, output, outStride);
            return;
        }

        for (int t = 0; t < tokens; t++)
        {
            Q6_KToken(group, superBlocks, xq + (t * xStride), xd + ((long)t * superBlocks), xpairs + ((long)t * superBlocks * 8), output + (t * outStride));
        }
    }

    private static void CheckTokens(int tokens)
    {
        if (tokens is < 1 or > 4)
        {
            throw new ArgumentOutOfRangeException(nameof(tokens), tokens, "K-quant row-group products take 1 to 4 tokens at once");
        }
    }

    // Lanes += the dot products of each lane's 4 unsigned bytes with the 4 int8 activations x (broadcast). (vpdpbusd in
    // its VEX form, the only one .NET 10 exposes, reaches registers 0-15 only: loops keep at most 8 accumulators live, or
    // the JIT copies each one in and out around every instruction.) Without VNNI the 16-bit pair sums stay within
    // 2 x 63 x 127: no saturation.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector256<int> Dp(Vector256<int> acc, Vector256<byte> u, int x)
    {
        if (AvxVnni.IsSupported)
        {
            return AvxVnni.MultiplyWideningAndAdd(acc, u, Vector256.Create(x).AsSByte());
        }

        return acc + Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(u, Vector256.Create(x).AsSByte()), Vector256.Create((short)1));
    }

    // Byte k (0..3) of each lane as an int.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector256<int> ByteOf(Vector256<uint> v, int k) => k switch
    {
        0 => (v & Vector256.Create(0xFFu)).AsInt32(),
        1 => (Avx2.ShiftRightLogical(v, 8) & Vector256.Create(0xFFu)).AsInt32(),
        2 => (Avx2.ShiftRightLogical(v, 16) & Vector256.Create(0xFFu)).AsInt32(),
        _ => Avx2.ShiftRightLogical(v, 24).AsInt32(),
    };

    // Signed byte k (0..3) of each lane as an int.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> SignedByteOf(Vector256<int> v, int k) => k switch
    {
        0 => Avx2.ShiftRightArithmetic(Avx2.ShiftLeftLogical(v, 24), 24),
        1 => Avx2.ShiftRightArithmetic(Avx2.ShiftLeftLogical(v, 16), 24),
        2 => Avx2.ShiftRightArithmetic(Avx2.ShiftLeftLogical(v, 8), 24),
        _ => Avx2.ShiftRightArithmetic(v, 24),
    };

    // The 8 rows' 6-bit scales (bytes 0-3: scales 0-3, then 4-7) and minimums of a Q4_K unit, ggml's get_scale_min_k4 on
    // the three packed words of every lane at once.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Q4Scales(byte* unit, out Vector256<uint> scLo, out Vector256<uint> scHi, out Vector256<uint> mnLo, out Vector256<uint> mnHi)
    {
        var w0 = Avx.LoadVector256((uint*)(unit + 32));
        var w1 = Avx.LoadVector256((uint*)(unit + 64));
        var w2 = Avx.LoadVector256((uint*)(unit + 96));
        var k6 = Vector256.Create(0x3F3F3F3Fu);
        var k4 = Vector256.Create(0x0F0F0F0Fu);
        var k2 = Vector256.Create(0x03030303u);
        scLo = w0 & k6;
        mnLo = w1 & k6;
        scHi = (w2 & k4) | Avx2.ShiftLeftLogical(Avx2.ShiftRightLogical(w0, 6) & k2, 4);
        mnHi = (Avx2.ShiftRightLogical(w2, 4) & k4) | Avx2.ShiftLeftLogical(Avx2.ShiftRightLogical(w1, 6) & k2, 4);
    }

    // sum_j min_j B_j, exact: the minimums (j, j + 2) as 16-bit pairs against the activation's pairs (B_j, B_j+2).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> Q4Mins(Vector256<uint> mnLo, Vector256<uint> mnHi, int* pairs)
    {
        var even = Vector256.Create(0x00FF00FFu);
        var m = Avx2.MultiplyAddAdjacent((mnLo & even).AsInt16(), Vector256.Create(pairs[0]).AsInt16());
        m += Avx2.MultiplyAddAdjacent((Avx2.ShiftRightLogical(mnLo, 8) & even).AsInt16(), Vector256.Create(pairs[1]).AsInt16());
        m += Avx2.MultiplyAddAdjacent((mnHi & even).AsInt16(), Vector256.Create(pairs[2]).AsInt16());
        return m + Avx2.MultiplyAddAdjacent((Avx2.ShiftRightLogical(mnHi, 8) & even).AsInt16(), Vector256.Create(pairs[3]).AsInt16());
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Halves(byte* at) => QuantizedDot.HalfToSingle(Avx2.ConvertToVector256Int32(Sse2.LoadVector128((ushort*)at)));

    // One token: eight sub-block accumulators (c outer, so eight independent chains), eight rows in the lanes.
    private static void Q4_KToken(byte* group, int superBlocks, sbyte* xq, float* xd, int* xpairs, float* output)
    {
        var sumf = Vector256<float>.Zero;
        var minf = Vector256<float>.Zero;
        var low = Vector256.Create((byte)0x0F);
        byte* unit = group;
        for (int b = 0; b < superBlocks; b++, unit += KQuantRowGroups.Q4_KUnitBytes)
        {
            int* x = (int*)(xq + (b * 256));
            Vector256<int> a0 = default, a1 = default, a2 = default, a3 = default, a4 = default, a5 = default, a6 = default, a7 = default;
            byte* q = unit + 128;
            for (int c = 0; c < 8; c++, q += 128, x++)
            {
                var v0 = Avx.LoadVector256(q);
                var v1 = Avx.LoadVector256(q + 32);
                var v2 = Avx.LoadVector256(q + 64);
                var v3 = Avx.LoadVector256(q + 96);
                a0 = Dp(a0, v0 & low, x[0]);
                a1 = Dp(a1, Avx2.ShiftRightLogical(v0.AsUInt16(), 4).AsByte() & low, x[8]);
                a2 = Dp(a2, v1 & low, x[16]);
                a3 = Dp(a3, Avx2.ShiftRightLogical(v1.AsUInt16(), 4).AsByte() & low, x[24]);
                a4 = Dp(a4, v2 & low, x[32]);
                a5 = Dp(a5, Avx2.ShiftRightLogical(v2.AsUInt16(), 4).AsByte() & low, x[40]);
                a6 = Dp(a6, v3 & low, x[48]);
                a7 = Dp(a7, Avx2.ShiftRightLogical(v3.AsUInt16(), 4).AsByte() & low, x[56]);
            }

            Q4Scales(unit, out var scLo, out var scHi, out var mnLo, out var mnHi);
            var s = (a0 * ByteOf(scLo, 0)) + (a1 * ByteOf(scLo, 1)) + (a2 * ByteOf(scLo, 2)) + (a3 * ByteOf(scLo, 3));
            s += (a4 * ByteOf(scHi, 0)) + (a5 * ByteOf(scHi, 1)) + (a6 * ByteOf(scHi, 2)) + (a7 * ByteOf(scHi, 3));
            var m = Q4Mins(mnLo, mnHi, xpairs + (b * 4));
            var dx = Vector256.Create(xd[b]);
            sumf = Fma.MultiplyAdd(Avx.ConvertToVector256Single(s), Halves(unit) * dx, sumf);
            minf = Fma.MultiplyAdd(Avx.ConvertToVector256Single(m), Halves(unit + 16) * dx, minf);
        }

        (sumf - minf).Store(output);
    }

    // Four tokens sharing each chunk's nibbles, two sub-blocks at a time (eight accumulators: see Dp). The per-token
    // integer and float sums stay in memory (touched once per sub-block pair or super-block), so that the accumulators
    // of the inner loops get registers 0-15.
    private static void KTile4<TStream>(byte* group, int superBlocks, sbyte* xq, long xStride, float* xd, int* xpairs, float* output, long outStride)
        where TStream : struct, ISubBlockPairs
    {
        var f = stackalloc Vector256<float>[8];
        var sums = stackalloc Vector256<int>[4];
        for (int t = 0; t < 8; t++)
        {
            f[t] = default;
        }

        long pStride = (long)superBlocks * 4;
        byte* unit = group;
        for (int b = 0; b < superBlocks; b++, unit += TStream.UnitBytes)
        {
            for (int t = 0; t < 4; t++)
            {
                sums[t] = default;
            }

            int* x = (int*)(xq + (b * 256));
            for (int g = 0; g < 4; g++)
            {
                // sub-blocks 2g (low nibbles) and 2g + 1 (high nibbles) of the chunks of column g
                TStream.Stream2(unit, g, x + (16 * g), xStride, sums, Q4Scale(unit, 2 * g), Q4Scale(unit, (2 * g) + 1));
            }

            Q4Scales(unit, out _, out _, out var mnLo, out var mnHi);
            var d = Halves(unit);
            var dmin = Halves(unit + 16);
            for (int t = 0; t < 4; t++)
            {
                Q4Finish(sums[t], mnLo, mnHi, xpairs + (t * pStride) + (b * 4), xd[(t * superBlocks) + b], d, dmin, ref f[2 * t], ref f[(2 * t) + 1]);
            }
        }

        for (int t = 0; t < 4; t++)
        {
            (f[2 * t] - f[(2 * t) + 1]).Store(output + (t * outStride));
        }
    }

    // The sub-block pair streams of KTile4: where a super-block's unit ends and how nibble column g is read.
    private interface ISubBlockPairs
    {
        static abstract int UnitBytes { get; }

        static abstract void Stream2(byte* unit, int g, int* x, long xStride, Vector256<int>* sums, Vector256<int> scLo, Vector256<int> scHi);
    }

    private readonly struct Q4Pairs : ISubBlockPairs
    {
        public static int UnitBytes => KQuantRowGroups.Q4_KUnitBytes;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void Stream2(byte* unit, int g, int* x, long xStride, Vector256<int>* sums, Vector256<int> scLo, Vector256<int> scHi) =>
            Q4Stream2(unit + 128 + (g * 32), x, xStride, sums, scLo, scHi);
    }

    private readonly struct Q5Pairs : ISubBlockPairs
    {
        public static int UnitBytes => KQuantRowGroups.Q5_KUnitBytes;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void Stream2(byte* unit, int g, int* x, long xStride, Vector256<int>* sums, Vector256<int> scLo, Vector256<int> scHi) =>
            Q5Stream2(unit + 384 + (g * 32), unit + 128, g, x, xStride, sums, scLo, scHi);
    }

    // Sub-blocks 2g and 2g + 1 of four tokens (eight accumulators, eight independent chains): the 8 chunks (128 bytes
    // apart) of nibble column g against the activations x (as ints; token t at t x xStride bytes on); sums[t] += the
    // low sums times scLo + the high sums times scHi.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Q4Stream2(byte* q, int* x, long xStride, Vector256<int>* sums, Vector256<int> scLo, Vector256<int> scHi)
    {
        var low = Vector256.Create((byte)0x0F);
        int* x1 = (int*)((sbyte*)x + xStride);
        int* x2 = (int*)((sbyte*)x1 + xStride);
        int* x3 = (int*)((sbyte*)x2 + xStride);
        Vector256<int> l0 = default, l1 = default, l2 = default, l3 = default, h0 = default, h1 = default, h2 = default, h3 = default;
        for (int c = 0; c < 8; c++, q += 128)
        {
            var v = Avx.LoadVector256(q);
            var lo = v & low;
            var hi = Avx2.ShiftRightLogical(v.AsUInt16(), 4).AsByte() & low;
            l0 = Dp(l0, lo, x[c]);
            h0 = Dp(h0, hi, x[c + 8]);
            l1 = Dp(l1, lo, x1[c]);
            h1 = Dp(h1, hi, x1[c + 8]);
            l2 = Dp(l2, lo, x2[c]);
            h2 = Dp(h2, hi, x2[c + 8]);
            l3 = Dp(l3, lo, x3[c]);
            h3 = Dp(h3, hi, x3[c + 8]);
        }

        sums[0] += (l0 * scLo) + (h0 * scHi);
        sums[1] += (l1 * scLo) + (h1 * scHi);
        sums[2] += (l2 * scLo) + (h2 * scHi);
        sums[3] += (l3 * scLo) + (h3 * scHi);
    }

    // The 8 rows' 6-bit scale of sub-block j.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> Q4Scale(byte* unit, int j)
    {
        Q4Scales(unit, out var scLo, out var scHi, out _, out _);
        return j < 4 ? ByteOf(scLo, j) : ByteOf(scHi, j - 4);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Q4Finish(Vector256<int> s, Vector256<uint> mnLo, Vector256<uint> mnHi, int* pairs, float xd, Vector256<float> d, Vector256<float> dmin, ref Vector256<float> sumf, ref Vector256<float> minf)
    {
        var dx = Vector256.Create(xd);
        sumf = Fma.MultiplyAdd(Avx.ConvertToVector256Single(s), d * dx, sumf);
        minf = Fma.MultiplyAdd(Avx.ConvertToVector256Single(Q4Mins(mnLo, mnHi, pairs)), dmin * dx, minf);
    }

    // Bit k of each byte of h moved to bit 4 (the fifth bit of a Q5_K value).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<byte> FifthBit(Vector256<ushort> h, int k)
    {
        var m10 = Vector256.Create((byte)0x10);
        return k switch
        {
            0 => Avx2.ShiftLeftLogical(h, 4).AsByte() & m10,
            1 => Avx2.ShiftLeftLogical(h, 3).AsByte() & m10,
            2 => Avx2.ShiftLeftLogical(h, 2).AsByte() & m10,
            3 => Avx2.ShiftLeftLogical(h, 1).AsByte() & m10,
            4 => h.AsByte() & m10,
            5 => Avx2.ShiftRightLogical(h, 1).AsByte() & m10,
            6 => Avx2.ShiftRightLogical(h, 2).AsByte() & m10,
            _ => Avx2.ShiftRightLogical(h, 3).AsByte() & m10,
        };
    }

    // One token of Q5_K: Q4_KToken with each nibble's fifth bit from the qh chunk.
    private static void Q5_KToken(byte* group, int superBlocks, sbyte* xq, float* xd, int* xpairs, float* output)
    {
        var sumf = Vector256<float>.Zero;
        var minf = Vector256<float>.Zero;
        var low = Vector256.Create((byte)0x0F);
        byte* unit = group;
        for (int b = 0; b < superBlocks; b++, unit += KQuantRowGroups.Q5_KUnitBytes)
        {
            int* x = (int*)(xq + (b * 256));
            Vector256<int> a0 = default, a1 = default, a2 = default, a3 = default, a4 = default, a5 = default, a6 = default, a7 = default;
            byte* q = unit + 384;
            byte* hq = unit + 128;
            for (int c = 0; c < 8; c++, q += 128, hq += 32, x++)
            {
                var h = Avx.LoadVector256((ushort*)hq);
                var v0 = Avx.LoadVector256(q);
                var v1 = Avx.LoadVector256(q + 32);
                a0 = Dp(a0, (v0 & low) | FifthBit(h, 0), x[0]);
                a1 = Dp(a1, (Avx2.ShiftRightLogical(v0.AsUInt16(), 4).AsByte() & low) | FifthBit(h, 1), x[8]);
                a2 = Dp(a2, (v1 & low) | FifthBit(h, 2), x[16]);
                a3 = Dp(a3, (Avx2.ShiftRightLogical(v1.AsUInt16(), 4).AsByte() & low) | FifthBit(h, 3), x[24]);
                var v2 = Avx.LoadVector256(q + 64);
                var v3 = Avx.LoadVector256(q + 96);
                a4 = Dp(a4, (v2 & low) | FifthBit(h, 4), x[32]);
                a5 = Dp(a5, (Avx2.ShiftRightLogical(v2.AsUInt16(), 4).AsByte() & low) | FifthBit(h, 5), x[40]);
                a6 = Dp(a6, (v3 & low) | FifthBit(h, 6), x[48]);
                a7 = Dp(a7, (Avx2.ShiftRightLogical(v3.AsUInt16(), 4).AsByte() & low) | FifthBit(h, 7), x[56]);
            }

            Q4Scales(unit, out var scLo, out var scHi, out var mnLo, out var mnHi);
            var s = (a0 * ByteOf(scLo, 0)) + (a1 * ByteOf(scLo, 1)) + (a2 * ByteOf(scLo, 2)) + (a3 * ByteOf(scLo, 3));
            s += (a4 * ByteOf(scHi, 0)) + (a5 * ByteOf(scHi, 1)) + (a6 * ByteOf(scHi, 2)) + (a7 * ByteOf(scHi, 3));
            var m = Q4Mins(mnLo, mnHi, xpairs + (b * 4));
            var dx = Vector256.Create(xd[b]);
            sumf = Fma.MultiplyAdd(Avx.ConvertToVector256Single(s), Halves(unit) * dx, sumf);
            minf = Fma.MultiplyAdd(Avx.ConvertToVector256Single(m), Halves(unit + 16) * dx, minf);
        }

        (sumf - minf).Store(output);
    }

    // Q4Stream2 for Q5_K: sub-blocks 2g and 2g + 1, their fifth bits from bits 2g and 2g + 1 of the qh chunks.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Q5Stream2(byte* q, byte* hq, int g, int* x, long xStride, Vector256<int>* sums, Vector256<int> scLo, Vector256<int> scHi)
    {
        var low = Vector256.Create((byte)0x0F);
        var one = Vector256.Create((byte)0x01);
        var countLo = Vector128.CreateScalar((ushort)(2 * g));
        var countHi = Vector128.CreateScalar((ushort)((2 * g) + 1));
        int* x1 = (int*)((sbyte*)x + xStride);
        int* x2 = (int*)((sbyte*)x1 + xStride);
        int* x3 = (int*)((sbyte*)x2 + xStride);
        Vector256<int> l0 = default, l1 = default, l2 = default, l3 = default, h0 = default, h1 = default, h2 = default, h3 = default;
        for (int c = 0; c < 8; c++, q += 128, hq += 32)
        {
            var v = Avx.LoadVector256(q);
            var hb = Avx.LoadVector256((ushort*)hq);
            var lo = (v & low) | Avx2.ShiftLeftLogical((Avx2.ShiftRightLogical(hb, countLo).AsByte() & one).AsUInt16(), 4).AsByte();
            var hi = (Avx2.ShiftRightLogical(v.AsUInt16(), 4).AsByte() & low) | Avx2.ShiftLeftLogical((Avx2.ShiftRightLogical(hb, countHi).AsByte() & one).AsUInt16(), 4).AsByte();
            l0 = Dp(l0, lo, x[c]);
            h0 = Dp(h0, hi, x[c + 8]);
            l1 = Dp(l1, lo, x1[c]);
            h1 = Dp(h1, hi, x1[c + 8]);
            l2 = Dp(l2, lo, x2[c]);
            h2 = Dp(h2, hi, x2[c + 8]);
            l3 = Dp(l3, lo, x3[c]);
            h3 = Dp(h3, hi, x3[c + 8]);
        }

        sums[0] += (l0 * scLo) + (h0 * scHi);
        sums[1] += (l1 * scLo) + (h1 * scHi);
        sums[2] += (l2 * scLo) + (h2 * scHi);
        sums[3] += (l3 * scLo) + (h3 * scHi);
    }

    // 32 sum_k scale_k b_k (the -32 offset of Q6_K's values), exact: scales (k, k + 2) as 16-bit pairs against (b_k, b_k+2).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> Q6Offset(Vector256<int> sc0, Vector256<int> sc1, Vector256<int> sc2, Vector256<int> sc3, int* pairs)
    {
        var o = Avx2.MultiplyAddAdjacent(Avx2.ShiftRightArithmetic(Avx2.ShiftLeftLogical(sc0.AsInt16(), 8), 8), Vector256.Create(pairs[0]).AsInt16());
        o += Avx2.MultiplyAddAdjacent(Avx2.ShiftRightArithmetic(sc0.AsInt16(), 8), Vector256.Create(pairs[1]).AsInt16());
        o += Avx2.MultiplyAddAdjacent(Avx2.ShiftRightArithmetic(Avx2.ShiftLeftLogical(sc1.AsInt16(), 8), 8), Vector256.Create(pairs[2]).AsInt16());
        o += Avx2.MultiplyAddAdjacent(Avx2.ShiftRightArithmetic(sc1.AsInt16(), 8), Vector256.Create(pairs[3]).AsInt16());
        o += Avx2.MultiplyAddAdjacent(Avx2.ShiftRightArithmetic(Avx2.ShiftLeftLogical(sc2.AsInt16(), 8), 8), Vector256.Create(pairs[4]).AsInt16());
        o += Avx2.MultiplyAddAdjacent(Avx2.ShiftRightArithmetic(sc2.AsInt16(), 8), Vector256.Create(pairs[5]).AsInt16());
        o += Avx2.MultiplyAddAdjacent(Avx2.ShiftRightArithmetic(Avx2.ShiftLeftLogical(sc3.AsInt16(), 8), 8), Vector256.Create(pairs[6]).AsInt16());
        o += Avx2.MultiplyAddAdjacent(Avx2.ShiftRightArithmetic(sc3.AsInt16(), 8), Vector256.Create(pairs[7]).AsInt16());
        return Avx2.ShiftLeftLogical(o, 5);
    }

    // One token: per half h, eight sub-block accumulators (chunks c and c + 4 together: eight independent chains).
    private static void Q6_KToken(byte* group, int superBlocks, sbyte* xq, float* xd, int* xpairs, float* output)
    {
        var sum = Vector256<float>.Zero;
        var m4 = Vector256.Create((byte)0x0F);
        var m30 = Vector256.Create((byte)0x30);
        byte* unit = group;
        for (int b = 0; b < superBlocks; b++, unit += KQuantRowGroups.Q6_KUnitBytes)
        {
            var sc0 = Avx.LoadVector256((int*)(unit + 16));
            var sc1 = Avx.LoadVector256((int*)(unit + 48));
            var sc2 = Avx.LoadVector256((int*)(unit + 80));
            var sc3 = Avx.LoadVector256((int*)(unit + 112));
            var s = Vector256<int>.Zero - Q6Offset(sc0, sc1, sc2, sc3, xpairs + (b * 8));
            for (int h = 0; h < 2; h++)
            {
                int* x = (int*)(xq + (b * 256) + (h * 128));
                Vector256<int> a0 = default, a1 = default, a2 = default, a3 = default, a4 = default, a5 = default, a6 = default, a7 = default;
                byte* q = unit + 144 + (h * 8 * 96);
                for (int c = 0; c < 4; c++, q += 96, x++)
                {
                    // chunk c: sub-blocks 8h + 0, 2, 4, 6; chunk c + 4 (384 bytes on): 8h + 1, 3, 5, 7.
                    Q6Unpack(q, m4, m30, out var u0, out var u1, out var u2, out var u3);
                    a0 = Dp(a0, u0, x[0]);
                    a2 = Dp(a2, u1, x[8]);
                    a4 = Dp(a4, u2, x[16]);
                    a6 = Dp(a6, u3, x[24]);
                    Q6Unpack(q + 384, m4, m30, out u0, out u1, out u2, out u3);
                    a1 = Dp(a1, u0, x[4]);
                    a3 = Dp(a3, u1, x[12]);
                    a5 = Dp(a5, u2, x[20]);
                    a7 = Dp(a7, u3, x[28]);
                }

                var lo = h == 0 ? sc0 : sc2;
                var hi = h == 0 ? sc1 : sc3;
                s += (a0 * SignedByteOf(lo, 0)) + (a1 * SignedByteOf(lo, 1)) + (a2 * SignedByteOf(lo, 2)) + (a3 * SignedByteOf(lo, 3));
                s += (a4 * SignedByteOf(hi, 0)) + (a5 * SignedByteOf(hi, 1)) + (a6 * SignedByteOf(hi, 2)) + (a7 * SignedByteOf(hi, 3));
            }

            sum = Fma.MultiplyAdd(Avx.ConvertToVector256Single(s), Halves(unit) * Vector256.Create(xd[b]), sum);
        }

        sum.Store(output);
    }

    // Four tokens: two sub-blocks at a time (eight accumulators: see Dp); the per-token sums in memory, as in KTile4.
    private static void Q6_KTile4(byte* group, int superBlocks, sbyte* xq, long xStride, float* xd, int* xpairs, float* output, long outStride)
    {
        var f = stackalloc Vector256<float>[4];
        var sums = stackalloc Vector256<int>[4];
        for (int t = 0; t < 4; t++)
        {
            f[t] = default;
        }

        long pStride = (long)superBlocks * 8;
        byte* unit = group;
        for (int b = 0; b < superBlocks; b++, unit += KQuantRowGroups.Q6_KUnitBytes)
        {
            for (int t = 0; t < 4; t++)
            {
                sums[t] = Q6NegativeOffset(unit, xpairs + (t * pStride) + (b * 8));
            }

            for (int hp = 0; hp < 4; hp++)
            {
                // sub-blocks k = 8h + 2i + p (i = 0..3): values 128h + 32i + 16p.., from part i of chunks c = 4p .. 4p + 3
                // of half h; scale k in vector 2h + i / 2 (at 16 + 64h, + 32), byte 2 (i % 2) + p.
                int h = hp / 2, p = hp % 2;
                byte* q = unit + 144 + (((h * 8) + (4 * p)) * 96);
                int* x = (int*)(xq + (b * 256) + (h * 128) + (16 * p));
                var sc = Avx.LoadVector256((int*)(unit + 16 + (64 * h)));
                Q6Stream2(q, false, x, xStride, sums, SignedByteOf(sc, p), SignedByteOf(sc, p + 2));
                sc = Avx.LoadVector256((int*)(unit + 48 + (64 * h)));
                Q6Stream2(q, true, x + 16, xStride, sums, SignedByteOf(sc, p), SignedByteOf(sc, p + 2));
            }

            var d = Halves(unit);
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

    // Parts 0 and 1 (upper: 2 and 3) of the 4 chunk triples from q (96 bytes apart), four tokens, eight accumulators:
    // the two sub-blocks' values from x and x + 8 (as ints; token t at t x xStride bytes on); sums[t] += the first
    // sub-block's sums times scA + the second's times scB.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Q6Stream2(byte* q, bool upper, int* x, long xStride, Vector256<int>* sums, Vector256<int> scA, Vector256<int> scB)
    {
        var m4 = Vector256.Create((byte)0x0F);
        var m30 = Vector256.Create((byte)0x30);
        int* x1 = (int*)((sbyte*)x + xStride);
        int* x2 = (int*)((sbyte*)x1 + xStride);
        int* x3 = (int*)((sbyte*)x2 + xStride);
        Vector256<int> a0 = default, a1 = default, a2 = default, a3 = default, b0 = default, b1 = default, b2 = default, b3 = default;
        for (int c = 0; c < 4; c++, q += 96)
        {
            var va = Avx.LoadVector256(q);
            var vb = Avx.LoadVector256(q + 32);
            var qh = Avx.LoadVector256(q + 64).AsUInt16();
            Vector256<byte> ua, ub;
            if (upper)
            {
                ua = (Avx2.ShiftRightLogical(va.AsUInt16(), 4).AsByte() & m4) | (qh.AsByte() & m30);
                ub = (Avx2.ShiftRightLogical(vb.AsUInt16(), 4).AsByte() & m4) | (Avx2.ShiftRightLogical(qh, 2).AsByte() & m30);
            }
            else
            {
                ua = (va & m4) | (Avx2.ShiftLeftLogical(qh, 4).AsByte() & m30);
                ub = (vb & m4) | (Avx2.ShiftLeftLogical(qh, 2).AsByte() & m30);
            }

            a0 = Dp(a0, ua, x[c]);
            b0 = Dp(b0, ub, x[c + 8]);
            a1 = Dp(a1, ua, x1[c]);
            b1 = Dp(b1, ub, x1[c + 8]);
            a2 = Dp(a2, ua, x2[c]);
            b2 = Dp(b2, ub, x2[c + 8]);
            a3 = Dp(a3, ua, x3[c]);
            b3 = Dp(b3, ub, x3[c + 8]);
        }

        sums[0] += (a0 * scA) + (b0 * scB);
        sums[1] += (a1 * scA) + (b1 * scB);
        sums[2] += (a2 * scA) + (b2 * scB);
        sums[3] += (a3 * scA) + (b3 * scB);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> Q6NegativeOffset(byte* unit, int* pairs) => Vector256<int>.Zero - Q6Offset(
        Avx.LoadVector256((int*)(unit + 16)),
        Avx.LoadVector256((int*)(unit + 48)),
        Avx.LoadVector256((int*)(unit + 80)),
        Avx.LoadVector256((int*)(unit + 112)),
        pairs);

    // The four 6-bit value vectors of one chunk triple (ql[64h + 4c..], ql[64h + 32 + 4c..], qh[32h + 4c..]): values
    // 128h + 4c.., + 32, + 64, + 96 of each row in its lane.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Q6Unpack(byte* q, Vector256<byte> m4, Vector256<byte> m30, out Vector256<byte> u0, out Vector256<byte> u1, out Vector256<byte> u2, out Vector256<byte> u3)
    {
        var a = Avx.LoadVector256(q);
        var b = Avx.LoadVector256(q + 32);
        var qh = Avx.LoadVector256(q + 64);
        u0 = (a & m4) | (Avx2.ShiftLeftLogical(qh.AsUInt16(), 4).AsByte() & m30);
        u1 = (b & m4) | (Avx2.ShiftLeftLogical(qh.AsUInt16(), 2).AsByte() & m30);
        u2 = (Avx2.ShiftRightLogical(a.AsUInt16(), 4).AsByte() & m4) | (qh & m30);
        u3 = (Avx2.ShiftRightLogical(b.AsUInt16(), 4).AsByte() & m4) | (Avx2.ShiftRightLogical(qh.AsUInt16(), 2).AsByte() & m30);
    }
}
