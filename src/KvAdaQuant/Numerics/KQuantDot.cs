using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace KvAdaQuant.Numerics;

/// <summary>
/// Dot products of one Q4_K or Q6_K weight row (super-blocks of 256 values) with up to four activation vectors
/// quantized to Q8_K (<see cref="Q8KActivations"/>: int8 in blocks of 256, one float scale, sums of 16), as llama.cpp
/// pairs them. Each weight super-block is loaded and unpacked once for all the tokens (prefill batches). Per token and
/// super-block the products are summed exactly in 8 integer lanes (lane i: the values 4i..4i+3 of each 32-block, times
/// their 6-bit or int8 scale), converted and fused-added times (activation scale x d) into 8 float lanes, which are summed
/// at the end in <see cref="GgmlArithmetic.Sum8(Vector256{float})"/>'s order; Q4_K's minimums are summed exactly per
/// super-block from the 16-value sums and subtracted as one float per super-block. So the AVX2 path and its scalar twin
/// give the same bits, and a token gives the same bits alone or in a batch. Token t's activations start at
/// t x (superBlocks x 256) values, t x superBlocks scales and t x (superBlocks x 16) sums.
/// </summary>
public static unsafe class KQuantDot
{
    /// <summary>Bytes of one Q4_K super-block: d, dmin (FP16), 12 bytes of packed 6-bit scales and mins, 128 bytes of nibbles.</summary>
    public const int Q4_KBlockBytes = 144;

    /// <summary>Bytes of one Q6_K super-block: ql[128] (low 4 bits), qh[64] (high 2 bits), 16 int8 scales, d (FP16).</summary>
    public const int Q6_KBlockBytes = 210;

    /// <summary>
    /// True when the AVX2 path runs on this machine. (AVX-512 variants, two 32-blocks per instruction, measured slower on
    /// this machine's cores and were dropped: README, K-quant weights.)
    /// </summary>
    public static bool VectorPathSupported => Avx2.IsSupported && Fma.IsSupported;

    /// <summary>output[t * outStride] = row · x_t for t &lt; <paramref name="tokens"/> (1 to 4), a Q6_K row.</summary>
    public static void DotQ6_K(byte* row, int superBlocks, int tokens, sbyte* xq, float* xd, float* output, long outStride)
    {
        if (VectorPathSupported)
        {
            DotQ6_KAvx2(row, superBlocks, tokens, xq, xd, output, outStride);
        }
        else
        {
            DotQ6_KScalar(row, superBlocks, tokens, xq, xd, output, outStride);
        }
    }

    /// <summary>
    /// Scalar twin of <see cref="DotQ6_K"/>. Value e of a super-block is d * scale_(e/16) * (q_e - 32), q the 6-bit value.
    /// </summary>
    public static void DotQ6_KScalar(byte* row, int superBlocks, int tokens, sbyte* xq, float* xd, float* output, long outStride)
    {
        CheckTokens(tokens);
        Span<float> lanes = stackalloc float[8];
        Span<int> sums = stackalloc int[8];
        for (int t = 0; t < tokens; t++)
        {
            lanes.Clear();
            sbyte* x = xq + ((long)t * superBlocks * 256);
            float* dx = xd + ((long)t * superBlocks);
            for (int b = 0; b < superBlocks; b++)
            {
                byte* blk = row + (b * Q6_KBlockBytes);
                float d = HalfBits.ToSingle(*(ushort*)(blk + 208));
                sbyte* sc = (sbyte*)(blk + 192);
                sums.Clear();
                for (int e = 0; e < 256; e++)
                {
                    sums[(e % 32) / 4] += sc[e / 16] * (Q6Value(blk, e) - 32) * x[(b * 256) + e];
                }

                float s = d * dx[b];
                for (int i = 0; i < 8; i++)
                {
                    lanes[i] = MathF.FusedMultiplyAdd(sums[i], s, lanes[i]);
                }
            }

            output[t * outStride] = GgmlArithmetic.Sum8Scalar(lanes);
        }
    }

    /// <summary>The unsigned 6-bit value of element <paramref name="e"/> (0..255) of a Q6_K super-block (ggml's layout).</summary>
    public static int Q6Value(byte* blk, int e)
    {
        int h = e / 128, g = (e % 128) / 32, l = e % 32;
        byte ql = blk[(h * 64) + ((g % 2) * 32) + l];
        byte qh = blk[128 + (h * 32) + l];
        int low = g < 2 ? ql & 0x0F : ql >> 4;
        return low | (((qh >> (2 * g)) & 3) << 4);
    }

    /// <summary>AVX2 path of <see cref="DotQ6_K"/>: the 6-bit values unpacked once per super-block for all tokens.</summary>
    public static void DotQ6_KAvx2(byte* row, int superBlocks, int tokens, sbyte* xq, float* xd, float* output, long outStride)
    {
        CheckTokens(tokens);
        long xStride = (long)superBlocks * 256;
        var acc0 = Vector256<float>.Zero;
        var acc1 = Vector256<float>.Zero;
        var acc2 = Vector256<float>.Zero;
        var acc3 = Vector256<float>.Zero;
        var m4 = Vector256.Create((byte)0x0F);
        var m30 = Vector256.Create((byte)0x30);

        // shuffles picking scale 2j into bytes 0-7 and scale 2j+1 into bytes 8-15, j = 0..7
        byte* pick = stackalloc byte[8 * 16];
        for (int j = 0; j < 8; j++)
        {
            (Vector128.Create((byte)0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1) + Vector128.Create((byte)(2 * j))).Store(pick + (j * 16));
        }

        for (int b = 0; b < superBlocks; b++)
        {
            byte* blk = row + (b * Q6_KBlockBytes);
            float d = HalfBits.ToSingle(*(ushort*)(blk + 208));
            var scales = Sse2.LoadVector128(blk + 192);
            var s0 = Vector256<int>.Zero;
            var s1 = Vector256<int>.Zero;
            var s2 = Vector256<int>.Zero;
            var s3 = Vector256<int>.Zero;
            sbyte* x = xq + (b * 256);
            for (int h = 0; h < 2; h++)
            {
                var ql0 = Avx.LoadVector256(blk + (h * 64));
                var ql1 = Avx.LoadVector256(blk + (h * 64) + 32);
                var qh = Avx.LoadVector256(blk + 128 + (h * 32));
                var u0 = (ql0 & m4) | (Avx2.ShiftLeftLogical(qh.AsUInt16(), 4).AsByte() & m30);
                var u1 = (ql1 & m4) | (Avx2.ShiftLeftLogical(qh.AsUInt16(), 2).AsByte() & m30);
                var u2 = (Avx2.ShiftRightLogical(ql0.AsUInt16(), 4).AsByte() & m4) | (qh & m30);
                var u3 = (Avx2.ShiftRightLogical(ql1.AsUInt16(), 4).AsByte() & m4) | (Avx2.ShiftRightLogical(qh.AsUInt16(), 2).AsByte() & m30);
                int j = h * 4;
                var c0 = Q6Scales(scales, pick, j);
                var c1 = Q6Scales(scales, pick, j + 1);
                var c2 = Q6Scales(scales, pick, j + 2);
                var c3 = Q6Scales(scales, pick, j + 3);
                sbyte* xh = x + (j * 32);
                s0 += Q6Lanes(u0, c0, xh) + Q6Lanes(u1, c1, xh + 32) + Q6Lanes(u2, c2, xh + 64) + Q6Lanes(u3, c3, xh + 96);
                if (tokens > 1)
                {
                    xh += xStride;
                    s1 += Q6Lanes(u0, c0, xh) + Q6Lanes(u1, c1, xh + 32) + Q6Lanes(u2, c2, xh + 64) + Q6Lanes(u3, c3, xh + 96);
                    if (tokens > 2)
                    {
                        xh += xStride;
                        s2 += Q6Lanes(u0, c0, xh) + Q6Lanes(u1, c1, xh + 32) + Q6Lanes(u2, c2, xh + 64) + Q6Lanes(u3, c3, xh + 96);
                        if (tokens > 3)
                        {
                            xh += xStride;
                            s3 += Q6Lanes(u0, c0, xh) + Q6Lanes(u1, c1, xh + 32) + Q6Lanes(u2, c2, xh + 64) + Q6Lanes(u3, c3, xh + 96);
                        }
                    }
                }
            }

            acc0 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(s0), Vector256.Create(d * xd[b]), acc0);
            if (tokens > 1)
            {
                acc1 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(s1), Vector256.Create(d * xd[superBlocks + b]), acc1);
                if (tokens > 2)
                {
                    acc2 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(s2), Vector256.Create(d * xd[(2 * superBlocks) + b]), acc2);
                    if (tokens > 3)
                    {
                        acc3 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(s3), Vector256.Create(d * xd[(3 * superBlocks) + b]), acc3);
                    }
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

    /// <summary>As <see cref="DotQ6_K"/> for a Q4_K row (value l of sub-block j: d * scale_j * q - dmin * min_j).</summary>
    public static void DotQ4_K(byte* row, int superBlocks, int tokens, sbyte* xq, float* xd, short* xsum, float* output, long outStride)
    {
        if (VectorPathSupported)
        {
            DotQ4_KAvx2(row, superBlocks, tokens, xq, xd, xsum, output, outStride);
        }
        else
        {
            DotQ4_KScalar(row, superBlocks, tokens, xq, xd, xsum, output, outStride);
        }
    }

    /// <summary>
    /// Scalar twin of <see cref="DotQ4_K"/>: per super-block the lanes' integer sums of scale_j q x, fused-added times
    /// d x (activation scale); the minimums' integer sum, min_j x (sum of the activations of sub-block j), added times
    /// dmin x (activation scale) to one float, which is subtracted from the lanes' sum at the end.
    /// </summary>
    public static void DotQ4_KScalar(byte* row, int superBlocks, int tokens, sbyte* xq, float* xd, short* xsum, float* output, long outStride)
    {
        CheckTokens(tokens);
        Span<float> lanes = stackalloc float[8];
        Span<int> sums = stackalloc int[8];
        for (int t = 0; t < tokens; t++)
        {
            lanes.Clear();
            float mins = 0;
            sbyte* x = xq + ((long)t * superBlocks * 256);
            float* dx = xd + ((long)t * superBlocks);
            short* sx = xsum + ((long)t * superBlocks * 16);
            for (int b = 0; b < superBlocks; b++)
            {
                byte* blk = row + (b * Q4_KBlockBytes);
                float d = HalfBits.ToSingle(*(ushort*)blk);
                float dmin = HalfBits.ToSingle(*(ushort*)(blk + 2));
                sums.Clear();
                int summ = 0;
                for (int j = 0; j < 8; j++)
                {
                    QuantizedDot.ScaleMinK4(j, blk + 4, out int sc, out int m);
                    byte* q = blk + 16 + ((j / 2) * 32);
                    int shift = (j % 2) * 4;
                    for (int e = 0; e < 32; e++)
                    {
                        sums[e / 4] += sc * ((q[e] >> shift) & 0x0F) * x[(b * 256) + (j * 32) + e];
                    }

                    summ += m * (sx[(b * 16) + (2 * j)] + sx[(b * 16) + (2 * j) + 1]);
                }

                float s = d * dx[b];
                for (int i = 0; i < 8; i++)
                {
                    lanes[i] = MathF.FusedMultiplyAdd(sums[i], s, lanes[i]);
                }

                mins += dmin * dx[b] * summ;
            }

            output[t * outStride] = GgmlArithmetic.Sum8Scalar(lanes) - mins;
        }
    }

    /// <summary>AVX2 path of <see cref="DotQ4_K"/>: the nibbles and 6-bit scales of each super-block unpacked once for all tokens.</summary>
    public static void DotQ4_KAvx2(byte* row, int superBlocks, int tokens, sbyte* xq, float* xd, short* xsum, float* output, long outStride)
    {
        CheckTokens(tokens);
        long xStride = (long)superBlocks * 256;
        var acc0 = Vector256<float>.Zero;
        var acc1 = Vector256<float>.Zero;
        var acc2 = Vector256<float>.Zero;
        var acc3 = Vector256<float>.Zero;
        float mins0 = 0, mins1 = 0, mins2 = 0, mins3 = 0;
        var low = Vector256.Create((byte)0x0F);

        // shuffles picking scale j's two bytes into every 16-bit lane, j = 0..7 (loaded, not rebuilt, in the loop)
        byte* pickScale = stackalloc byte[8 * 32];
        for (int j = 0; j < 8; j++)
        {
            Vector256.Create((ushort)(0x0100 + (0x0202 * j))).AsByte().Store(pickScale + (j * 32));
        }

        for (int b = 0; b < superBlocks; b++)
        {
            byte* blk = row + (b * Q4_KBlockBytes);
            float d = HalfBits.ToSingle(*(ushort*)blk);
            float dmin = HalfBits.ToSingle(*(ushort*)(blk + 2));

            // ggml's 6-bit unpacking, four sub-blocks per 32-bit word: scales 0-7, then mins 0-7, one byte each.
            uint w0 = *(uint*)(blk + 4), w1 = *(uint*)(blk + 8), w2 = *(uint*)(blk + 12);
            ulong scaleBytes = (w0 & 0x3F3F3F3Fu) | ((ulong)((w2 & 0x0F0F0F0Fu) | (((w0 >> 6) & 0x03030303u) << 4)) << 32);
            ulong minBytes = (w1 & 0x3F3F3F3Fu) | ((ulong)(((w2 >> 4) & 0x0F0F0F0Fu) | (((w1 >> 6) & 0x03030303u) << 4)) << 32);
            var scales = Sse41.ConvertToVector128Int16(Vector128.CreateScalarUnsafe(scaleBytes).AsByte());
            var mins = Sse41.ConvertToVector128Int16(Vector128.CreateScalarUnsafe(minBytes).AsByte());
            var scales2 = Vector256.Create(scales, scales).AsByte();

            var s0 = Vector256<int>.Zero;
            var s1 = Vector256<int>.Zero;
            var s2 = Vector256<int>.Zero;
            var s3 = Vector256<int>.Zero;
            sbyte* x = xq + (b * 256);
            for (int c = 0; c < 4; c++)
            {
                var q = Avx.LoadVector256(blk + 16 + (c * 32));
                var lo = q & low;
                var hi = Avx2.ShiftRightLogical(q.AsUInt16(), 4).AsByte() & low;
                var sc0 = Avx2.Shuffle(scales2, Avx.LoadVector256(pickScale + (c * 64))).AsInt16();
                var sc1 = Avx2.Shuffle(scales2, Avx.LoadVector256(pickScale + (c * 64) + 32)).AsInt16();
                sbyte* xc = x + (c * 64);
                s0 += Q4Lanes(lo, sc0, hi, sc1, xc);
                if (tokens > 1)
                {
                    xc += xStride;
                    s1 += Q4Lanes(lo, sc0, hi, sc1, xc);
                    if (tokens > 2)
                    {
                        xc += xStride;
                        s2 += Q4Lanes(lo, sc0, hi, sc1, xc);
                        if (tokens > 3)
                        {
                            s3 += Q4Lanes(lo, sc0, hi, sc1, xc + xStride);
                        }
                    }
                }
            }

            acc0 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(s0), Vector256.Create(d * xd[b]), acc0);
            mins0 += dmin * xd[b] * MinSum(mins, xsum + (b * 16));
            if (tokens > 1)
            {
                long o = superBlocks + b;
                acc1 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(s1), Vector256.Create(d * xd[o]), acc1);
                mins1 += dmin * xd[o] * MinSum(mins, xsum + (o * 16));
                if (tokens > 2)
                {
                    o += superBlocks;
                    acc2 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(s2), Vector256.Create(d * xd[o]), acc2);
                    mins2 += dmin * xd[o] * MinSum(mins, xsum + (o * 16));
                    if (tokens > 3)
                    {
                        o += superBlocks;
                        acc3 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(s3), Vector256.Create(d * xd[o]), acc3);
                        mins3 += dmin * xd[o] * MinSum(mins, xsum + (o * 16));
                    }
                }
            }
        }

        output[0] = GgmlArithmetic.Sum8(acc0) - mins0;
        if (tokens > 1)
        {
            output[outStride] = GgmlArithmetic.Sum8(acc1) - mins1;
        }

        if (tokens > 2)
        {
            output[2 * outStride] = GgmlArithmetic.Sum8(acc2) - mins2;
        }

        if (tokens > 3)
        {
            output[3 * outStride] = GgmlArithmetic.Sum8(acc3) - mins3;
        }
    }

    private static void CheckTokens(int tokens)
    {
        if (tokens is < 1 or > 4)
        {
            throw new ArgumentOutOfRangeException(nameof(tokens), tokens, "K-quant dot products take 1 to 4 tokens at once");
        }
    }

    // sum_j min_j x (sums of 16 values 2j and 2j+1): exact (at most 63 x 2 x 16 x 127 per term).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int MinSum(Vector128<short> mins, short* sums16)
    {
        var pairs = Ssse3.HorizontalAdd(Sse2.LoadVector128(sums16), Sse2.LoadVector128(sums16 + 8));
        return Vector128.Sum(Sse2.MultiplyAddAdjacent(mins, pairs));
    }

    // 16 int16 lanes: 8 x scale 2j (values 0-15 of 32-block j), then 8 x scale 2j+1 (values 16-31).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<short> Q6Scales(Vector128<byte> scales, byte* pick, int j)
        => Avx2.ConvertToVector256Int16(Ssse3.Shuffle(scales, Sse2.LoadVector128(pick + (j * 16))).AsSByte());

    // Lane i: scale * sum over values 4i..4i+3 of (u - 32) x, exactly: the 16-bit pair sums u x (at most 2 x 63 x 128)
    // minus 32 (x0 + x1) stay within 16 bits; a super-block's lane sums stay below 8 x 4 x 32 x 127 x 128 < 2^24.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> Q6Lanes(Vector256<byte> u, Vector256<short> scales, sbyte* x)
    {
        var xv = Avx.LoadVector256(x);
        return Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(u, xv) - Avx2.MultiplyAddAdjacent(Vector256.Create((byte)32), xv), scales);
    }

    // Lane i: scale * sum over values 4i..4i+3 of q x for the low-nibble block (values 0-31 of x) plus the same for the
    // high-nibble block (values 32-63): 16-bit pair sums at most 2 x 15 x 128, 32-bit sums below 8 x 63 x 4 x 15 x 128.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> Q4Lanes(Vector256<byte> lo, Vector256<short> scLo, Vector256<byte> hi, Vector256<short> scHi, sbyte* x)
        => Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(lo, Avx.LoadVector256(x)), scLo)
            + Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(hi, Avx.LoadVector256(x + 32)), scHi);
}
