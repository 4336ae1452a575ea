using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace KvAdaQuant.Numerics;

/// <summary>
/// Integer dot products of Q2_K, Q3_K and IQ4_XS weight rows with activations quantized to Q8_K
/// (<see cref="Q8KActivations"/>), and of IQ4_NL rows with activations quantized to Q8_0 (<see cref="Q8Activations"/>),
/// the pairs llama.cpp multiplies (ggml's vec_dot_q2_K_q8_K, q3_K_q8_K, iq4_xs_q8_K, iq4_nl_q8_0). Each weight block is
/// unpacked once for up to four tokens (prefill batches).
/// <para>
/// Arithmetic (the same in the AVX2 paths and their scalar twins, so both give the same bits): the K types sum each
/// super-block's products exactly in integers, I = sum_j scale_j sum_(e in j) q_e x_e, and accumulate one float per token,
/// acc = fma(I, d x dx, acc) (Q2_K's minimums likewise, M = sum_j min_j b_j from the activations' 16-value sums b_j,
/// m = fma(M, dmin x dx, m), the result acc - m; Q3_K's signed values q - 4 as the unsigned 0..7 codes minus 4 b_j);
/// IQ4_NL sums each 32-block in 8 integer lanes (lane i: values 4i..4i+3) fused-added times (d x dx) into 8 float lanes,
/// summed at the end in <see cref="GgmlArithmetic.Sum8(Vector256{float})"/>'s order. The vector paths take products of
/// unsigned weights (or |weight|, with the activation's sign flipped where the weight is negative) with signed
/// activations in pairs of 16 bits, which cannot saturate here: activations lie in [-127, 127] by both quantizers' rules
/// and weights in [0, 7] or |w| &lt;= 127. Token t's activations start at t x (blocks x block size) values.
/// </para>
/// </summary>
public static unsafe class LowBitDot
{
    /// <summary>Bytes of one Q2_K super-block: 16 bytes of 4-bit scale and min, 64 bytes of 2-bit codes, d and dmin (FP16).</summary>
    public const int Q2_KBlockBytes = 84;

    /// <summary>Bytes of one Q3_K super-block: 32 bytes of high bits, 64 bytes of low 2-bit codes, 12 bytes of 6-bit scales, d (FP16).</summary>
    public const int Q3_KBlockBytes = 110;

    /// <summary>Bytes of one IQ4_XS super-block: d (FP16), 16 high scale bits, 4 bytes of low scale nibbles, 128 bytes of codes.</summary>
    public const int Iq4_XSBlockBytes = 136;

    /// <summary>Bytes of one IQ4_NL block of 32: d (FP16), 16 bytes of codes.</summary>
    public const int Iq4_NLBlockBytes = 18;

    /// <summary>True when the AVX2 paths run on this machine.</summary>
    public static bool VectorPathSupported => Avx2.IsSupported && Fma.IsSupported;

    /// <summary>output[t * outStride] = row · x_t for t &lt; <paramref name="tokens"/> (1 to 4), a Q2_K row.</summary>
    public static void DotQ2_K(byte* row, int superBlocks, int tokens, sbyte* xq, float* xd, short* xsum, float* output, long outStride)
    {
        if (VectorPathSupported)
        {
            DotQ2_KAvx2(row, superBlocks, tokens, xq, xd, xsum, output, outStride);
        }
        else
        {
            DotQ2_KScalar(row, superBlocks, tokens, xq, xd, xsum, output, outStride);
        }
    }

    /// <summary>As <see cref="DotQ2_K"/> for a Q3_K row.</summary>
    public static void DotQ3_K(byte* row, int superBlocks, int tokens, sbyte* xq, float* xd, short* xsum, float* output, long outStride)
    {
        if (VectorPathSupported)
        {
            DotQ3_KAvx2(row, superBlocks, tokens, xq, xd, xsum, output, outStride);
        }
        else
        {
            DotQ3_KScalar(row, superBlocks, tokens, xq, xd, xsum, output, outStride);
        }
    }

    /// <summary>As <see cref="DotQ2_K"/> for an IQ4_XS row.</summary>
    public static void DotIq4_XS(byte* row, int superBlocks, int tokens, sbyte* xq, float* xd, float* output, long outStride)
    {
        if (VectorPathSupported)
        {
            DotIq4_XSAvx2(row, superBlocks, tokens, xq, xd, output, outStride);
        }
        else
        {
            DotIq4_XSScalar(row, superBlocks, tokens, xq, xd, output, outStride);
        }
    }

    /// <summary>output[t * outStride] = row · x_t for an IQ4_NL row of <paramref name="blocks"/> blocks of 32 and Q8_0 activations.</summary>
    public static void DotIq4_NL(byte* row, int blocks, int tokens, sbyte* xq, float* xd, float* output, long outStride)
    {
        if (VectorPathSupported)
        {
            DotIq4_NLAvx2(row, blocks, tokens, xq, xd, output, outStride);
        }
        else
        {
            DotIq4_NLScalar(row, blocks, tokens, xq, xd, output, outStride);
        }
    }

    /// <summary>Scalar twin of <see cref="DotQ2_K"/>: value e is d * scale_(e/16) * q_e - dmin * min_(e/16).</summary>
    public static void DotQ2_KScalar(byte* row, int superBlocks, int tokens, sbyte* xq, float* xd, short* xsum, float* output, long outStride)
    {
        CheckTokens(tokens);
        for (int t = 0; t < tokens; t++)
        {
            sbyte* x = xq + ((long)t * superBlocks * 256);
            float* dx = xd + ((long)t * superBlocks);
            short* sx = xsum + ((long)t * superBlocks * 16);
            float acc = 0, mins = 0;
            for (int b = 0; b < superBlocks; b++)
            {
                byte* blk = row + (b * Q2_KBlockBytes);
                int sum = 0, summ = 0;
                for (int e = 0; e < 256; e++)
                {
                    int q = (blk[16 + (32 * (e >> 7)) + (e & 31)] >> (2 * ((e >> 5) & 3))) & 3;
                    sum += (blk[e >> 4] & 0xF) * q * x[(b * 256) + e];
                }

                for (int j = 0; j < 16; j++)
                {
                    summ += (blk[j] >> 4) * sx[(b * 16) + j];
                }

                acc = MathF.FusedMultiplyAdd(sum, HalfBits.ToSingleNoSubnormals(*(ushort*)(blk + 80)) * dx[b], acc);
                mins = MathF.FusedMultiplyAdd(summ, HalfBits.ToSingleNoSubnormals(*(ushort*)(blk + 82)) * dx[b], mins);
            }

            output[t * outStride] = acc - mins;
        }
    }

    /// <summary>AVX2 path of <see cref="DotQ2_K"/>: each super-block's codes unpacked once, in registers, for all tokens.</summary>
    public static void DotQ2_KAvx2(byte* row, int superBlocks, int tokens, sbyte* xq, float* xd, short* xsum, float* output, long outStride)
    {
        CheckTokens(tokens);
        long xStride = (long)superBlocks * 256;
        float* acc = stackalloc float[4];
        float* mins = stackalloc float[4];
        for (int t = 0; t < 4; t++)
        {
            acc[t] = 0;
            mins[t] = 0;
        }

        var three = Vector256.Create((byte)3);
        var nibble = Vector128.Create((byte)0xF);
        for (int b = 0; b < superBlocks; b++)
        {
            byte* blk = row + (b * Q2_KBlockBytes);
            var packed = Sse2.LoadVector128(blk);
            var low = packed & nibble;
            var both = Vector256.Create(low, low);
            var v0 = Avx.LoadVector256(blk + 16).AsUInt16();
            var v1 = Avx.LoadVector256(blk + 48).AsUInt16();
            var c0 = v0.AsByte() & three;
            var c1 = Vector256.ShiftRightLogical(v0, 2).AsByte() & three;
            var c2 = Vector256.ShiftRightLogical(v0, 4).AsByte() & three;
            var c3 = Vector256.ShiftRightLogical(v0, 6).AsByte() & three;
            var c4 = v1.AsByte() & three;
            var c5 = Vector256.ShiftRightLogical(v1, 2).AsByte() & three;
            var c6 = Vector256.ShiftRightLogical(v1, 4).AsByte() & three;
            var c7 = Vector256.ShiftRightLogical(v1, 6).AsByte() & three;
            var s0 = ScalePair(both, 0);
            var s1 = ScalePair(both, 1);
            var s2 = ScalePair(both, 2);
            var s3 = ScalePair(both, 3);
            var s4 = ScalePair(both, 4);
            var s5 = ScalePair(both, 5);
            var s6 = ScalePair(both, 6);
            var s7 = ScalePair(both, 7);
            var minWords = Avx2.ConvertToVector256Int16(Sse2.ShiftRightLogical(packed.AsUInt16(), 4).AsByte() & nibble);
            float d = HalfBits.ToSingleNoSubnormals(*(ushort*)(blk + 80));
            float dmin = HalfBits.ToSingleNoSubnormals(*(ushort*)(blk + 82));
            for (int t = 0; t < tokens; t++)
            {
                sbyte* x = xq + (t * xStride) + (b * 256);
                var p0 = Avx2.MultiplyAddAdjacent(c0, Avx.LoadVector256(x));
                var p1 = Avx2.MultiplyAddAdjacent(c1, Avx.LoadVector256(x + 32));
                var p2 = Avx2.MultiplyAddAdjacent(c2, Avx.LoadVector256(x + 64));
                var p3 = Avx2.MultiplyAddAdjacent(c3, Avx.LoadVector256(x + 96));
                var p4 = Avx2.MultiplyAddAdjacent(c4, Avx.LoadVector256(x + 128));
                var p5 = Avx2.MultiplyAddAdjacent(c5, Avx.LoadVector256(x + 160));
                var p6 = Avx2.MultiplyAddAdjacent(c6, Avx.LoadVector256(x + 192));
                var p7 = Avx2.MultiplyAddAdjacent(c7, Avx.LoadVector256(x + 224));
                var sum = ScaledPairs(p0, p1, p2, p3, p4, p5, p6, p7, s0, s1, s2, s3, s4, s5, s6, s7);
                var m = Avx2.MultiplyAddAdjacent(minWords, Avx.LoadVector256(xsum + (t * (long)superBlocks * 16) + (b * 16)));
                float dx = xd[(t * (long)superBlocks) + b];
                acc[t] = MathF.FusedMultiplyAdd(Vector256.Sum(sum), d * dx, acc[t]);
                mins[t] = MathF.FusedMultiplyAdd(Vector256.Sum(m), dmin * dx, mins[t]);
            }
        }

        for (int t = 0; t < tokens; t++)
        {
            output[t * outStride] = acc[t] - mins[t];
        }
    }

    // The k-th 32 values' scales, 2k in the low half's 16-bit lanes and 2k + 1 in the high half's, from unsigned byte scales in
    // both halves of `scales` (a byte shuffle that zeroes the high bytes).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<short> ScalePair(Vector256<byte> scales, int k) => Avx2.Shuffle(scales, ScalePairMask(k)).AsInt16();

    // sum over the eight 32-value slices k of the scale-weighted pair sums madd(p_k, s_k).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> ScaledPairs(
        Vector256<short> p0, Vector256<short> p1, Vector256<short> p2, Vector256<short> p3, Vector256<short> p4, Vector256<short> p5, Vector256<short> p6, Vector256<short> p7,
        Vector256<short> s0, Vector256<short> s1, Vector256<short> s2, Vector256<short> s3, Vector256<short> s4, Vector256<short> s5, Vector256<short> s6, Vector256<short> s7)
        => ((Avx2.MultiplyAddAdjacent(p0, s0) + Avx2.MultiplyAddAdjacent(p1, s1)) + (Avx2.MultiplyAddAdjacent(p2, s2) + Avx2.MultiplyAddAdjacent(p3, s3)))
            + ((Avx2.MultiplyAddAdjacent(p4, s4) + Avx2.MultiplyAddAdjacent(p5, s5)) + (Avx2.MultiplyAddAdjacent(p6, s6) + Avx2.MultiplyAddAdjacent(p7, s7)));

    /// <summary>Scalar twin of <see cref="DotQ3_K"/>: value e is d * scale_(e/16) * q_e, q_e in -4..3 (<see cref="RowDequantizer.ValueQ3_K"/>).</summary>
    public static void DotQ3_KScalar(byte* row, int superBlocks, int tokens, sbyte* xq, float* xd, short* xsum, float* output, long outStride)
    {
        CheckTokens(tokens);
        _ = xsum;
        for (int t = 0; t < tokens; t++)
        {
            sbyte* x = xq + ((long)t * superBlocks * 256);
            float* dx = xd + ((long)t * superBlocks);
            float acc = 0;
            for (int b = 0; b < superBlocks; b++)
            {
                var blk = new ReadOnlySpan<byte>(row + (b * Q3_KBlockBytes), Q3_KBlockBytes);
                var hmask = blk[..32];
                var qs = blk.Slice(32, 64);
                var sc = blk.Slice(96, 12);
                int sum = 0;
                for (int e = 0; e < 256; e++)
                {
                    sum += RowDequantizer.ScaleQ3_K(e >> 4, sc) * RowDequantizer.ValueQ3_K(e, hmask, qs) * x[(b * 256) + e];
                }

                acc = MathF.FusedMultiplyAdd(sum, HalfBits.ToSingleNoSubnormals(*(ushort*)(row + (b * Q3_KBlockBytes) + 108)) * dx[b], acc);
            }

            output[t * outStride] = acc;
        }
    }

    /// <summary>
    /// AVX2 path of <see cref="DotQ3_K"/>: unsigned codes u = q + 4 (0..7) unpacked once, in registers, for all tokens, with the
    /// unsigned 6-bit scales L = scale + 32 (0..63) spread over 16-bit lanes by a byte shuffle; per token the integer total is
    /// sum L u x - 32 sum u x - 4 sum_j scale_j b_j.
    /// </summary>
    public static void DotQ3_KAvx2(byte* row, int superBlocks, int tokens, sbyte* xq, float* xd, short* xsum, float* output, long outStride)
    {
        CheckTokens(tokens);
        long xStride = (long)superBlocks * 256;
        float* acc = stackalloc float[4];
        for (int t = 0; t < 4; t++)
        {
            acc[t] = 0;
        }

        var three = Vector256.Create((byte)3);
        var bit2 = Vector256.Create((ushort)0x0404);
        var minus32 = Vector256.Create((short)-32);
        for (int b = 0; b < superBlocks; b++)
        {
            byte* blk = row + (b * Q3_KBlockBytes);
            var unsignedScales = ScalesQ3_K(blk + 96);
            var both = Vector256.Create(unsignedScales, unsignedScales);
            var hm = Avx.LoadVector256(blk).AsUInt16();
            var v0 = Avx.LoadVector256(blk + 32).AsUInt16();
            var v1 = Avx.LoadVector256(blk + 64).AsUInt16();

            // high bit k of each hmask byte moved to bit 2 (value 4) of the code
            var c0 = (v0.AsByte() & three) | (Vector256.ShiftLeft(hm, 2) & bit2).AsByte();
            var c1 = (Vector256.ShiftRightLogical(v0, 2).AsByte() & three) | (Vector256.ShiftLeft(hm, 1) & bit2).AsByte();
            var c2 = (Vector256.ShiftRightLogical(v0, 4).AsByte() & three) | (hm & bit2).AsByte();
            var c3 = (Vector256.ShiftRightLogical(v0, 6).AsByte() & three) | (Vector256.ShiftRightLogical(hm, 1) & bit2).AsByte();
            var c4 = (v1.AsByte() & three) | (Vector256.ShiftRightLogical(hm, 2) & bit2).AsByte();
            var c5 = (Vector256.ShiftRightLogical(v1, 2).AsByte() & three) | (Vector256.ShiftRightLogical(hm, 3) & bit2).AsByte();
            var c6 = (Vector256.ShiftRightLogical(v1, 4).AsByte() & three) | (Vector256.ShiftRightLogical(hm, 4) & bit2).AsByte();
            var c7 = (Vector256.ShiftRightLogical(v1, 6).AsByte() & three) | (Vector256.ShiftRightLogical(hm, 5) & bit2).AsByte();
            var s0 = ScalePair(both, 0);
            var s1 = ScalePair(both, 1);
            var s2 = ScalePair(both, 2);
            var s3 = ScalePair(both, 3);
            var s4 = ScalePair(both, 4);
            var s5 = ScalePair(both, 5);
            var s6 = ScalePair(both, 6);
            var s7 = ScalePair(both, 7);
            var scaleWords = Avx2.ConvertToVector256Int16(unsignedScales) - Vector256.Create((short)32);
            float d = HalfBits.ToSingleNoSubnormals(*(ushort*)(blk + 108));
            for (int t = 0; t < tokens; t++)
            {
                sbyte* x = xq + (t * xStride) + (b * 256);
                var p0 = Avx2.MultiplyAddAdjacent(c0, Avx.LoadVector256(x));
                var p1 = Avx2.MultiplyAddAdjacent(c1, Avx.LoadVector256(x + 32));
                var p2 = Avx2.MultiplyAddAdjacent(c2, Avx.LoadVector256(x + 64));
                var p3 = Avx2.MultiplyAddAdjacent(c3, Avx.LoadVector256(x + 96));
                var p4 = Avx2.MultiplyAddAdjacent(c4, Avx.LoadVector256(x + 128));
                var p5 = Avx2.MultiplyAddAdjacent(c5, Avx.LoadVector256(x + 160));
                var p6 = Avx2.MultiplyAddAdjacent(c6, Avx.LoadVector256(x + 192));
                var p7 = Avx2.MultiplyAddAdjacent(c7, Avx.LoadVector256(x + 224));
                var sum = ScaledPairs(p0, p1, p2, p3, p4, p5, p6, p7, s0, s1, s2, s3, s4, s5, s6, s7);

                // sum u x over the super-block: pair sums of at most 2 x 7 x 127 = 1,778 each, 14,224 over eight: 16 bits hold it
                var plain = ((p0 + p1) + (p2 + p3)) + ((p4 + p5) + (p6 + p7));
                var offset = Avx2.MultiplyAddAdjacent(scaleWords, Avx.LoadVector256(xsum + (t * (long)superBlocks * 16) + (b * 16)));
                int total = Vector256.Sum(sum + Avx2.MultiplyAddAdjacent(plain, minus32) - Vector256.ShiftLeft(offset, 2));
                acc[t] = MathF.FusedMultiplyAdd(total, d * xd[(t * (long)superBlocks) + b], acc[t]);
            }
        }

        for (int t = 0; t < tokens; t++)
        {
            output[t * outStride] = acc[t];
        }
    }

    /// <summary>
    /// The sixteen unsigned 6-bit scales (scale + 32, 0..63) of a Q3_K super-block from its 12 packed bytes, four at a time in
    /// 32-bit words: low nibbles of bytes 0..7, then high nibbles, each with two bits of bytes 8..11 on top. Equals
    /// <see cref="RowDequantizer.ScaleQ3_K"/> + 32 for j = 0..15.
    /// </summary>
    public static Vector128<byte> ScalesQ3_K(byte* packed)
    {
        uint a0 = *(uint*)packed, a1 = *(uint*)(packed + 4), tmp = *(uint*)(packed + 8);
        const uint low4 = 0x0F0F0F0F, low2 = 0x03030303;
        return Vector128.Create(
            (a0 & low4) | ((tmp & low2) << 4),
            (a1 & low4) | (((tmp >> 2) & low2) << 4),
            ((a0 >> 4) & low4) | (((tmp >> 4) & low2) << 4),
            ((a1 >> 4) & low4) | (((tmp >> 6) & low2) << 4)).AsByte();
    }

    /// <summary>Scalar twin of <see cref="DotIq4_XS"/>: value e is d * (scale_(e/32) - 32) * kvalues[code_e].</summary>
    public static void DotIq4_XSScalar(byte* row, int superBlocks, int tokens, sbyte* xq, float* xd, float* output, long outStride)
    {
        CheckTokens(tokens);
        var kv = RowDequantizer.Iq4Values;
        for (int t = 0; t < tokens; t++)
        {
            sbyte* x = xq + ((long)t * superBlocks * 256);
            float* dx = xd + ((long)t * superBlocks);
            float acc = 0;
            for (int b = 0; b < superBlocks; b++)
            {
                byte* blk = row + (b * Iq4_XSBlockBytes);
                ushort h = *(ushort*)(blk + 2);
                var scalesL = new ReadOnlySpan<byte>(blk + 4, 4);
                int sum = 0;
                for (int ib = 0; ib < 8; ib++)
                {
                    byte* qs = blk + 8 + (16 * ib);
                    sbyte* xb = x + (b * 256) + (32 * ib);
                    int s = 0;
                    for (int j = 0; j < 16; j++)
                    {
                        s += (kv[qs[j] & 0xF] * xb[j]) + (kv[qs[j] >> 4] * xb[j + 16]);
                    }

                    sum += (RowDequantizer.ScaleIq4_XS(ib, h, scalesL) - 32) * s;
                }

                acc = MathF.FusedMultiplyAdd(sum, HalfBits.ToSingleNoSubnormals(*(ushort*)blk) * dx[b], acc);
            }

            output[t * outStride] = acc;
        }
    }

    /// <summary>
    /// AVX2 path of <see cref="DotIq4_XS"/>: the codes looked up once per super-block, in registers, for all tokens; the eight
    /// 6-bit scales gathered into bytes with two bit deposits (BMI2) and spread over 16-bit lanes, sign-extended, by a byte
    /// shuffle into the high bytes and an arithmetic shift.
    /// </summary>
    public static void DotIq4_XSAvx2(byte* row, int superBlocks, int tokens, sbyte* xq, float* xd, float* output, long outStride)
    {
        CheckTokens(tokens);
        long xStride = (long)superBlocks * 256;
        float* acc = stackalloc float[4];
        for (int t = 0; t < 4; t++)
        {
            acc[t] = 0;
        }

        var table = Iq4Table();
        var thirtyTwo = Vector128.Create((sbyte)32);
        for (int b = 0; b < superBlocks; b++)
        {
            byte* blk = row + (b * Iq4_XSBlockBytes);
            var sc = Vector128.CreateScalar(ScaleBytesIq4_XS(blk)).AsSByte() - thirtyTwo;
            var both = Vector256.Create(sc, sc);
            Iq4WeightPair(table, blk + 8, out var w0, out var w1);
            Iq4WeightPair(table, blk + 40, out var w2, out var w3);
            Iq4WeightPair(table, blk + 72, out var w4, out var w5);
            Iq4WeightPair(table, blk + 104, out var w6, out var w7);
            var l0 = BlockScale(both, 0);
            var l1 = BlockScale(both, 1);
            var l2 = BlockScale(both, 2);
            var l3 = BlockScale(both, 3);
            var l4 = BlockScale(both, 4);
            var l5 = BlockScale(both, 5);
            var l6 = BlockScale(both, 6);
            var l7 = BlockScale(both, 7);
            float d = HalfBits.ToSingleNoSubnormals(*(ushort*)blk);
            for (int t = 0; t < tokens; t++)
            {
                sbyte* x = xq + (t * xStride) + (b * 256);
                var s0 = Avx2.MultiplyAddAdjacent(SignedPairs(w0, x), l0);
                var s1 = Avx2.MultiplyAddAdjacent(SignedPairs(w1, x + 32), l1);
                var s2 = Avx2.MultiplyAddAdjacent(SignedPairs(w2, x + 64), l2);
                var s3 = Avx2.MultiplyAddAdjacent(SignedPairs(w3, x + 96), l3);
                var s4 = Avx2.MultiplyAddAdjacent(SignedPairs(w4, x + 128), l4);
                var s5 = Avx2.MultiplyAddAdjacent(SignedPairs(w5, x + 160), l5);
                var s6 = Avx2.MultiplyAddAdjacent(SignedPairs(w6, x + 192), l6);
                var s7 = Avx2.MultiplyAddAdjacent(SignedPairs(w7, x + 224), l7);
                var sum = ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7));
                acc[t] = MathF.FusedMultiplyAdd(Vector256.Sum(sum), d * xd[(t * (long)superBlocks) + b], acc[t]);
            }
        }

        for (int t = 0; t < tokens; t++)
        {
            output[t * outStride] = acc[t];
        }
    }

    /// <summary>
    /// The eight unsigned 6-bit scales (0..63) of an IQ4_XS super-block as the bytes of a ulong (block ib in byte ib): the
    /// low nibbles of scales_l deposited one per byte, the 2-bit fields of scales_h deposited above them. Equals
    /// <see cref="RowDequantizer.ScaleIq4_XS"/> for ib = 0..7.
    /// </summary>
    public static ulong ScaleBytesIq4_XS(byte* blk)
    {
        if (!Bmi2.X64.IsSupported)
        {
            return ScaleBytesIq4_XSScalar(blk);
        }

        ushort h = *(ushort*)(blk + 2);
        uint l = *(uint*)(blk + 4);
        return Bmi2.X64.ParallelBitDeposit(l, 0x0F0F0F0F0F0F0F0FUL) | (Bmi2.X64.ParallelBitDeposit(h, 0x0303030303030303UL) << 4);
    }

    /// <summary>Scalar twin of <see cref="ScaleBytesIq4_XS"/> (no BMI2): the eight scales one at a time.</summary>
    public static ulong ScaleBytesIq4_XSScalar(byte* blk)
    {
        ushort h = *(ushort*)(blk + 2);
        uint l = *(uint*)(blk + 4);
        ulong r = 0;
        for (int ib = 0; ib < 8; ib++)
        {
            r |= (ulong)(((l >> (4 * ib)) & 0xF) | (((uint)h >> (2 * ib) & 3) << 4)) << (8 * ib);
        }

        return r;
    }

    // |w| times x with w's sign, in 16-bit pairs (vpsignb + vpmaddubsw; |w| <= 127 and |x| <= 127 cannot saturate).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<short> SignedPairs(Vector256<sbyte> w, sbyte* x)
        => Avx2.MultiplyAddAdjacent(Avx2.Abs(w), Avx2.Sign(Avx.LoadVector256(x), w));

    // Signed byte ib of both halves of `scales` in every 16-bit lane: shuffled into the high bytes, then shifted down with its sign.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<short> BlockScale(Vector256<sbyte> scales, int ib)
        => Avx2.ShiftRightArithmetic(Avx2.Shuffle(scales.AsByte(), BlockScaleMasks[ib].AsByte()).AsInt16(), 8);

    private static readonly Vector256<sbyte>[] BlockScaleMasks = Enumerable.Range(0, 8).Select(ib =>
    {
        var m = new sbyte[32];
        for (int i = 0; i < 32; i++)
        {
            m[i] = i % 2 == 0 ? (sbyte)-128 : (sbyte)ib;
        }

        return Vector256.Create(m);
    }).ToArray();

    /// <summary>Scalar twin of <see cref="DotIq4_NL"/>.</summary>
    public static void DotIq4_NLScalar(byte* row, int blocks, int tokens, sbyte* xq, float* xd, float* output, long outStride)
    {
        CheckTokens(tokens);
        var kv = RowDequantizer.Iq4Values;
        Span<float> lanes = stackalloc float[8];
        Span<int> sums = stackalloc int[8];
        for (int t = 0; t < tokens; t++)
        {
            sbyte* x = xq + ((long)t * blocks * 32);
            float* dx = xd + ((long)t * blocks);
            lanes.Clear();
            for (int b = 0; b < blocks; b++)
            {
                byte* blk = row + (b * Iq4_NLBlockBytes);
                sbyte* xb = x + (b * 32);
                sums.Clear();
                for (int j = 0; j < 16; j++)
                {
                    sums[j / 4] += kv[blk[2 + j] & 0xF] * xb[j];
                    sums[4 + (j / 4)] += kv[blk[2 + j] >> 4] * xb[j + 16];
                }

                float s = HalfBits.ToSingleNoSubnormals(*(ushort*)blk) * dx[b];
                for (int i = 0; i < 8; i++)
                {
                    lanes[i] = MathF.FusedMultiplyAdd(sums[i], s, lanes[i]);
                }
            }

            output[t * outStride] = GgmlArithmetic.Sum8Scalar(lanes);
        }
    }

    /// <summary>
    /// AVX2 path of <see cref="DotIq4_NL"/>: eight blocks at a time, their FP16 scales converted together
    /// (<see cref="HalfBits.ToSingle8"/>) and multiplied by the eight activation scales of each token in one vector, the
    /// blocks' levels looked up once for all tokens; the tail of fewer than eight blocks one block at a time, alike.
    /// </summary>
    public static void DotIq4_NLAvx2(byte* row, int blocks, int tokens, sbyte* xq, float* xd, float* output, long outStride)
    {
        CheckTokens(tokens);
        long xStride = (long)blocks * 32;
        var table = Iq4Table();
        var ones = Vector256.Create((short)1);
        Vector256<float>* acc = stackalloc Vector256<float>[4];
        for (int t = 0; t < 4; t++)
        {
            acc[t] = Vector256<float>.Zero;
        }

        int b = 0;
        for (; b + 8 <= blocks; b += 8)
        {
            byte* g = row + (b * Iq4_NLBlockBytes);
            var dw = HalfBits.ToSingle8(Vector128.Create(
                *(ushort*)g, *(ushort*)(g + 18), *(ushort*)(g + 36), *(ushort*)(g + 54),
                *(ushort*)(g + 72), *(ushort*)(g + 90), *(ushort*)(g + 108), *(ushort*)(g + 126)));
            var w0 = Iq4Weights(table, g + 2);
            var w1 = Iq4Weights(table, g + 20);
            var w2 = Iq4Weights(table, g + 38);
            var w3 = Iq4Weights(table, g + 56);
            var w4 = Iq4Weights(table, g + 74);
            var w5 = Iq4Weights(table, g + 92);
            var w6 = Iq4Weights(table, g + 110);
            var w7 = Iq4Weights(table, g + 128);
            for (int t = 0; t < tokens; t++)
            {
                sbyte* x = xq + (t * xStride) + (b * 32);
                var ds = dw * Avx.LoadVector256(xd + (t * (long)blocks) + b);
                acc[t] = AddScaledBlocks(acc[t], ds,
                    BlockSum(w0, x, ones), BlockSum(w1, x + 32, ones), BlockSum(w2, x + 64, ones), BlockSum(w3, x + 96, ones), BlockSum(w4, x + 128, ones), BlockSum(w5, x + 160, ones), BlockSum(w6, x + 192, ones), BlockSum(w7, x + 224, ones));
            }
        }

        for (; b < blocks; b++)
        {
            byte* blk = row + (b * Iq4_NLBlockBytes);
            var w = Iq4Weights(table, blk + 2);
            float d = HalfBits.ToSingleNoSubnormals(*(ushort*)blk);
            for (int t = 0; t < tokens; t++)
            {
                var s = Vector256.Create(d * xd[(t * (long)blocks) + b]);
                acc[t] = Fma.MultiplyAdd(BlockSum(w, xq + (t * xStride) + (b * 32), ones), s, acc[t]);
            }
        }

        for (int t = 0; t < tokens; t++)
        {
            output[t * outStride] = GgmlArithmetic.Sum8(acc[t]);
        }
    }

    // a + sum_i s_i x ds[i] for eight blocks in order, one fused multiply-add each: block i's lane sums times its scale, lane i of ds.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> AddScaledBlocks(
        Vector256<float> a, Vector256<float> ds, Vector256<float> s0, Vector256<float> s1, Vector256<float> s2, Vector256<float> s3, Vector256<float> s4, Vector256<float> s5, Vector256<float> s6, Vector256<float> s7)
    {
        a = Fma.MultiplyAdd(s0, Avx2.PermuteVar8x32(ds, Vector256.Create(0)), a);
        a = Fma.MultiplyAdd(s1, Avx2.PermuteVar8x32(ds, Vector256.Create(1)), a);
        a = Fma.MultiplyAdd(s2, Avx2.PermuteVar8x32(ds, Vector256.Create(2)), a);
        a = Fma.MultiplyAdd(s3, Avx2.PermuteVar8x32(ds, Vector256.Create(3)), a);
        a = Fma.MultiplyAdd(s4, Avx2.PermuteVar8x32(ds, Vector256.Create(4)), a);
        a = Fma.MultiplyAdd(s5, Avx2.PermuteVar8x32(ds, Vector256.Create(5)), a);
        a = Fma.MultiplyAdd(s6, Avx2.PermuteVar8x32(ds, Vector256.Create(6)), a);
        return Fma.MultiplyAdd(s7, Avx2.PermuteVar8x32(ds, Vector256.Create(7)), a);
    }

    // One block's exact products in 8 int32 lanes (lane i: values 4i..4i+3), as floats.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> BlockSum(Vector256<sbyte> w, sbyte* x, Vector256<short> ones)
        => Avx.ConvertToVector256Single(Avx2.MultiplyAddAdjacent(SignedPairs(w, x), ones));

    /// <summary>Bytes of one Q4_1 block of 32: d, m (FP16), 16 bytes of nibbles.</summary>
    public const int Q4_1BlockBytes = 20;

    /// <summary>Bytes of one Q5_1 block of 32: d, m (FP16), 32 fifth bits, 16 bytes of nibbles.</summary>
    public const int Q5_1BlockBytes = 24;

    /// <summary>
    /// output[t * outStride] = row · x_t for a Q4_1 (<paramref name="fiveBit"/> false) or Q5_1 row of <paramref name="blocks"/>
    /// blocks of 32 and Q8_0 activations with their Q8_1 sums <paramref name="xs1"/> (<see cref="Q8Activations.Q8_1Sums"/>),
    /// the pair ggml_vec_dot_q4_1_q8_1 / q5_1_q8_1 multiplies: per block the exact products of the unsigned codes (0..15,
    /// 0..31) in 8 integer lanes fused-added times d x dx into 8 float lanes, the minimums m x s added block by block to one
    /// float (ggml's order); the result the lanes' sum (<see cref="GgmlArithmetic.Sum8(Vector256{float})"/>) plus it. The
    /// vector path takes eight blocks at a time, their FP16 d and m converted together (<see cref="HalfBits.ToSingle8"/>).
    /// </summary>
    public static void DotQ4_1(byte* row, int blocks, int tokens, bool fiveBit, sbyte* xq, float* xd, float* xs1, float* output, long outStride)
    {
        if (VectorPathSupported)
        {
            DotQ4_1Avx2(row, blocks, tokens, fiveBit, xq, xd, xs1, output, outStride);
        }
        else
        {
            DotQ4_1Scalar(row, blocks, tokens, fiveBit, xq, xd, xs1, output, outStride);
        }
    }

    /// <summary>Scalar twin of <see cref="DotQ4_1"/>.</summary>
    public static void DotQ4_1Scalar(byte* row, int blocks, int tokens, bool fiveBit, sbyte* xq, float* xd, float* xs1, float* output, long outStride)
    {
        CheckTokens(tokens);
        int bytes = fiveBit ? Q5_1BlockBytes : Q4_1BlockBytes;
        Span<float> lanes = stackalloc float[8];
        Span<int> sums = stackalloc int[8];
        for (int t = 0; t < tokens; t++)
        {
            sbyte* x = xq + ((long)t * blocks * 32);
            lanes.Clear();
            float mins = 0;
            for (int b = 0; b < blocks; b++)
            {
                byte* blk = row + (b * bytes);
                uint qh = fiveBit ? *(uint*)(blk + 4) : 0;
                byte* qs = blk + (fiveBit ? 8 : 4);
                sums.Clear();
                for (int e = 0; e < 32; e++)
                {
                    int code = (e < 16 ? qs[e] & 0xF : qs[e - 16] >> 4) | (int)(((qh >> e) & 1) << 4);
                    sums[e / 4] += code * x[(b * 32) + e];
                }

                float s = HalfBits.ToSingleNoSubnormals(*(ushort*)blk) * xd[(t * (long)blocks) + b];
                for (int i = 0; i < 8; i++)
                {
                    lanes[i] = MathF.FusedMultiplyAdd(sums[i], s, lanes[i]);
                }

                mins += HalfBits.ToSingleNoSubnormals(*(ushort*)(blk + 2)) * xs1[(t * (long)blocks) + b];
            }

            output[t * outStride] = GgmlArithmetic.Sum8Scalar(lanes) + mins;
        }
    }

    /// <summary>AVX2 path of <see cref="DotQ4_1"/>: eight blocks at a time, their codes unpacked once for all tokens.</summary>
    public static void DotQ4_1Avx2(byte* row, int blocks, int tokens, bool fiveBit, sbyte* xq, float* xd, float* xs1, float* output, long outStride)
    {
        CheckTokens(tokens);
        int bytes = fiveBit ? Q5_1BlockBytes : Q4_1BlockBytes;
        long xStride = (long)blocks * 32;
        var ones = Vector256.Create((short)1);
        Vector256<float>* acc = stackalloc Vector256<float>[4];
        float* mins = stackalloc float[4];
        for (int t = 0; t < 4; t++)
        {
            acc[t] = Vector256<float>.Zero;
            mins[t] = 0;
        }

        int b = 0;
        for (; b + 8 <= blocks; b += 8)
        {
            byte* g = row + (b * bytes);
            var dw = HalfBits.ToSingle8(Vector128.Create(
                *(ushort*)g, *(ushort*)(g + bytes), *(ushort*)(g + (2 * bytes)), *(ushort*)(g + (3 * bytes)),
                *(ushort*)(g + (4 * bytes)), *(ushort*)(g + (5 * bytes)), *(ushort*)(g + (6 * bytes)), *(ushort*)(g + (7 * bytes))));
            var mw = HalfBits.ToSingle8(Vector128.Create(
                *(ushort*)(g + 2), *(ushort*)(g + bytes + 2), *(ushort*)(g + (2 * bytes) + 2), *(ushort*)(g + (3 * bytes) + 2),
                *(ushort*)(g + (4 * bytes) + 2), *(ushort*)(g + (5 * bytes) + 2), *(ushort*)(g + (6 * bytes) + 2), *(ushort*)(g + (7 * bytes) + 2)));
            var c0 = Q4_1Codes(g, fiveBit);
            var c1 = Q4_1Codes(g + bytes, fiveBit);
            var c2 = Q4_1Codes(g + (2 * bytes), fiveBit);
            var c3 = Q4_1Codes(g + (3 * bytes), fiveBit);
            var c4 = Q4_1Codes(g + (4 * bytes), fiveBit);
            var c5 = Q4_1Codes(g + (5 * bytes), fiveBit);
            var c6 = Q4_1Codes(g + (6 * bytes), fiveBit);
            var c7 = Q4_1Codes(g + (7 * bytes), fiveBit);
            for (int t = 0; t < tokens; t++)
            {
                sbyte* x = xq + (t * xStride) + (b * 32);
                var ds = dw * Avx.LoadVector256(xd + (t * (long)blocks) + b);
                var ms = mw * Avx.LoadVector256(xs1 + (t * (long)blocks) + b);
                float mt = mins[t];
                mt += ms.GetElement(0);
                mt += ms.GetElement(1);
                mt += ms.GetElement(2);
                mt += ms.GetElement(3);
                mt += ms.GetElement(4);
                mt += ms.GetElement(5);
                mt += ms.GetElement(6);
                mins[t] = mt + ms.GetElement(7);
                acc[t] = AddScaledBlocks(acc[t], ds,
                    CodeSum(c0, x, ones), CodeSum(c1, x + 32, ones), CodeSum(c2, x + 64, ones), CodeSum(c3, x + 96, ones), CodeSum(c4, x + 128, ones), CodeSum(c5, x + 160, ones), CodeSum(c6, x + 192, ones), CodeSum(c7, x + 224, ones));
            }
        }

        for (; b < blocks; b++)
        {
            byte* blk = row + (b * bytes);
            var c = Q4_1Codes(blk, fiveBit);
            float d = HalfBits.ToSingleNoSubnormals(*(ushort*)blk);
            float m = HalfBits.ToSingleNoSubnormals(*(ushort*)(blk + 2));
            for (int t = 0; t < tokens; t++)
            {
                acc[t] = Fma.MultiplyAdd(CodeSum(c, xq + (t * xStride) + (b * 32), ones), Vector256.Create(d * xd[(t * (long)blocks) + b]), acc[t]);
                mins[t] += m * xs1[(t * (long)blocks) + b];
            }
        }

        for (int t = 0; t < tokens; t++)
        {
            output[t * outStride] = GgmlArithmetic.Sum8(acc[t]) + mins[t];
        }
    }

    // A Q4_1 / Q5_1 block's 32 unsigned codes in element order (low nibbles, then high ones; Q5_1: bit e of qh as bit 4 of code e,
    // its byte e / 8 spread over 8 bytes, each tested against its own bit).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<byte> Q4_1Codes(byte* blk, bool fiveBit)
    {
        var nibble = Vector128.Create((byte)0xF);
        var v = Sse2.LoadVector128(blk + (fiveBit ? 8 : 4));
        var codes = Vector256.Create(v & nibble, Sse2.ShiftRightLogical(v.AsUInt16(), 4).AsByte() & nibble);
        if (fiveBit)
        {
            var spread = Vector256.Create((byte)0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
            var bit = Vector256.Create((byte)1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128);
            var h = Avx2.Shuffle(Vector256.Create(*(uint*)(blk + 4)).AsByte(), spread);
            codes |= Vector256.Equals(h & bit, bit) & Vector256.Create((byte)0x10);
        }

        return codes;
    }

    // Unsigned codes times the block's activations, exact in 8 int32 lanes (lane i: values 4i..4i+3), as floats.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> CodeSum(Vector256<byte> codes, sbyte* x, Vector256<short> ones)
        => Avx.ConvertToVector256Single(Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(codes, Avx.LoadVector256(x)), ones));

    // Byte-shuffle masks that turn 16 unsigned byte scales (both 128-bit halves alike) into the 16-bit lanes of the k-th 32 values:
    // scale 2k in the low half's 8 lanes, scale 2k + 1 in the high half's (high bytes zero).
    private static readonly Vector256<sbyte>[] ScalePairMasks = Enumerable.Range(0, 8).Select(k =>
    {
        var m = new sbyte[32];
        for (int i = 0; i < 16; i++)
        {
            m[i] = i % 2 == 0 ? (sbyte)(2 * k) : (sbyte)-128;
            m[16 + i] = i % 2 == 0 ? (sbyte)((2 * k) + 1) : (sbyte)-128;
        }

        return Vector256.Create(m);
    }).ToArray();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<byte> ScalePairMask(int k) => ScalePairMasks[k].AsByte();

    // The 16 IQ4 levels in both 128-bit halves, for a byte shuffle.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<sbyte> Iq4Table()
    {
        var kv = RowDequantizer.Iq4Values;
        fixed (sbyte* p = kv)
        {
            var half = Sse2.LoadVector128(p);
            return Vector256.Create(half, half);
        }
    }

    // A block's 32 weights in element order: the 16 low nibbles (elements 0..15), then the 16 high ones (16..31).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<sbyte> Iq4Weights(Vector256<sbyte> table, byte* qs)
    {
        var v = Sse2.LoadVector128(qs);
        var low = v & Vector128.Create((byte)0xF);
        var high = Sse2.ShiftRightLogical(v.AsUInt16(), 4).AsByte() & Vector128.Create((byte)0xF);
        return Avx2.Shuffle(table, Vector256.Create(low, high).AsSByte());
    }

    // Two consecutive blocks' weights from one 32-byte load: low and high nibbles looked up in place (block a's in the low
    // halves, block b's in the high ones), then the halves regrouped per block.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Iq4WeightPair(Vector256<sbyte> table, byte* qs, out Vector256<sbyte> a, out Vector256<sbyte> b)
    {
        var v = Avx.LoadVector256(qs);
        var nibble = Vector256.Create((byte)0xF);
        var low = Avx2.Shuffle(table, (v & nibble).AsSByte());
        var high = Avx2.Shuffle(table, (Vector256.ShiftRightLogical(v.AsUInt16(), 4).AsByte() & nibble).AsSByte());
        a = Avx2.Permute2x128(low, high, 0x20);
        b = Avx2.Permute2x128(low, high, 0x31);
    }

    private static void CheckTokens(int tokens)
    {
        if (tokens is < 1 or > 4)
        {
            throw new ArgumentOutOfRangeException(nameof(tokens), tokens, "1 to 4 tokens per call");
        }
    }
}
