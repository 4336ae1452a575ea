using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace KvAdaQuant.Numerics;

/// <summary>
/// Dot products of one Q8_0 or Q4_0 weight row with activations quantized to int8 blocks of 32
/// (<see cref="Q8Activations"/>), as llama.cpp's vec_dot_q8_0_q8_0 / vec_dot_q4_0_q8_0: integer products
/// per block, scaled by the two block scales. Each has a scalar twin; the AVX2 path uses VNNI
/// (vpdpbusd) when present, else maddubs + madd.
/// </summary>
public static unsafe class QuantizedDot
{
    /// <summary>True when the vector path runs on this machine.</summary>
    public static bool VectorPathSupported => Avx2.IsSupported && Fma.IsSupported;

    /// <summary>Q8_0 row (blocks of 34 bytes) · int8 activations.</summary>
    public static float DotQ8_0(byte* row, sbyte* xq, float* xd, int blocks)
        => VectorPathSupported ? DotQ8_0Avx2(row, xq, xd, blocks) : DotQ8_0Scalar(row, xq, xd, blocks);

    /// <summary>Q4_0 row (blocks of 18 bytes) · int8 activations.</summary>
    public static float DotQ4_0(byte* row, sbyte* xq, float* xd, int blocks)
        => VectorPathSupported ? DotQ4_0Avx2(row, xq, xd, blocks) : DotQ4_0Scalar(row, xq, xd, blocks);

    /// <summary>Scalar twin of <see cref="DotQ8_0"/>.</summary>
    public static float DotQ8_0Scalar(byte* row, sbyte* xq, float* xd, int blocks)
    {
        float sum = 0;
        for (int b = 0; b < blocks; b++)
        {
            byte* blk = row + (b * 34);
            sbyte* w = (sbyte*)(blk + 2);
            sbyte* x = xq + (b * 32);
            int s = 0;
            for (int i = 0; i < 32; i++)
            {
                s += w[i] * x[i];
            }

            sum += s * ((float)*(Half*)blk * xd[b]);
        }

        return sum;
    }

    /// <summary>Scalar twin of <see cref="DotQ4_0"/>.</summary>
    public static float DotQ4_0Scalar(byte* row, sbyte* xq, float* xd, int blocks)
    {
        float sum = 0;
        for (int b = 0; b < blocks; b++)
        {
            byte* blk = row + (b * 18);
            byte* qs = blk + 2;
            sbyte* x = xq + (b * 32);
            int s = 0;
            for (int i = 0; i < 16; i++)
            {
                s += (((qs[i] & 0x0F) - 8) * x[i]) + (((qs[i] >> 4) - 8) * x[i + 16]);
            }

            sum += s * ((float)*(Half*)blk * xd[b]);
        }

        return sum;
    }

    /// <summary>AVX2 (+VNNI) path of <see cref="DotQ8_0"/>.</summary>
    public static float DotQ8_0Avx2(byte* row, sbyte* xq, float* xd, int blocks)
    {
        var acc = Vector256<float>.Zero;
        for (int b = 0; b < blocks; b++)
        {
            acc = BlockStep(row, b * 34L, Avx.LoadVector256(xq + (b * 32)), xd[b], acc);
        }

        return GgmlArithmetic.Sum8(acc);
    }

    // The Q8_0 block at byte offset o of a row into its accumulator: acc + float(int32 lanes of w · x) * (block scale *
    // dx). Every single-token Q8_0 kernel (one, two or four rows) takes each block through this, so their results are
    // the same bits. (Row and offset apart, so the loads keep the [row + o + 2] addressing form.)
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> BlockStep(byte* row, long o, Vector256<sbyte> x, float dx, Vector256<float> acc) =>
        Fma.MultiplyAdd(Avx.ConvertToVector256Single(DotBlock(Avx.LoadVector256((sbyte*)(row + o + 2)), x)), Vector256.Create(HalfBits.ToSingle(*(ushort*)(row + o)) * dx), acc);

    /// <summary>
    /// Four Q8_0 rows (<paramref name="rowStride"/> bytes apart) · the same int8 activations, interleaved so the four
    /// accumulation chains overlap in the pipeline; row k's result goes to output[k * <paramref name="outStride"/>].
    /// Each row's arithmetic is exactly that of <see cref="DotQ8_0"/>, so the same bits. Streamed from memory it is
    /// slow for neighbouring rows and fast for rows far apart (<see cref="DecodePairDistance"/>).
    /// </summary>
    public static void DotQ8_0x4(byte* rows, long rowStride, sbyte* xq, float* xd, int blocks, float* output, long outStride)
    {
        if (!VectorPathSupported)
        {
            ScalarRows(rows, rowStride, 4, xq, xd, blocks, output, outStride);
            return;
        }

        var a0 = Vector256<float>.Zero;
        var a1 = Vector256<float>.Zero;
        var a2 = Vector256<float>.Zero;
        var a3 = Vector256<float>.Zero;
        byte* r0 = rows, r1 = rows + rowStride, r2 = rows + (2 * rowStride), r3 = rows + (3 * rowStride);
        for (int b = 0; b < blocks; b++)
        {
            long o = b * 34L;
            var x = Avx.LoadVector256(xq + (b * 32));
            float dx = xd[b];
            a0 = BlockStep(r0, o, x, dx, a0);
            a1 = BlockStep(r1, o, x, dx, a1);
            a2 = BlockStep(r2, o, x, dx, a2);
            a3 = BlockStep(r3, o, x, dx, a3);
        }

        output[0] = GgmlArithmetic.Sum8(a0);
        output[outStride] = GgmlArithmetic.Sum8(a1);
        output[2 * outStride] = GgmlArithmetic.Sum8(a2);
        output[3 * outStride] = GgmlArithmetic.Sum8(a3);
    }

    /// <summary>
    /// Four Q8_0 rows (<paramref name="rowStride"/> bytes apart) · two tokens' int8 activations (<paramref name="xStride"/>
    /// values and <paramref name="dStride"/> scales apart): <see cref="DotQ8_0x4"/> for both tokens in one pass, row k's
    /// result for token t to output[t * <paramref name="tokenStride"/> + k * <paramref name="outStride"/>]. Each weight
    /// block is loaded, its |w| taken and its scale converted once for the tokens; every result has exactly the
    /// arithmetic of <see cref="DotQ8_0"/> (the same bits). Decode steps of two sequences take it.
    /// </summary>
    public static void DotQ8_0x4Tokens2(byte* rows, long rowStride, sbyte* xq, long xStride, float* xd, long dStride, int blocks, float* output, long outStride, long tokenStride) =>
        FourRowsByTokens<TwoTokens>(rows, rowStride, xq, xStride, xd, dStride, blocks, output, outStride, tokenStride);

    /// <summary>
    /// Four Q8_0 rows · one, two or three tokens (<paramref name="tokens"/>) in one pass: <see cref="DotQ8_0x4"/>,
    /// <see cref="DotQ8_0x4Tokens2"/> or <see cref="DotQ8_0x4Tokens3"/>, with their layout (token t's activations
    /// <paramref name="xStride"/> values and <paramref name="dStride"/> scales apart, its results <paramref name="tokenStride"/>
    /// apart); the same bits as one row and token at a time.
    /// </summary>
    public static void DotQ8_0x4Tokens(int tokens, byte* rows, long rowStride, sbyte* xq, long xStride, float* xd, long dStride, int blocks, float* output, long outStride, long tokenStride)
    {
        switch (tokens)
        {
            case 1:
                DotQ8_0x4(rows, rowStride, xq, xd, blocks, output, outStride);
                break;
            case 2:
                DotQ8_0x4Tokens2(rows, rowStride, xq, xStride, xd, dStride, blocks, output, outStride, tokenStride);
                break;
            case 3:
                DotQ8_0x4Tokens3(rows, rowStride, xq, xStride, xd, dStride, blocks, output, outStride, tokenStride);
                break;
            default:
                throw new ArgumentOutOfRangeException(nameof(tokens), $"one to three tokens a pass, got {tokens}");
        }
    }

    /// <summary><see cref="DotQ8_0x4Tokens2"/> for three tokens (decode steps of three sequences); the same bits.</summary>
    public static void DotQ8_0x4Tokens3(byte* rows, long rowStride, sbyte* xq, long xStride, float* xd, long dStride, int blocks, float* output, long outStride, long tokenStride) =>
        FourRowsByTokens<ThreeTokens>(rows, rowStride, xq, xStride, xd, dStride, blocks, output, outStride, tokenStride);

    private interface ITokenCount
    {
        static abstract bool Three { get; }
    }

    private struct TwoTokens : ITokenCount
    {
        public static bool Three => false;
    }

    private struct ThreeTokens : ITokenCount
    {
        public static bool Three => true;
    }

    // Four rows by two tokens, or three where TThird.Three.
    private static void FourRowsByTokens<TThird>(byte* rows, long rowStride, sbyte* xq, long xStride, float* xd, long dStride, int blocks, float* output, long outStride, long tokenStride)
        where TThird : struct, ITokenCount
    {
        int tokens = TThird.Three ? 3 : 2;
        if (!VectorPathSupported)
        {
            for (int t = 0; t < tokens; t++)
            {
                ScalarRows(rows, rowStride, 4, xq + (t * xStride), xd + (t * dStride), blocks, output + (t * tokenStride), outStride);
            }

            return;
        }

        Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default;
        Vector256<float> b0 = default, b1 = default, b2 = default, b3 = default;
        Vector256<float> c0 = default, c1 = default, c2 = default, c3 = default;
        byte* r0 = rows, r1 = rows + rowStride, r2 = rows + (2 * rowStride), r3 = rows + (3 * rowStride);
        sbyte* y0 = xq, y1 = xq + xStride, y2 = xq + (2 * xStride);
        float* e0 = xd, e1 = xd + dStride, e2 = xd + (2 * dStride);
        for (int b = 0; b < blocks; b++)
        {
            long o = b * 34L;
            var x0 = Avx.LoadVector256(y0 + (b * 32));
            var x1 = Avx.LoadVector256(y1 + (b * 32));
            var x2 = TThird.Three ? Avx.LoadVector256(y2 + (b * 32)) : default;
            float dx0 = e0[b], dx1 = e1[b], dx2 = TThird.Three ? e2[b] : 0;
            Tokens<TThird>(r0, o, x0, x1, x2, dx0, dx1, dx2, ref a0, ref b0, ref c0);
            Tokens<TThird>(r1, o, x0, x1, x2, dx0, dx1, dx2, ref a1, ref b1, ref c1);
            Tokens<TThird>(r2, o, x0, x1, x2, dx0, dx1, dx2, ref a2, ref b2, ref c2);
            Tokens<TThird>(r3, o, x0, x1, x2, dx0, dx1, dx2, ref a3, ref b3, ref c3);
        }

        output[0] = GgmlArithmetic.Sum8(a0);
        output[outStride] = GgmlArithmetic.Sum8(a1);
        output[2 * outStride] = GgmlArithmetic.Sum8(a2);
        output[3 * outStride] = GgmlArithmetic.Sum8(a3);
        output[tokenStride] = GgmlArithmetic.Sum8(b0);
        output[tokenStride + outStride] = GgmlArithmetic.Sum8(b1);
        output[tokenStride + (2 * outStride)] = GgmlArithmetic.Sum8(b2);
        output[tokenStride + (3 * outStride)] = GgmlArithmetic.Sum8(b3);
        if (TThird.Three)
        {
            output[2 * tokenStride] = GgmlArithmetic.Sum8(c0);
            output[(2 * tokenStride) + outStride] = GgmlArithmetic.Sum8(c1);
            output[(2 * tokenStride) + (2 * outStride)] = GgmlArithmetic.Sum8(c2);
            output[(2 * tokenStride) + (3 * outStride)] = GgmlArithmetic.Sum8(c3);
        }
    }

    // BlockStep for two or three tokens: the block's load, |w| and scale shared, then DotBlock's sign and product per token.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Tokens<TThird>(byte* row, long o, Vector256<sbyte> x0, Vector256<sbyte> x1, Vector256<sbyte> x2, float dx0, float dx1, float dx2, ref Vector256<float> acc0, ref Vector256<float> acc1, ref Vector256<float> acc2)
        where TThird : struct, ITokenCount
    {
        var w = Avx.LoadVector256((sbyte*)(row + o + 2));
        float scale = HalfBits.ToSingle(*(ushort*)(row + o));
        var aw = Avx2.Abs(w);
        acc0 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(DotAbs(aw, Avx2.Sign(x0, w))), Vector256.Create(scale * dx0), acc0);
        acc1 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(DotAbs(aw, Avx2.Sign(x1, w))), Vector256.Create(scale * dx1), acc1);
        if (TThird.Three)
        {
            acc2 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(DotAbs(aw, Avx2.Sign(x2, w))), Vector256.Create(scale * dx2), acc2);
        }
    }

    /// <summary>
    /// Two Q8_0 rows (<paramref name="rowStride"/> bytes apart) · the same int8 activations, as <see cref="DotQ8_0x4"/>
    /// with two: row k's result to output[k * <paramref name="outStride"/>], each with the arithmetic of
    /// <see cref="DotQ8_0"/>. Decode takes rows far apart with it (<see cref="DecodePairDistance"/>): on this machine two
    /// rows a few kilobytes apart run about 3x slower than one row alone, rows hundreds of kilobytes apart faster than
    /// one row (bench/Q8_0PairBenchmarks).
    /// </summary>
    public static void DotQ8_0x2(byte* rows, long rowStride, sbyte* xq, float* xd, int blocks, float* output, long outStride)
    {
        if (!VectorPathSupported)
        {
            ScalarRows(rows, rowStride, 2, xq, xd, blocks, output, outStride);
            return;
        }

        var a0 = Vector256<float>.Zero;
        var a1 = Vector256<float>.Zero;
        byte* r0 = rows, r1 = rows + rowStride;
        for (int b = 0; b < blocks; b++)
        {
            long o = b * 34L;
            var x = Avx.LoadVector256(xq + (b * 32));
            float dx = xd[b];
            a0 = BlockStep(r0, o, x, dx, a0);
            a1 = BlockStep(r1, o, x, dx, a1);
        }

        output[0] = GgmlArithmetic.Sum8(a0);
        output[outStride] = GgmlArithmetic.Sum8(a1);
    }

    // The scalar twin for each of count rows.
    private static void ScalarRows(byte* rows, long rowStride, int count, sbyte* xq, float* xd, int blocks, float* output, long outStride)
    {
        for (int k = 0; k < count; k++)
        {
            output[k * outStride] = DotQ8_0Scalar(rows + (k * rowStride), xq, xd, blocks);
        }
    }

    /// <summary>
    /// The least distance in rows at which single-token decode takes Q8_0 rows together: four rows a quarter of the
    /// work chunk apart (<see cref="DotQ8_0x4"/> with that stride) where the quarters are this long, else two rows half
    /// the chunk apart (<see cref="DotQ8_0x2"/>), else one row at a time. Measured with 2,176-byte rows (2,048
    /// columns): 16 rows apart a pair was still slower than one row, 64 apart faster (bench/Q8_0PairBenchmarks).
    /// </summary>
    public const int DecodePairDistance = 64;

    /// <summary>
    /// Prefill tile: four Q8_0 rows (<paramref name="rowStride"/> bytes apart) times four activation vectors
    /// (<paramref name="xStride"/> values and <paramref name="dStride"/> scales apart), y[t * yStride + r]. Each of the
    /// sixteen results has exactly the arithmetic of <see cref="DotQ8_0"/> (same int32 lanes, same scale product, same
    /// fused multiply-add order, same final sum), but each weight block is loaded once for four tokens and the sign
    /// fix-up is replaced by an offset: (x + 128) · w − 128 Σw, with the correction folded into the accumulator's start.
    /// </summary>
    public static void DotQ8_0Tile4x4(byte* rows, long rowStride, sbyte* xq, long xStride, float* xd, long dStride, int blocks, float* y, long yStride)
    {
        var scales = new float[blocks * 4];
        var corrections = new int[blocks * 32];
        fixed (float* ps = scales)
        fixed (int* pc = corrections)
        {
            DotQ8_0Tile4x4Preparing(rows, rowStride, ps, pc, xq, xStride, xd, dStride, blocks, y, yStride);
        }
    }

    /// <summary>
    /// Per-block constants of a four-row Q8_0 tile, computed once and reused by every token tile of a batch
    /// (<see cref="DotQ8_0Tile4x4Prepared"/>): <paramref name="scales"/>[b * 4 + r] is row r's block scale as float and
    /// <paramref name="corrections"/>[(b * 4 + r) * 8 ..] the eight int32 lanes of −128 Σw of its block.
    /// </summary>
    public static void PrepareQ8_0Tile(byte* rows, long rowStride, int blocks, float* scales, int* corrections)
    {
        var offset = Vector256.Create((byte)0x80);
        for (int b = 0; b < blocks; b++)
        {
            for (int r = 0; r < 4; r++)
            {
                byte* blk = rows + (r * rowStride) + (b * 34L);
                scales[(b * 4) + r] = HalfBits.ToSingle(*(ushort*)blk);
                var c = AvxVnni.IsSupported
                    ? Vector256<int>.Zero - AvxVnni.MultiplyWideningAndAdd(Vector256<int>.Zero, offset, Avx.LoadVector256((sbyte*)(blk + 2)))
                    : Vector256<int>.Zero;
                c.Store(corrections + (((b * 4) + r) * 8));
            }
        }
    }

    /// <summary>
    /// <see cref="DotQ8_0Tile4x4"/> with the per-block row constants precomputed by <see cref="PrepareQ8_0Tile"/> (or
    /// <see cref="DotQ8_0Tile4x4Preparing"/>): identical results, less work per token tile. Row r's results go to
    /// y[t * yStride + r * yRowStride].
    /// </summary>
    public static void DotQ8_0Tile4x4Prepared(byte* rows, long rowStride, float* scales, int* corrections, sbyte* xq, long xStride, float* xd, long dStride, int blocks, float* y, long yStride, long yRowStride = 1) =>
        Tile4x4<ReadConstants>(rows, rowStride, scales, corrections, xq, xStride, xd, dStride, blocks, y, yStride, yRowStride);

    /// <summary>
    /// The first token tile of a batch: <see cref="DotQ8_0Tile4x4Prepared"/> that computes the row constants of
    /// <see cref="PrepareQ8_0Tile"/> as it goes (the same values) and stores them for the batch's other token tiles. Its
    /// dot products overlap the rows' first reads from memory, which a separate preparing pass waits for alone (with a
    /// few tokens, the several sequences' decode steps, that pass took as long as the products).
    /// </summary>
    public static void DotQ8_0Tile4x4Preparing(byte* rows, long rowStride, float* scales, int* corrections, sbyte* xq, long xStride, float* xd, long dStride, int blocks, float* y, long yStride, long yRowStride = 1)
    {
        if (!VectorPathSupported || !AvxVnni.IsSupported)
        {
            // Tiles without VNNI read the scales from the rows and need no corrections; the constants are still
            // made, so that the Prepared calls of a batch find what this one would leave on any CPU.
            PrepareQ8_0Tile(rows, rowStride, blocks, scales, corrections);
        }

        Tile4x4<ComputeConstants>(rows, rowStride, scales, corrections, xq, xStride, xd, dStride, blocks, y, yStride, yRowStride);
    }

    // The tile without AVX-VNNI (AMD Zen 4, Intel Ice Lake and Skylake-X; .NET 10 exposes no 512-bit VNNI): the offset
    // (x + 128) would saturate vpmaddubsw's int16 pair sums, so each product takes DotQ8_0's sign form instead, |w|
    // (once per row and block) times x with w's sign, pair sums within 2 x 128 x 127, widened by vpmaddwd with ones:
    // the same exact int32 lanes as vpdpbusd, the same scale products and fused multiply-adds, the same bits.
    private static void Tile4x4Signed(byte* rows, long rowStride, sbyte* xq, long xStride, float* xd, long dStride, int blocks, float* y, long yStride, long yRowStride)
    {
        Vector256<float> a00 = default, a01 = default, a02 = default, a03 = default;
        Vector256<float> a10 = default, a11 = default, a12 = default, a13 = default;
        Vector256<float> a20 = default, a21 = default, a22 = default, a23 = default;
        Vector256<float> a30 = default, a31 = default, a32 = default, a33 = default;
        byte* r0 = rows, r1 = rows + rowStride, r2 = rows + (2 * rowStride), r3 = rows + (3 * rowStride);
        sbyte* x0 = xq, x1 = xq + xStride, x2 = xq + (2 * xStride), x3 = xq + (3 * xStride);
        float* d0 = xd, d1 = xd + dStride, d2 = xd + (2 * dStride), d3 = xd + (3 * dStride);
        for (int b = 0; b < blocks; b++)
        {
            long o = b * 34L;
            int xo = b * 32;
            var w0 = Avx.LoadVector256((sbyte*)(r0 + o + 2));
            var w1 = Avx.LoadVector256((sbyte*)(r1 + o + 2));
            var w2 = Avx.LoadVector256((sbyte*)(r2 + o + 2));
            var w3 = Avx.LoadVector256((sbyte*)(r3 + o + 2));
            var u0 = Avx2.Abs(w0);
            var u1 = Avx2.Abs(w1);
            var u2 = Avx2.Abs(w2);
            var u3 = Avx2.Abs(w3);
            var s0 = Vector256.Create(HalfBits.ToSingle(*(ushort*)(r0 + o)));
            var s1 = Vector256.Create(HalfBits.ToSingle(*(ushort*)(r1 + o)));
            var s2 = Vector256.Create(HalfBits.ToSingle(*(ushort*)(r2 + o)));
            var s3 = Vector256.Create(HalfBits.ToSingle(*(ushort*)(r3 + o)));

            var x = Avx.LoadVector256(x0 + xo);
            var dx = Vector256.Create(d0[b]);
            a00 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(DotAbs(u0, Avx2.Sign(x, w0))), s0 * dx, a00);
            a01 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(DotAbs(u1, Avx2.Sign(x, w1))), s1 * dx, a01);
            a02 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(DotAbs(u2, Avx2.Sign(x, w2))), s2 * dx, a02);
            a03 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(DotAbs(u3, Avx2.Sign(x, w3))), s3 * dx, a03);

            x = Avx.LoadVector256(x1 + xo);
            dx = Vector256.Create(d1[b]);
            a10 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(DotAbs(u0, Avx2.Sign(x, w0))), s0 * dx, a10);
            a11 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(DotAbs(u1, Avx2.Sign(x, w1))), s1 * dx, a11);
            a12 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(DotAbs(u2, Avx2.Sign(x, w2))), s2 * dx, a12);
            a13 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(DotAbs(u3, Avx2.Sign(x, w3))), s3 * dx, a13);

            x = Avx.LoadVector256(x2 + xo);
            dx = Vector256.Create(d2[b]);
            a20 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(DotAbs(u0, Avx2.Sign(x, w0))), s0 * dx, a20);
            a21 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(DotAbs(u1, Avx2.Sign(x, w1))), s1 * dx, a21);
            a22 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(DotAbs(u2, Avx2.Sign(x, w2))), s2 * dx, a22);
            a23 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(DotAbs(u3, Avx2.Sign(x, w3))), s3 * dx, a23);

            x = Avx.LoadVector256(x3 + xo);
            dx = Vector256.Create(d3[b]);
            a30 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(DotAbs(u0, Avx2.Sign(x, w0))), s0 * dx, a30);
            a31 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(DotAbs(u1, Avx2.Sign(x, w1))), s1 * dx, a31);
            a32 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(DotAbs(u2, Avx2.Sign(x, w2))), s2 * dx, a32);
            a33 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(DotAbs(u3, Avx2.Sign(x, w3))), s3 * dx, a33);
        }

        StoreTile(y, yStride, yRowStride, a00, a01, a02, a03, a10, a11, a12, a13, a20, a21, a22, a23, a30, a31, a32, a33);
    }

    private interface ITileConstants
    {
        static abstract bool Compute { get; }
    }

    private struct ReadConstants : ITileConstants
    {
        public static bool Compute => false;
    }

    private struct ComputeConstants : ITileConstants
    {
        public static bool Compute => true;
    }

    private static void Tile4x4<TConstants>(byte* rows, long rowStride, float* scales, int* corrections, sbyte* xq, long xStride, float* xd, long dStride, int blocks, float* y, long yStride, long yRowStride)
        where TConstants : struct, ITileConstants
    {
        if (!VectorPathSupported)
        {
            for (int t = 0; t < 4; t++)
            {
                for (int r = 0; r < 4; r++)
                {
                    y[(t * yStride) + (r * yRowStride)] = DotQ8_0(rows + (r * rowStride), xq + (t * xStride), xd + (t * dStride), blocks);
                }
            }

            return;
        }

        if (!AvxVnni.IsSupported)
        {
            Tile4x4Signed(rows, rowStride, xq, xStride, xd, dStride, blocks, y, yStride, yRowStride);
            return;
        }

        Vector256<float> a00 = default, a01 = default, a02 = default, a03 = default;
        Vector256<float> a10 = default, a11 = default, a12 = default, a13 = default;
        Vector256<float> a20 = default, a21 = default, a22 = default, a23 = default;
        Vector256<float> a30 = default, a31 = default, a32 = default, a33 = default;
        byte* r0 = rows, r1 = rows + rowStride, r2 = rows + (2 * rowStride), r3 = rows + (3 * rowStride);
        sbyte* x0 = xq, x1 = xq + xStride, x2 = xq + (2 * xStride), x3 = xq + (3 * xStride);
        float* d0 = xd, d1 = xd + dStride, d2 = xd + (2 * dStride), d3 = xd + (3 * dStride);
        var offset = Vector256.Create((byte)0x80);
        for (int b = 0; b < blocks; b++)
        {
            long o = b * 34L;
            int xo = b * 32;
            var w0 = Avx.LoadVector256((sbyte*)(r0 + o + 2));
            var w1 = Avx.LoadVector256((sbyte*)(r1 + o + 2));
            var w2 = Avx.LoadVector256((sbyte*)(r2 + o + 2));
            var w3 = Avx.LoadVector256((sbyte*)(r3 + o + 2));
            int* cb = corrections + (b * 32);
            float* sb = scales + (b * 4);
            Vector256<int> c0, c1, c2, c3;
            float f0, f1, f2, f3;
            if (TConstants.Compute)
            {
                // PrepareQ8_0Tile's values: -128 Σw in the block's eight int32 lanes, the block scale as float.
                c0 = Vector256<int>.Zero - AvxVnni.MultiplyWideningAndAdd(Vector256<int>.Zero, offset, w0);
                c1 = Vector256<int>.Zero - AvxVnni.MultiplyWideningAndAdd(Vector256<int>.Zero, offset, w1);
                c2 = Vector256<int>.Zero - AvxVnni.MultiplyWideningAndAdd(Vector256<int>.Zero, offset, w2);
                c3 = Vector256<int>.Zero - AvxVnni.MultiplyWideningAndAdd(Vector256<int>.Zero, offset, w3);
                c0.Store(cb);
                c1.Store(cb + 8);
                c2.Store(cb + 16);
                c3.Store(cb + 24);
                sb[0] = f0 = HalfBits.ToSingle(*(ushort*)(r0 + o));
                sb[1] = f1 = HalfBits.ToSingle(*(ushort*)(r1 + o));
                sb[2] = f2 = HalfBits.ToSingle(*(ushort*)(r2 + o));
                sb[3] = f3 = HalfBits.ToSingle(*(ushort*)(r3 + o));
            }
            else
            {
                c0 = Vector256.Load(cb);
                c1 = Vector256.Load(cb + 8);
                c2 = Vector256.Load(cb + 16);
                c3 = Vector256.Load(cb + 24);
                f0 = sb[0];
                f1 = sb[1];
                f2 = sb[2];
                f3 = sb[3];
            }

            var s0 = Vector256.Create(f0);
            var s1 = Vector256.Create(f1);
            var s2 = Vector256.Create(f2);
            var s3 = Vector256.Create(f3);

            var u = Avx.LoadVector256((byte*)(x0 + xo)) ^ offset;
            var dx = Vector256.Create(d0[b]);
            a00 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(AvxVnni.MultiplyWideningAndAdd(c0, u, w0)), s0 * dx, a00);
            a01 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(AvxVnni.MultiplyWideningAndAdd(c1, u, w1)), s1 * dx, a01);
            a02 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(AvxVnni.MultiplyWideningAndAdd(c2, u, w2)), s2 * dx, a02);
            a03 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(AvxVnni.MultiplyWideningAndAdd(c3, u, w3)), s3 * dx, a03);

            u = Avx.LoadVector256((byte*)(x1 + xo)) ^ offset;
            dx = Vector256.Create(d1[b]);
            a10 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(AvxVnni.MultiplyWideningAndAdd(c0, u, w0)), s0 * dx, a10);
            a11 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(AvxVnni.MultiplyWideningAndAdd(c1, u, w1)), s1 * dx, a11);
            a12 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(AvxVnni.MultiplyWideningAndAdd(c2, u, w2)), s2 * dx, a12);
            a13 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(AvxVnni.MultiplyWideningAndAdd(c3, u, w3)), s3 * dx, a13);

            u = Avx.LoadVector256((byte*)(x2 + xo)) ^ offset;
            dx = Vector256.Create(d2[b]);
            a20 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(AvxVnni.MultiplyWideningAndAdd(c0, u, w0)), s0 * dx, a20);
            a21 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(AvxVnni.MultiplyWideningAndAdd(c1, u, w1)), s1 * dx, a21);
            a22 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(AvxVnni.MultiplyWideningAndAdd(c2, u, w2)), s2 * dx, a22);
            a23 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(AvxVnni.MultiplyWideningAndAdd(c3, u, w3)), s3 * dx, a23);

            u = Avx.LoadVector256((byte*)(x3 + xo)) ^ offset;
            dx = Vector256.Create(d3[b]);
            a30 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(AvxVnni.MultiplyWideningAndAdd(c0, u, w0)), s0 * dx, a30);
            a31 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(AvxVnni.MultiplyWideningAndAdd(c1, u, w1)), s1 * dx, a31);
            a32 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(AvxVnni.MultiplyWideningAndAdd(c2, u, w2)), s2 * dx, a32);
            a33 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(AvxVnni.MultiplyWideningAndAdd(c3, u, w3)), s3 * dx, a33);
        }

        StoreTile(y, yStride, yRowStride, a00, a01, a02, a03, a10, a11, a12, a13, a20, a21, a22, a23, a30, a31, a32, a33);
    }

    // y[t * yStride + r * yRowStride] = the lane sum of a_tr (ggml's order).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreTile(
        float* y,
        long yStride,
        long yRowStride,
        Vector256<float> a00,
        Vector256<float> a01,
        Vector256<float> a02,
        Vector256<float> a03,
        Vector256<float> a10,
        Vector256<float> a11,
        Vector256<float> a12,
        Vector256<float> a13,
        Vector256<float> a20,
        Vector256<float> a21,
        Vector256<float> a22,
        Vector256<float> a23,
        Vector256<float> a30,
        Vector256<float> a31,
        Vector256<float> a32,
        Vector256<float> a33)
    {
        float* y0 = y, y1 = y + yStride, y2 = y + (2 * yStride), y3 = y + (3 * yStride);
        y0[0] = GgmlArithmetic.Sum8(a00);
        y0[yRowStride] = GgmlArithmetic.Sum8(a01);
        y0[2 * yRowStride] = GgmlArithmetic.Sum8(a02);
        y0[3 * yRowStride] = GgmlArithmetic.Sum8(a03);
        y1[0] = GgmlArithmetic.Sum8(a10);
        y1[yRowStride] = GgmlArithmetic.Sum8(a11);
        y1[2 * yRowStride] = GgmlArithmetic.Sum8(a12);
        y1[3 * yRowStride] = GgmlArithmetic.Sum8(a13);
        y2[0] = GgmlArithmetic.Sum8(a20);
        y2[yRowStride] = GgmlArithmetic.Sum8(a21);
        y2[2 * yRowStride] = GgmlArithmetic.Sum8(a22);
        y2[3 * yRowStride] = GgmlArithmetic.Sum8(a23);
        y3[0] = GgmlArithmetic.Sum8(a30);
        y3[yRowStride] = GgmlArithmetic.Sum8(a31);
        y3[2 * yRowStride] = GgmlArithmetic.Sum8(a32);
        y3[3 * yRowStride] = GgmlArithmetic.Sum8(a33);
    }

    /// <summary>
    /// Q4_0 row · int8 activations using the activation block sums: sum((q - 8) x) = sum(q x) - 8 sum(x) exactly in
    /// integers, so the unsigned nibbles feed vpdpbusd directly (no sign fix-up). Same result as <see cref="DotQ4_0"/>.
    /// </summary>
    public static float DotQ4_0(byte* row, sbyte* xq, float* xd, int* xsum, int blocks)
    {
        if (!VectorPathSupported)
        {
            return DotQ4_0Scalar(row, xq, xd, blocks);
        }

        var acc = Vector256<float>.Zero;
        var low = Vector128.Create((byte)0x0F);
        for (int b = 0; b < blocks; b++)
        {
            byte* blk = row + (b * 18);
            var q = Sse2.LoadVector128(blk + 2);
            var lo = Sse2.And(q, low);
            var hi = Sse2.And(Sse2.ShiftRightLogical(q.AsUInt16(), 4).AsByte(), low);
            var p = UnsignedDot(Vector256.Create(lo, hi), Avx.LoadVector256(xq + (b * 32)));
            p = Avx2.Subtract(p, Vector256.CreateScalar(8 * xsum[b]));
            float scale = HalfBits.ToSingle(*(ushort*)blk) * xd[b];
            acc = Fma.MultiplyAdd(Avx.ConvertToVector256Single(p), Vector256.Create(scale), acc);
        }

        return GgmlArithmetic.Sum8(acc);
    }

    /// <summary>AVX2 (+VNNI) path of <see cref="DotQ4_0"/>.</summary>
    public static float DotQ4_0Avx2(byte* row, sbyte* xq, float* xd, int blocks)
    {
        var acc = Vector256<float>.Zero;
        var low = Vector128.Create((byte)0x0F);
        var eight = Vector256.Create((sbyte)8);
        for (int b = 0; b < blocks; b++)
        {
            byte* blk = row + (b * 18);
            var q = Sse2.LoadVector128(blk + 2);
            var lo = Sse2.And(q, low);
            var hi = Sse2.And(Sse2.ShiftRightLogical(q.AsUInt16(), 4).AsByte(), low);
            var w = Avx2.Subtract(Vector256.Create(lo, hi).AsSByte(), eight);
            var x = Avx.LoadVector256(xq + (b * 32));
            var p = DotBlock(w, x);
            float scale = HalfBits.ToSingle(*(ushort*)blk) * xd[b];
            acc = Fma.MultiplyAdd(Avx.ConvertToVector256Single(p), Vector256.Create(scale), acc);
        }

        return GgmlArithmetic.Sum8(acc);
    }

    /// <summary>
    /// Eight consecutive Q4_0 rows (<paramref name="rowStride"/> bytes apart) · the same int8 activations, in the order of
    /// llama.cpp's repacked Q4_0 kernels (ggml_gemv/gemm_q4_0_8x8_q8_0, which x86 builds use for every Q4_0 matrix whose
    /// row count is a multiple of 8): per 32-block an exact integer dot product, converted to float and fused into one
    /// running sum per row, y = fma(isum_b, d_w * d_x, y) block after block. The AVX2 path keeps the eight rows' sums in
    /// the eight lanes of one register; <see cref="DotQ4_0ChainScalar"/> is its twin, row by row. The engine multiplies
    /// from the matrix's repacked copy instead (<see cref="DotQ4_0RowGroup"/>, one stream instead of eight); this form on
    /// the rows in place is the reference its tests hold it to, bit for bit.
    /// </summary>
    public static void DotQ4_0x8Chain(byte* rows, long rowStride, sbyte* xq, float* xd, int* xsum, int blocks, float* output)
        => DotQ4_0x8ChainTokens(rows, rowStride, 1, xq, 0, xd, xsum, 0, blocks, output, 0);

    /// <summary>
    /// <see cref="DotQ4_0x8Chain"/> for <paramref name="tokens"/> (1 to 4) activation vectors at once, sharing the
    /// unpacked weights of each block: token k reads xq + k * xStride, xd / xsum + k * blockStride and writes its eight
    /// results at output + k * outStride. Each result's arithmetic is exactly that of the single-token call.
    /// </summary>
    public static void DotQ4_0x8ChainTokens(byte* rows, long rowStride, int tokens, sbyte* xq, long xStride, float* xd, int* xsum, long blockStride, int blocks, float* output, long outStride)
    {
        if (tokens is < 1 or > 4)
        {
            throw new ArgumentOutOfRangeException(nameof(tokens), tokens, "1 to 4 tokens per call");
        }

        if (!VectorPathSupported)
        {
            for (int k = 0; k < tokens; k++)
            {
                for (int r = 0; r < 8; r++)
                {
                    output[(k * outStride) + r] = DotQ4_0ChainScalar(rows + (r * rowStride), xq + (k * xStride), xd + (k * blockStride), blocks);
                }
            }

            return;
        }

        var acc0 = Vector256<float>.Zero;
        var acc1 = Vector256<float>.Zero;
        var acc2 = Vector256<float>.Zero;
        var acc3 = Vector256<float>.Zero;
        var low = Vector128.Create((byte)0x0F);
        for (int b = 0; b < blocks; b++)
        {
            byte* blk = rows + (b * 18L);
            if ((b & 3) == 0)
            {
                // eight streams at once defeat the hardware prefetcher on matrices that do not fit in cache.
                byte* ahead = blk + 512;
                Sse.Prefetch0(ahead);
                Sse.Prefetch0(ahead + rowStride);
                Sse.Prefetch0(ahead + (2 * rowStride));
                Sse.Prefetch0(ahead + (3 * rowStride));
                Sse.Prefetch0(ahead + (4 * rowStride));
                Sse.Prefetch0(ahead + (5 * rowStride));
                Sse.Prefetch0(ahead + (6 * rowStride));
                Sse.Prefetch0(ahead + (7 * rowStride));
            }

            var u0 = Nibbles(blk, low);
            var u1 = Nibbles(blk + rowStride, low);
            var u2 = Nibbles(blk + (2 * rowStride), low);
            var u3 = Nibbles(blk + (3 * rowStride), low);
            var u4 = Nibbles(blk + (4 * rowStride), low);
            var u5 = Nibbles(blk + (5 * rowStride), low);
            var u6 = Nibbles(blk + (6 * rowStride), low);
            var u7 = Nibbles(blk + (7 * rowStride), low);
            var dw = HalfToSingle(Vector256.Create(
                *(ushort*)blk,
                *(ushort*)(blk + rowStride),
                *(ushort*)(blk + (2 * rowStride)),
                *(ushort*)(blk + (3 * rowStride)),
                *(ushort*)(blk + (4 * rowStride)),
                *(ushort*)(blk + (5 * rowStride)),
                *(ushort*)(blk + (6 * rowStride)),
                *(ushort*)(blk + (7 * rowStride))));
            for (int k = 0; k < tokens; k++)
            {
                var x = Avx.LoadVector256(xq + (k * xStride) + (b * 32));
                var h0123 = Avx2.HorizontalAdd(Avx2.HorizontalAdd(UnsignedDot(u0, x), UnsignedDot(u1, x)), Avx2.HorizontalAdd(UnsignedDot(u2, x), UnsignedDot(u3, x)));
                var h4567 = Avx2.HorizontalAdd(Avx2.HorizontalAdd(UnsignedDot(u4, x), UnsignedDot(u5, x)), Avx2.HorizontalAdd(UnsignedDot(u6, x), UnsignedDot(u7, x)));

                // the eight rows' exact block sums, one per lane (pairwise adds, then the two 128-bit halves), less
                // 8 sum(x) for the nibbles' offset: sum((q - 8) x) = sum(q x) - 8 sum(x), exact in integers.
                var isum = Avx2.Add(Avx2.Permute2x128(h0123, h4567, 0x20), Avx2.Permute2x128(h0123, h4567, 0x31));
                var sums = Avx.ConvertToVector256Single(Avx2.Subtract(isum, Vector256.Create(8 * xsum[(k * blockStride) + b])));
                var scale = dw * Vector256.Create(xd[(k * blockStride) + b]);
                switch (k)
                {
                    case 0: acc0 = Fma.MultiplyAdd(sums, scale, acc0); break;
                    case 1: acc1 = Fma.MultiplyAdd(sums, scale, acc1); break;
                    case 2: acc2 = Fma.MultiplyAdd(sums, scale, acc2); break;
                    default: acc3 = Fma.MultiplyAdd(sums, scale, acc3); break;
                }
            }
        }

        acc0.Store(output);
        if (tokens > 1)
        {
            acc1.Store(output + outStride);
        }

        if (tokens > 2)
        {
            acc2.Store(output + (2 * outStride));
        }

        if (tokens > 3)
        {
            acc3.Store(output + (3 * outStride));
        }
    }

    /// <summary>Scalar twin of <see cref="DotQ4_0x8Chain"/> for one row: exact block sums fused into one running float.</summary>
    public static float DotQ4_0ChainScalar(byte* row, sbyte* xq, float* xd, int blocks)
    {
        float sum = 0;
        for (int b = 0; b < blocks; b++)
        {
            byte* blk = row + (b * 18);
            byte* qs = blk + 2;
            sbyte* x = xq + (b * 32);
            int s = 0;
            for (int i = 0; i < 16; i++)
            {
                s += (((qs[i] & 0x0F) - 8) * x[i]) + (((qs[i] >> 4) - 8) * x[i + 16]);
            }

            sum = MathF.FusedMultiplyAdd(s, (float)*(Half*)blk * xd[b], sum);
        }

        return sum;
    }

    /// <summary>
    /// Eight Q4_0 rows from their row-group copy (<see cref="Q4_0RowGroups"/>: <paramref name="group"/> is the group's first
    /// unit) · <paramref name="tokens"/> (1 to 4) int8 activation vectors, laid out as for <see cref="DotQ4_0x8ChainTokens"/>.
    /// Exactly the arithmetic of <see cref="DotQ4_0x8ChainTokens"/> on the original rows (exact integer block sums, then
    /// y = fma(isum_b - 8 sum(x_b), d_w * d_x, y) block after block, one float per row), reading one sequential stream.
    /// </summary>
    public static void DotQ4_0RowGroup(byte* group, int tokens, sbyte* xq, long xStride, float* xd, int* xsum, long blockStride, int blocks, float* output, long outStride)
    {
        if (VectorPathSupported)
        {
            DotQ4_0RowGroupAvx2(group, tokens, xq, xStride, xd, xsum, blockStride, blocks, output, outStride);
        }
        else
        {
            DotQ4_0RowGroupScalar(group, tokens, xq, xStride, xd, blockStride, blocks, output, outStride);
        }
    }

    /// <summary>Scalar twin of <see cref="DotQ4_0RowGroup"/>: row by row, token by token, as <see cref="DotQ4_0ChainScalar"/>.</summary>
    public static void DotQ4_0RowGroupScalar(byte* group, int tokens, sbyte* xq, long xStride, float* xd, long blockStride, int blocks, float* output, long outStride)
    {
        if (tokens is < 1 or > 4)
        {
            throw new ArgumentOutOfRangeException(nameof(tokens), tokens, "1 to 4 tokens per call");
        }

        for (int k = 0; k < tokens; k++)
        {
            for (int r = 0; r < 8; r++)
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
                        s += (((q & 0x0F) - 8) * x[i]) + (((q >> 4) - 8) * x[i + 16]);
                    }

                    sum = MathF.FusedMultiplyAdd(s, (float)*(Half*)(unit + (2 * r)) * xd[(k * blockStride) + b], sum);
                }

                output[(k * outStride) + r] = sum;
            }
        }
    }

    /// <summary>
    /// AVX2 (+VNNI) path of <see cref="DotQ4_0RowGroup"/>: each chunk load gives every row four quant bytes in its own
    /// 32-bit lane, so the integer block sums build up lane by lane against broadcast activations, starting from
    /// -8 sum(x) (the nibbles' offset: sum((q - 8) x) = sum(q x) - 8 sum(x), exact in integers); the eight rows' running
    /// float sums sit in the lanes of one register per token.
    /// </summary>
    public static void DotQ4_0RowGroupAvx2(byte* group, int tokens, sbyte* xq, long xStride, float* xd, int* xsum, long blockStride, int blocks, float* output, long outStride)
    {
        if (tokens is < 1 or > 4)
        {
            throw new ArgumentOutOfRangeException(nameof(tokens), tokens, "1 to 4 tokens per call");
        }

        RowGroupOf4BitCodes<Q4_0Codes>(group, tokens, xq, xStride, xd, xsum, blockStride, blocks, output, outStride);
    }

    /// <summary>
    /// How a row group in the Q4_0 layout (<see cref="Q4_0RowGroups"/>) turns its nibbles into the unsigned bytes vpdpbusd
    /// multiplies, what those bytes are offset by, and how its 8 FP16 scales become floats: Q4_0 (the nibbles themselves,
    /// offset 8) and IQ4_NL (<see cref="LowBitRowGroupDot.DotIq4_NL"/>: the levels + 128 looked up, offset 128).
    /// </summary>
    internal interface IFourBitCodes
    {
        /// <summary>The offset o of the bytes: value = byte - o.</summary>
        static abstract int Offset { get; }

        /// <summary>A constant the decoding uses (a lookup table), made once per call.</summary>
        static abstract Vector256<byte> Table();

        /// <summary>The bytes of 32 nibbles (each 0..15 in a byte).</summary>
        static abstract Vector256<byte> Decode(Vector256<byte> nibbles, Vector256<byte> table);

        /// <summary>The unit's 8 FP16 scales as floats.</summary>
        static abstract Vector256<float> Scales(byte* unit);

        /// <summary>start + each row's dot product of its decoded bytes with the activations (<see cref="LaneDots"/>).</summary>
        static abstract Vector256<int> Dots(Vector256<byte> l0, Vector256<byte> l1, Vector256<byte> l2, Vector256<byte> l3, Vector256<byte> h0, Vector256<byte> h1, Vector256<byte> h2, Vector256<byte> h3, int* x, int start);
    }

    private readonly struct Q4_0Codes : IFourBitCodes
    {
        public static int Offset => 8;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<byte> Table() => default;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<byte> Decode(Vector256<byte> nibbles, Vector256<byte> table) => nibbles;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<float> Scales(byte* unit) => HalfToSingle(Avx2.ConvertToVector256Int32(Sse2.LoadVector128((ushort*)unit)));

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<int> Dots(Vector256<byte> l0, Vector256<byte> l1, Vector256<byte> l2, Vector256<byte> l3, Vector256<byte> h0, Vector256<byte> h1, Vector256<byte> h2, Vector256<byte> h3, int* x, int start) =>
            LaneDots(l0, l1, l2, l3, h0, h1, h2, h3, x, start);
    }

    /// <summary>
    /// The vector path of a row group in the Q4_0 layout for 1 to 4 tokens (4: <see cref="RowGroupTile4"/>, else token by
    /// token): per row and block the exact integer sum (byte - offset) x, then y = fma(s, d_w x d_x, y).
    /// </summary>
    internal static void RowGroupOf4BitCodes<T>(byte* group, int tokens, sbyte* xq, long xStride, float* xd, int* xsum, long blockStride, int blocks, float* output, long outStride)
        where T : struct, IFourBitCodes
    {
        if (tokens == 4)
        {
            RowGroupTile4<T>(group, xq, xStride, xd, xsum, blockStride, blocks, output, outStride);
            return;
        }

        // one token at a time (decode, and the tail of a batch): the same arithmetic per token.
        for (int k = 0; k < tokens; k++)
        {
            RowGroupToken<T>(group, xq + (k * xStride), xd + (k * blockStride), xsum + (k * blockStride), blocks, output + (k * outStride));
        }
    }

    // One token: eight rows' running sums in one register.
    private static void RowGroupToken<T>(byte* group, sbyte* xq, float* xd, int* xsum, int blocks, float* output)
        where T : struct, IFourBitCodes
    {
        var acc = Vector256<float>.Zero;
        var low = Vector256.Create((byte)0x0F);
        var table = T.Table();
        byte* unit = group;
        for (int b = 0; b < blocks; b++, unit += Q4_0RowGroups.UnitBytes)
        {
            var dw = T.Scales(unit);
            var q0 = Avx.LoadVector256(unit + 16);
            var q1 = Avx.LoadVector256(unit + 48);
            var q2 = Avx.LoadVector256(unit + 80);
            var q3 = Avx.LoadVector256(unit + 112);
            var isum = T.Dots(
                T.Decode(q0 & low, table),
                T.Decode(q1 & low, table),
                T.Decode(q2 & low, table),
                T.Decode(q3 & low, table),
                T.Decode(Avx2.ShiftRightLogical(q0.AsUInt16(), 4).AsByte() & low, table),
                T.Decode(Avx2.ShiftRightLogical(q1.AsUInt16(), 4).AsByte() & low, table),
                T.Decode(Avx2.ShiftRightLogical(q2.AsUInt16(), 4).AsByte() & low, table),
                T.Decode(Avx2.ShiftRightLogical(q3.AsUInt16(), 4).AsByte() & low, table),
                (int*)(xq + (b * 32)),
                -T.Offset * xsum[b]);
            acc = Fma.MultiplyAdd(Avx.ConvertToVector256Single(isum), dw * Vector256.Create(xd[b]), acc);
        }

        acc.Store(output);
    }

    // Four tokens sharing each block's unpacked nibbles; four registers of running sums.
    private static void RowGroupTile4<T>(byte* group, sbyte* xq, long xStride, float* xd, int* xsum, long blockStride, int blocks, float* output, long outStride)
        where T : struct, IFourBitCodes
    {
        var acc0 = Vector256<float>.Zero;
        var acc1 = Vector256<float>.Zero;
        var acc2 = Vector256<float>.Zero;
        var acc3 = Vector256<float>.Zero;
        var low = Vector256.Create((byte)0x0F);
        var table = T.Table();
        sbyte* x0 = xq, x1 = xq + xStride, x2 = xq + (2 * xStride), x3 = xq + (3 * xStride);
        float* d0 = xd, d1 = xd + blockStride, d2 = xd + (2 * blockStride), d3 = xd + (3 * blockStride);
        int* s0 = xsum, s1 = xsum + blockStride, s2 = xsum + (2 * blockStride), s3 = xsum + (3 * blockStride);
        byte* unit = group;
        for (int b = 0; b < blocks; b++, unit += Q4_0RowGroups.UnitBytes)
        {
            var dw = T.Scales(unit);
            var q0 = Avx.LoadVector256(unit + 16);
            var q1 = Avx.LoadVector256(unit + 48);
            var q2 = Avx.LoadVector256(unit + 80);
            var q3 = Avx.LoadVector256(unit + 112);
            var l0 = T.Decode(q0 & low, table);
            var l1 = T.Decode(q1 & low, table);
            var l2 = T.Decode(q2 & low, table);
            var l3 = T.Decode(q3 & low, table);
            var h0 = T.Decode(Avx2.ShiftRightLogical(q0.AsUInt16(), 4).AsByte() & low, table);
            var h1 = T.Decode(Avx2.ShiftRightLogical(q1.AsUInt16(), 4).AsByte() & low, table);
            var h2 = T.Decode(Avx2.ShiftRightLogical(q2.AsUInt16(), 4).AsByte() & low, table);
            var h3 = T.Decode(Avx2.ShiftRightLogical(q3.AsUInt16(), 4).AsByte() & low, table);
            int o = b * 32;
            acc0 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(T.Dots(l0, l1, l2, l3, h0, h1, h2, h3, (int*)(x0 + o), -T.Offset * s0[b])), dw * Vector256.Create(d0[b]), acc0);
            acc1 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(T.Dots(l0, l1, l2, l3, h0, h1, h2, h3, (int*)(x1 + o), -T.Offset * s1[b])), dw * Vector256.Create(d1[b]), acc1);
            acc2 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(T.Dots(l0, l1, l2, l3, h0, h1, h2, h3, (int*)(x2 + o), -T.Offset * s2[b])), dw * Vector256.Create(d2[b]), acc2);
            acc3 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(T.Dots(l0, l1, l2, l3, h0, h1, h2, h3, (int*)(x3 + o), -T.Offset * s3[b])), dw * Vector256.Create(d3[b]), acc3);
        }

        acc0.Store(output);
        acc1.Store(output + outStride);
        acc2.Store(output + (2 * outStride));
        acc3.Store(output + (3 * outStride));
    }

    /// <summary>ggml's get_scale_min_k4: the 6-bit scale and min of sub-block <paramref name="j"/> from the 12 packed bytes.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void ScaleMinK4(int j, byte* q, out int scale, out int min)
    {
        if (j < 4)
        {
            scale = q[j] & 63;
            min = q[j + 4] & 63;
        }
        else
        {
            scale = (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4);
            min = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
        }
    }

    /// <summary>
    /// Eight FP16 bit patterns (finite) to floats, exactly: the magnitude bits moved into a float's place (a value
    /// 2^112 too small, subnormal halves included) times 2^112, then the sign.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector256<float> HalfToSingle(Vector256<int> bits)
    {
        var magnitude = ((bits & Vector256.Create(0x7FFF)) << 13).AsSingle() * Vector256.Create(BitConverter.Int32BitsToSingle(0x77800000));
        return (magnitude.AsInt32() | ((bits & Vector256.Create(0x8000)) << 16)).AsSingle();
    }

    // One row's block of 32 unsigned 4-bit values in element order (low nibbles, then high nibbles).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<byte> Nibbles(byte* blk, Vector128<byte> low)
    {
        var q = Sse2.LoadVector128(blk + 2);
        return Vector256.Create(Sse2.And(q, low), Sse2.And(Sse2.ShiftRightLogical(q.AsUInt16(), 4).AsByte(), low));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> UnsignedDot(Vector256<byte> u, Vector256<sbyte> x)
    {
        if (AvxVnni.IsSupported)
        {
            return AvxVnni.MultiplyWideningAndAdd(Vector256<int>.Zero, u, x);
        }

        return Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(u, x), Vector256.Create((short)1));
    }

    // Lane r: start + the dot product of row r's 32 nibbles (chunk c's low nibbles l_c: elements 4c..4c+3, high h_c:
    // 16+4c..16+4c+3) with the activations x (as 8 ints of 4 bytes), each 4-byte group broadcast to all lanes. Without
    // VNNI the 16-bit pair sums of Q4_0's nibbles stay within 8 x 2 x 15 x 128 = 30,720: no saturation (IQ4_NL's biased
    // bytes, up to 241, come here only where VNNI runs; without it IQ4_NL takes its signed levels, LowBitRowGroupDot.Iq4Dots).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector256<int> LaneDots(Vector256<byte> l0, Vector256<byte> l1, Vector256<byte> l2, Vector256<byte> l3, Vector256<byte> h0, Vector256<byte> h1, Vector256<byte> h2, Vector256<byte> h3, int* x, int start)
    {
        if (AvxVnni.IsSupported)
        {
            var a = AvxVnni.MultiplyWideningAndAdd(Vector256.Create(start), l0, Vector256.Create(x[0]).AsSByte());
            var c = AvxVnni.MultiplyWideningAndAdd(Vector256<int>.Zero, h0, Vector256.Create(x[4]).AsSByte());
            a = AvxVnni.MultiplyWideningAndAdd(a, l1, Vector256.Create(x[1]).AsSByte());
            c = AvxVnni.MultiplyWideningAndAdd(c, h1, Vector256.Create(x[5]).AsSByte());
            a = AvxVnni.MultiplyWideningAndAdd(a, l2, Vector256.Create(x[2]).AsSByte());
            c = AvxVnni.MultiplyWideningAndAdd(c, h2, Vector256.Create(x[6]).AsSByte());
            a = AvxVnni.MultiplyWideningAndAdd(a, l3, Vector256.Create(x[3]).AsSByte());
            c = AvxVnni.MultiplyWideningAndAdd(c, h3, Vector256.Create(x[7]).AsSByte());
            return a + c;
        }

        var p = Avx2.MultiplyAddAdjacent(l0, Vector256.Create(x[0]).AsSByte()) + Avx2.MultiplyAddAdjacent(h0, Vector256.Create(x[4]).AsSByte());
        p += Avx2.MultiplyAddAdjacent(l1, Vector256.Create(x[1]).AsSByte()) + Avx2.MultiplyAddAdjacent(h1, Vector256.Create(x[5]).AsSByte());
        p += Avx2.MultiplyAddAdjacent(l2, Vector256.Create(x[2]).AsSByte()) + Avx2.MultiplyAddAdjacent(h2, Vector256.Create(x[6]).AsSByte());
        p += Avx2.MultiplyAddAdjacent(l3, Vector256.Create(x[3]).AsSByte()) + Avx2.MultiplyAddAdjacent(h3, Vector256.Create(x[7]).AsSByte());
        return Avx2.MultiplyAddAdjacent(p, Vector256.Create((short)1)) + Vector256.Create(start);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> DotBlock(Vector256<sbyte> w, Vector256<sbyte> x) =>
        // |w| as unsigned times x with w's sign: the unsigned-by-signed product that vpdpbusd / vpmaddubsw need.
        DotAbs(Avx2.Abs(w), Avx2.Sign(x, w));

    // The int32 lanes of |w| (as unsigned) · (x with w's sign).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> DotAbs(Vector256<byte> aw, Vector256<sbyte> sx)
    {
        if (AvxVnni.IsSupported)
        {
            return AvxVnni.MultiplyWideningAndAdd(Vector256<int>.Zero, aw, sx);
        }

        var pairs = Avx2.MultiplyAddAdjacent(aw, sx);
        return Avx2.MultiplyAddAdjacent(pairs, Vector256.Create((short)1));
    }
}
