using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace KvAdaQuant.Numerics;

/// <summary>
/// Dot products of one Q4_K or Q6_K weight row (super-blocks of 256 values) with up to four activation vectors
/// quantized to int8 blocks of 32 (<see cref="Q8Activations"/>): each weight super-block is loaded and unpacked once for
/// all the tokens (prefill batches), and the integers of each 32-block are multiplied exactly. Per token, the float
/// arithmetic is fixed: 8 float lanes, lane i of block j fused-added as int_i(j) x (activation scale x weight scale), the
/// lanes summed in <see cref="GgmlArithmetic.Sum8(Vector256{float})"/>'s order at the end; so the AVX2 path (with or
/// without VNNI) and its scalar twin give the same bits, and one token gives the same bits alone or in a batch.
/// </summary>
public static unsafe class KQuantDot
{
    /// <summary>Bytes of one Q4_K super-block: d, dmin (FP16), 12 bytes of packed 6-bit scales and mins, 128 bytes of nibbles.</summary>
    public const int Q4_KBlockBytes = 144;

    /// <summary>Bytes of one Q6_K super-block: ql[128] (low 4 bits), qh[64] (high 2 bits), 16 int8 scales, d (FP16).</summary>
    public const int Q6_KBlockBytes = 210;

    /// <summary>True when the vector path runs on this machine.</summary>
    public static bool VectorPathSupported => Avx2.IsSupported && Fma.IsSupported;

    /// <summary>
    /// output[t * outStride] = row · x_t for t &lt; <paramref name="tokens"/> (1 to 4); token t's int8 values at
    /// xq + t * xStride, its block scales at xd + t * dStride.
    /// </summary>
    public static void DotQ6_K(byte* row, int tokens, sbyte* xq, long xStride, float* xd, long dStride, int superBlocks, float* output, long outStride)
    {
        if (VectorPathSupported)
        {
            DotQ6_KAvx2(row, tokens, xq, xStride, xd, dStride, superBlocks, output, outStride);
        }
        else
        {
            DotQ6_KScalar(row, tokens, xq, xStride, xd, dStride, superBlocks, output, outStride);
        }
    }

    /// <summary>
    /// Scalar twin of <see cref="DotQ6_K"/>. Value l of sub-block s (16 values) is d * scale_s * (q - 32), q the 6-bit
    /// value; lane i of 32-block j is scale * sum over values 4i..4i+3 of (q - 32) x, the scale that of the values' sub-block.
    /// </summary>
    public static void DotQ6_KScalar(byte* row, int tokens, sbyte* xq, long xStride, float* xd, long dStride, int superBlocks, float* output, long outStride)
    {
        CheckTokens(tokens);
        Span<float> lanes = stackalloc float[8];
        for (int t = 0; t < tokens; t++)
        {
            lanes.Clear();
            sbyte* x = xq + (t * xStride);
            float* dx = xd + (t * dStride);
            for (int b = 0; b < superBlocks; b++)
            {
                byte* blk = row + (b * Q6_KBlockBytes);
                float d = HalfBits.ToSingle(*(ushort*)(blk + 208));
                sbyte* sc = (sbyte*)(blk + 192);
                for (int j = 0; j < 8; j++)
                {
                    int xb = (b * 8) + j;
                    float s = dx[xb] * d;
                    for (int i = 0; i < 8; i++)
                    {
                        int sum = 0;
                        for (int e = 4 * i; e < (4 * i) + 4; e++)
                        {
                            sum += (Q6Value(blk, (j * 32) + e) - 32) * x[(xb * 32) + e];
                        }

                        lanes[i] = MathF.FusedMultiplyAdd(sc[(2 * j) + (i / 4)] * sum, s, lanes[i]);
                    }
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
    public static void DotQ6_KAvx2(byte* row, int tokens, sbyte* xq, long xStride, float* xd, long dStride, int superBlocks, float* output, long outStride)
    {
        CheckTokens(tokens);
        var acc0 = Vector256<float>.Zero;
        var acc1 = Vector256<float>.Zero;
        var acc2 = Vector256<float>.Zero;
        var acc3 = Vector256<float>.Zero;
        var m4 = Vector256.Create((byte)0x0F);
        var m30 = Vector256.Create((byte)0x30);
        var pick = Vector128.Create((byte)0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
        for (int b = 0; b < superBlocks; b++)
        {
            byte* blk = row + (b * Q6_KBlockBytes);
            float d = HalfBits.ToSingle(*(ushort*)(blk + 208));
            var scales = Sse2.LoadVector128(blk + 192);
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
                Q6Block(u0, Q6Scales(scales, pick, j), (b * 8) + j, d, tokens, xq, xStride, xd, dStride, ref acc0, ref acc1, ref acc2, ref acc3);
                Q6Block(u1, Q6Scales(scales, pick, j + 1), (b * 8) + j + 1, d, tokens, xq, xStride, xd, dStride, ref acc0, ref acc1, ref acc2, ref acc3);
                Q6Block(u2, Q6Scales(scales, pick, j + 2), (b * 8) + j + 2, d, tokens, xq, xStride, xd, dStride, ref acc0, ref acc1, ref acc2, ref acc3);
                Q6Block(u3, Q6Scales(scales, pick, j + 3), (b * 8) + j + 3, d, tokens, xq, xStride, xd, dStride, ref acc0, ref acc1, ref acc2, ref acc3);
            }
        }

        Store(tokens, acc0, acc1, acc2, acc3, output, outStride);
    }

    /// <summary>As <see cref="DotQ6_K"/> for a Q4_K row (value l of sub-block j: d * scale_j * q - dmin * min_j).</summary>
    public static void DotQ4_K(byte* row, int tokens, sbyte* xq, long xStride, float* xd, int* xsum, long dStride, int superBlocks, float* output, long outStride)
    {
        if (VectorPathSupported)
        {
            DotQ4_KAvx2(row, tokens, xq, xStride, xd, xsum, dStride, superBlocks, output, outStride);
        }
        else
        {
            DotQ4_KScalar(row, tokens, xq, xStride, xd, xsum, dStride, superBlocks, output, outStride);
        }
    }

    /// <summary>
    /// Scalar twin of <see cref="DotQ4_K(byte*, int, sbyte*, long, float*, int*, long, int, float*, long)"/>: lane i of
    /// 32-block j is the sum over values 4i..4i+3 of q x, fused-added times (activation scale x d) x scale_j; the minimums
    /// are summed in one float, block after block, as activation scale x dmin x min_j x (sum of the block's int8 values),
    /// and subtracted from the lanes' sum at the end.
    /// </summary>
    public static void DotQ4_KScalar(byte* row, int tokens, sbyte* xq, long xStride, float* xd, int* xsum, long dStride, int superBlocks, float* output, long outStride)
    {
        CheckTokens(tokens);
        Span<float> lanes = stackalloc float[8];
        for (int t = 0; t < tokens; t++)
        {
            lanes.Clear();
            float mins = 0;
            sbyte* x = xq + (t * xStride);
            float* dx = xd + (t * dStride);
            int* sx = xsum + (t * dStride);
            for (int b = 0; b < superBlocks; b++)
            {
                byte* blk = row + (b * Q4_KBlockBytes);
                float d = HalfBits.ToSingle(*(ushort*)blk);
                float dmin = HalfBits.ToSingle(*(ushort*)(blk + 2));
                for (int j = 0; j < 8; j++)
                {
                    QuantizedDot.ScaleMinK4(j, blk + 4, out int sc, out int m);
                    int xb = (b * 8) + j;
                    byte* q = blk + 16 + ((j / 2) * 32);
                    int shift = (j % 2) * 4;
                    float s = dx[xb] * d * sc;
                    for (int i = 0; i < 8; i++)
                    {
                        int sum = 0;
                        for (int e = 4 * i; e < (4 * i) + 4; e++)
                        {
                            sum += ((q[e] >> shift) & 0x0F) * x[(xb * 32) + e];
                        }

                        lanes[i] = MathF.FusedMultiplyAdd(sum, s, lanes[i]);
                    }

                    mins += dx[xb] * dmin * m * sx[xb];
                }
            }

            output[t * outStride] = GgmlArithmetic.Sum8Scalar(lanes) - mins;
        }
    }

    /// <summary>AVX2 (+VNNI) path of the Q4_K dot: the nibbles of each super-block split once for all tokens.</summary>
    public static void DotQ4_KAvx2(byte* row, int tokens, sbyte* xq, long xStride, float* xd, int* xsum, long dStride, int superBlocks, float* output, long outStride)
    {
        CheckTokens(tokens);
        var acc0 = Vector256<float>.Zero;
        var acc1 = Vector256<float>.Zero;
        var acc2 = Vector256<float>.Zero;
        var acc3 = Vector256<float>.Zero;
        float mins0 = 0, mins1 = 0, mins2 = 0, mins3 = 0;
        var low = Vector256.Create((byte)0x0F);
        for (int b = 0; b < superBlocks; b++)
        {
            byte* blk = row + (b * Q4_KBlockBytes);
            float d = HalfBits.ToSingle(*(ushort*)blk);
            float dmin = HalfBits.ToSingle(*(ushort*)(blk + 2));
            for (int c = 0; c < 4; c++)
            {
                var q = Avx.LoadVector256(blk + 16 + (c * 32));
                var lo = q & low;
                var hi = Avx2.ShiftRightLogical(q.AsUInt16(), 4).AsByte() & low;
                int j = 2 * c;
                QuantizedDot.ScaleMinK4(j, blk + 4, out int sc0, out int m0);
                QuantizedDot.ScaleMinK4(j + 1, blk + 4, out int sc1, out int m1);
                int xb = (b * 8) + j;
                Q4Block(lo, sc0, m0, xb, d, dmin, tokens, xq, xStride, xd, xsum, dStride, ref acc0, ref acc1, ref acc2, ref acc3, ref mins0, ref mins1, ref mins2, ref mins3);
                Q4Block(hi, sc1, m1, xb + 1, d, dmin, tokens, xq, xStride, xd, xsum, dStride, ref acc0, ref acc1, ref acc2, ref acc3, ref mins0, ref mins1, ref mins2, ref mins3);
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

    private static void Store(int tokens, Vector256<float> acc0, Vector256<float> acc1, Vector256<float> acc2, Vector256<float> acc3, float* output, long outStride)
    {
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

    // 16 int16 lanes: 8 x scale 2j (values 0-15 of block j), then 8 x scale 2j+1 (values 16-31).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<short> Q6Scales(Vector128<byte> scales, Vector128<byte> pick, int j)
        => Avx2.ConvertToVector256Int16(Ssse3.Shuffle(scales, pick + Vector128.Create((byte)(2 * j))).AsSByte());

    // Lane i: scale * sum over values 4i..4i+3 of (u - 32) x, exactly: the 16-bit pair sums u x (at most 2 x 63 x 128)
    // minus 32 (x0 + x1) stay within 16 bits, and the scaled 32-bit sums within 2^24 (exact as floats).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> Q6Lanes(Vector256<byte> u, Vector256<short> scales, sbyte* x)
    {
        var xv = Avx.LoadVector256(x);
        var pairs = Avx2.MultiplyAddAdjacent(u, xv) - Avx2.MultiplyAddAdjacent(Vector256.Create((byte)32), xv);
        return Avx2.MultiplyAddAdjacent(pairs, scales);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Q6Block(Vector256<byte> u, Vector256<short> scales, int xb, float d, int tokens, sbyte* xq, long xStride, float* xd, long dStride, ref Vector256<float> acc0, ref Vector256<float> acc1, ref Vector256<float> acc2, ref Vector256<float> acc3)
    {
        acc0 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(Q6Lanes(u, scales, xq + (xb * 32))), Vector256.Create(xd[xb] * d), acc0);
        if (tokens > 1)
        {
            acc1 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(Q6Lanes(u, scales, xq + xStride + (xb * 32))), Vector256.Create(xd[dStride + xb] * d), acc1);
            if (tokens > 2)
            {
                acc2 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(Q6Lanes(u, scales, xq + (2 * xStride) + (xb * 32))), Vector256.Create(xd[(2 * dStride) + xb] * d), acc2);
                if (tokens > 3)
                {
                    acc3 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(Q6Lanes(u, scales, xq + (3 * xStride) + (xb * 32))), Vector256.Create(xd[(3 * dStride) + xb] * d), acc3);
                }
            }
        }
    }

    // Lane i: sum over values 4i..4i+3 of u x (u the unsigned nibbles).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> Q4Lanes(Vector256<byte> u, sbyte* x)
    {
        var xv = Avx.LoadVector256(x);
        if (AvxVnni.IsSupported)
        {
            return AvxVnni.MultiplyWideningAndAdd(Vector256<int>.Zero, u, xv);
        }

        return Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(u, xv), Vector256.Create((short)1));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Q4Block(Vector256<byte> u, int sc, int m, int xb, float d, float dmin, int tokens, sbyte* xq, long xStride, float* xd, int* xsum, long dStride, ref Vector256<float> acc0, ref Vector256<float> acc1, ref Vector256<float> acc2, ref Vector256<float> acc3, ref float mins0, ref float mins1, ref float mins2, ref float mins3)
    {
        acc0 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(Q4Lanes(u, xq + (xb * 32))), Vector256.Create(xd[xb] * d * sc), acc0);
        mins0 += xd[xb] * dmin * m * xsum[xb];
        if (tokens > 1)
        {
            long o = dStride + xb;
            acc1 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(Q4Lanes(u, xq + xStride + (xb * 32))), Vector256.Create(xd[o] * d * sc), acc1);
            mins1 += xd[o] * dmin * m * xsum[o];
            if (tokens > 2)
            {
                o += dStride;
                acc2 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(Q4Lanes(u, xq + (2 * xStride) + (xb * 32))), Vector256.Create(xd[o] * d * sc), acc2);
                mins2 += xd[o] * dmin * m * xsum[o];
                if (tokens > 3)
                {
                    o += dStride;
                    acc3 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(Q4Lanes(u, xq + (3 * xStride) + (xb * 32))), Vector256.Create(xd[o] * d * sc), acc3);
                    mins3 += xd[o] * dmin * m * xsum[o];
                }
            }
        }
    }
}
