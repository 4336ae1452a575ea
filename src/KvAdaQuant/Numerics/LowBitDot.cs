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

                acc = MathF.FusedMultiplyAdd(sum, HalfBits.ToSingle(*(ushort*)(blk + 80)) * dx[b], acc);
                mins = MathF.FusedMultiplyAdd(summ, HalfBits.ToSingle(*(ushort*)(blk + 82)) * dx[b], mins);
            }

            output[t * outStride] = acc - mins;
        }
    }

    /// <summary>AVX2 path of <see cref="DotQ2_K"/>: each super-block's codes unpacked once for all tokens.</summary>
    public static void DotQ2_KAvx2(byte* row, int superBlocks, int tokens, sbyte* xq, float* xd, short* xsum, float* output, long outStride)
    {
        CheckTokens(tokens);
        long xStride = (long)superBlocks * 256;
        Vector256<byte>* codes = stackalloc Vector256<byte>[8];
        Vector256<short>* scales = stackalloc Vector256<short>[8];
        float* acc = stackalloc float[4];
        float* mins = stackalloc float[4];
        for (int t = 0; t < 4; t++)
        {
            acc[t] = 0;
            mins[t] = 0;
        }

        var three = Vector256.Create((byte)3);
        for (int b = 0; b < superBlocks; b++)
        {
            byte* blk = row + (b * Q2_KBlockBytes);
            for (int h = 0; h < 2; h++)
            {
                var v = Avx.LoadVector256(blk + 16 + (32 * h)).AsUInt16();
                for (int s = 0; s < 4; s++)
                {
                    int j = (8 * h) + (2 * s);
                    codes[(4 * h) + s] = Vector256.ShiftRightLogical(v, 2 * s).AsByte() & three;
                    scales[(4 * h) + s] = Vector256.Create(Vector128.Create((short)(blk[j] & 0xF)), Vector128.Create((short)(blk[j + 1] & 0xF)));
                }
            }

            var minWords = Avx2.ConvertToVector256Int16(Sse2.ShiftRightLogical(Sse2.LoadVector128(blk).AsUInt16(), 4).AsByte() & Vector128.Create((byte)0xF));
            float d = HalfBits.ToSingle(*(ushort*)(blk + 80));
            float dmin = HalfBits.ToSingle(*(ushort*)(blk + 82));
            for (int t = 0; t < tokens; t++)
            {
                sbyte* x = xq + (t * xStride) + (b * 256);
                var sum = Vector256<int>.Zero;
                for (int k = 0; k < 8; k++)
                {
                    var p = Avx2.MultiplyAddAdjacent(codes[k], Avx.LoadVector256(x + (32 * k)));
                    sum += Avx2.MultiplyAddAdjacent(p, scales[k]);
                }

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

                acc = MathF.FusedMultiplyAdd(sum, HalfBits.ToSingle(*(ushort*)(row + (b * Q3_KBlockBytes) + 108)) * dx[b], acc);
            }

            output[t * outStride] = acc;
        }
    }

    /// <summary>AVX2 path of <see cref="DotQ3_K"/>: unsigned codes 0..7 (value + 4) unpacked once for all tokens, minus 4 x scale x the 16-value sums.</summary>
    public static void DotQ3_KAvx2(byte* row, int superBlocks, int tokens, sbyte* xq, float* xd, short* xsum, float* output, long outStride)
    {
        CheckTokens(tokens);
        long xStride = (long)superBlocks * 256;
        Vector256<byte>* codes = stackalloc Vector256<byte>[8];
        Vector256<short>* scales = stackalloc Vector256<short>[8];
        short* sc = stackalloc short[16];
        float* acc = stackalloc float[4];
        for (int t = 0; t < 4; t++)
        {
            acc[t] = 0;
        }

        var three = Vector256.Create((byte)3);
        var one = Vector256.Create((byte)1);
        for (int b = 0; b < superBlocks; b++)
        {
            byte* blk = row + (b * Q3_KBlockBytes);
            var packed = new ReadOnlySpan<byte>(blk + 96, 12);
            for (int j = 0; j < 16; j++)
            {
                sc[j] = (short)RowDequantizer.ScaleQ3_K(j, packed);
            }

            var hm = Avx.LoadVector256(blk).AsUInt16();
            for (int h = 0; h < 2; h++)
            {
                var v = Avx.LoadVector256(blk + 32 + (32 * h)).AsUInt16();
                for (int s = 0; s < 4; s++)
                {
                    int j = (8 * h) + (2 * s);
                    var high = Vector256.ShiftRightLogical(hm, (4 * h) + s).AsByte() & one;
                    codes[(4 * h) + s] = (Vector256.ShiftRightLogical(v, 2 * s).AsByte() & three) | Vector256.ShiftLeft(high.AsUInt16(), 2).AsByte();
                    scales[(4 * h) + s] = Vector256.Create(Vector128.Create(sc[j]), Vector128.Create(sc[j + 1]));
                }
            }

            var scaleWords = Avx.LoadVector256(sc);
            float d = HalfBits.ToSingle(*(ushort*)(blk + 108));
            for (int t = 0; t < tokens; t++)
            {
                sbyte* x = xq + (t * xStride) + (b * 256);
                var sum = Vector256<int>.Zero;
                for (int k = 0; k < 8; k++)
                {
                    var p = Avx2.MultiplyAddAdjacent(codes[k], Avx.LoadVector256(x + (32 * k)));
                    sum += Avx2.MultiplyAddAdjacent(p, scales[k]);
                }

                var offset = Avx2.MultiplyAddAdjacent(scaleWords, Avx.LoadVector256(xsum + (t * (long)superBlocks * 16) + (b * 16)));
                int total = Vector256.Sum(sum) - (4 * Vector256.Sum(offset));
                acc[t] = MathF.FusedMultiplyAdd(total, d * xd[(t * (long)superBlocks) + b], acc[t]);
            }
        }

        for (int t = 0; t < tokens; t++)
        {
            output[t * outStride] = acc[t];
        }
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

                acc = MathF.FusedMultiplyAdd(sum, HalfBits.ToSingle(*(ushort*)blk) * dx[b], acc);
            }

            output[t * outStride] = acc;
        }
    }

    /// <summary>AVX2 path of <see cref="DotIq4_XS"/>: codes looked up once per super-block for all tokens.</summary>
    public static void DotIq4_XSAvx2(byte* row, int superBlocks, int tokens, sbyte* xq, float* xd, float* output, long outStride)
    {
        CheckTokens(tokens);
        long xStride = (long)superBlocks * 256;
        Vector256<sbyte>* weights = stackalloc Vector256<sbyte>[8];
        Vector256<short>* scales = stackalloc Vector256<short>[8];
        float* acc = stackalloc float[4];
        for (int t = 0; t < 4; t++)
        {
            acc[t] = 0;
        }

        var table = Iq4Table();
        for (int b = 0; b < superBlocks; b++)
        {
            byte* blk = row + (b * Iq4_XSBlockBytes);
            ushort h = *(ushort*)(blk + 2);
            var scalesL = new ReadOnlySpan<byte>(blk + 4, 4);
            for (int ib = 0; ib < 8; ib++)
            {
                weights[ib] = Iq4Weights(table, blk + 8 + (16 * ib));
                scales[ib] = Vector256.Create((short)(RowDequantizer.ScaleIq4_XS(ib, h, scalesL) - 32));
            }

            float d = HalfBits.ToSingle(*(ushort*)blk);
            for (int t = 0; t < tokens; t++)
            {
                sbyte* x = xq + (t * xStride) + (b * 256);
                var sum = Vector256<int>.Zero;
                for (int ib = 0; ib < 8; ib++)
                {
                    var w = weights[ib];
                    var p = Avx2.MultiplyAddAdjacent(Avx2.Abs(w), Avx2.Sign(Avx.LoadVector256(x + (32 * ib)), w));
                    sum += Avx2.MultiplyAddAdjacent(p, scales[ib]);
                }

                acc[t] = MathF.FusedMultiplyAdd(Vector256.Sum(sum), d * xd[(t * (long)superBlocks) + b], acc[t]);
            }
        }

        for (int t = 0; t < tokens; t++)
        {
            output[t * outStride] = acc[t];
        }
    }

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

                float s = HalfBits.ToSingle(*(ushort*)blk) * dx[b];
                for (int i = 0; i < 8; i++)
                {
                    lanes[i] = MathF.FusedMultiplyAdd(sums[i], s, lanes[i]);
                }
            }

            output[t * outStride] = GgmlArithmetic.Sum8Scalar(lanes);
        }
    }

    /// <summary>AVX2 path of <see cref="DotIq4_NL"/>.</summary>
    public static void DotIq4_NLAvx2(byte* row, int blocks, int tokens, sbyte* xq, float* xd, float* output, long outStride)
    {
        CheckTokens(tokens);
        long xStride = (long)blocks * 32;
        var table = Iq4Table();
        var ones = Vector256.Create((short)1);
        var acc0 = Vector256<float>.Zero;
        var acc1 = Vector256<float>.Zero;
        var acc2 = Vector256<float>.Zero;
        var acc3 = Vector256<float>.Zero;
        for (int b = 0; b < blocks; b++)
        {
            byte* blk = row + (b * Iq4_NLBlockBytes);
            var w = Iq4Weights(table, blk + 2);
            var aw = Avx2.Abs(w);
            float d = HalfBits.ToSingle(*(ushort*)blk);
            for (int t = 0; t < tokens; t++)
            {
                var p = Avx2.MultiplyAddAdjacent(aw, Avx2.Sign(Avx.LoadVector256(xq + (t * xStride) + (b * 32)), w));
                var sum = Avx.ConvertToVector256Single(Avx2.MultiplyAddAdjacent(p, ones));
                var s = Vector256.Create(d * xd[(t * (long)blocks) + b]);
                switch (t)
                {
                    case 0:
                        acc0 = Fma.MultiplyAdd(sum, s, acc0);
                        break;
                    case 1:
                        acc1 = Fma.MultiplyAdd(sum, s, acc1);
                        break;
                    case 2:
                        acc2 = Fma.MultiplyAdd(sum, s, acc2);
                        break;
                    default:
                        acc3 = Fma.MultiplyAdd(sum, s, acc3);
                        break;
                }
            }
        }

        output[0] = GgmlArithmetic.Sum8(acc0);
        if (tokens > 1)
        {
            output[outStride] = GgmlArithmetic.Sum8(acc1);
        }

        if (tokens > 2)
        {
            output[2 * outStride] = GgmlArithmetic.Sum8(acc2);
        }

        if (tokens > 3)
        {
            output[3 * outStride] = GgmlArithmetic.Sum8(acc3);
        }
    }

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

    private static void CheckTokens(int tokens)
    {
        if (tokens is < 1 or > 4)
        {
            throw new ArgumentOutOfRangeException(nameof(tokens), tokens, "1 to 4 tokens per call");
        }
    }
}
