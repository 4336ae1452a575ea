using KvAdaQuant.Formats;
using KvAdaQuant.Numerics;

namespace KvAdaQuant.Tests.Numerics;

/// <summary>
/// The Q4_K, Q5_K and Q6_K row-group copies (<see cref="KQuantRowGroups"/>) and their 8-row kernels (<see cref="KQuantRowGroupDot"/>):
/// every original byte lands in the slot the layout defines; the vector paths equal their scalar twins bit for bit for
/// 1-4 tokens; a token gives the same bits alone and in a batch; the results are close to the per-row kernels and to a
/// float product with ggml's dequantization written out here; the matrix product reads the copy.
/// </summary>
public unsafe class KQuantRowGroupsTests
{
    private static bool Same(float a, float b) => BitConverter.SingleToInt32Bits(a) == BitConverter.SingleToInt32Bits(b);

    private static int BlockBytes(GgmlType type) => type switch { GgmlType.Q6_K => 210, GgmlType.Q5_K => 176, _ => 144 };

    // Random codes with sane FP16 scales (signed for Q6_K's d; random bytes would give NaN or infinite scales).
    private static byte[] RandomRows(Random rng, GgmlType type, int rows, int superBlocks)
    {
        int bb = BlockBytes(type);
        var w = new byte[rows * superBlocks * bb];
        rng.NextBytes(w);
        for (int i = 0; i < rows * superBlocks; i++)
        {
            fixed (byte* p = &w[i * bb])
            {
                if (type == GgmlType.Q6_K)
                {
                    *(Half*)(p + 208) = (Half)(float)((rng.NextDouble() * 0.02) - 0.01);
                }
                else
                {
                    *(Half*)p = (Half)(float)((rng.NextDouble() * 0.01) + 0.0005);
                    *(Half*)(p + 2) = (Half)(float)(rng.NextDouble() * 0.01);
                }
            }
        }

        return w;
    }

    // ggml's dequantize_row_q4_K / _q5_K / _q6_K for one super-block, written out independently of the library.
    private static float Dequantize(GgmlType type, byte[] data, int o, int e)
    {
        if (type == GgmlType.Q5_K)
        {
            float d = (float)BitConverter.UInt16BitsToHalf(BitConverter.ToUInt16(data, o));
            float dmin = (float)BitConverter.UInt16BitsToHalf(BitConverter.ToUInt16(data, o + 2));
            var sc = data.AsSpan(o + 4, 12);
            int j = e / 32, at = e % 32;
            int s = j < 4 ? sc[j] & 63 : (sc[j + 4] & 0xF) | ((sc[j - 4] >> 6) << 4);
            int m = j < 4 ? sc[j + 4] & 63 : (sc[j + 4] >> 4) | ((sc[j] >> 6) << 4);
            byte nibbles = data[o + 48 + ((j / 2) * 32) + at];
            int high = (data[o + 16 + at] & (1 << j)) != 0 ? 16 : 0;
            return (d * s * ((j % 2 == 0 ? nibbles & 0xF : nibbles >> 4) + high)) - (dmin * m);
        }

        if (type == GgmlType.Q4_K)
        {
            float d = (float)BitConverter.UInt16BitsToHalf(BitConverter.ToUInt16(data, o));
            float dmin = (float)BitConverter.UInt16BitsToHalf(BitConverter.ToUInt16(data, o + 2));
            var sc = data.AsSpan(o + 4, 12);
            int j = e / 32;
            int s = j < 4 ? sc[j] & 63 : (sc[j + 4] & 0xF) | ((sc[j - 4] >> 6) << 4);
            int m = j < 4 ? sc[j + 4] & 63 : (sc[j + 4] >> 4) | ((sc[j] >> 6) << 4);
            byte q = data[o + 16 + ((j / 2) * 32) + (e % 32)];
            return (d * s * (j % 2 == 0 ? q & 0xF : q >> 4)) - (dmin * m);
        }

        float d6 = (float)BitConverter.UInt16BitsToHalf(BitConverter.ToUInt16(data, o + 208));
        int h = e / 128, l = e % 32, g = (e % 128) / 32;
        byte ql = data[o + (h * 64) + ((g % 2) * 32) + l];
        byte qh = data[o + 128 + (h * 32) + l];
        int v = (g < 2 ? ql & 0xF : ql >> 4) | (((qh >> (2 * g)) & 3) << 4);
        return d6 * (sbyte)data[o + 192 + (h * 8) + (l / 16) + (2 * g)] * (v - 32);
    }

    [Theory]
    [InlineData(GgmlType.Q4_K)]
    [InlineData(GgmlType.Q5_K)]
    [InlineData(GgmlType.Q6_K)]
    public void Repack_MovesEveryByteToItsSlotOnce(GgmlType type)
    {
        var rng = new Random(3);
        const int rows = 16, superBlocks = 2;
        int bb = BlockBytes(type), unitBytes = 8 * bb;
        var data = RandomRows(rng, type, rows, superBlocks);
        fixed (byte* p = data)
        {
            using var w = new WeightMatrix("w", type, rows, superBlocks * 256, p);
            var copy = new byte[w.ByteCount];
            fixed (byte* c = copy)
            {
                KQuantRowGroups.Repack(w, c, 0, rows / 8);
            }

            var hits = new int[copy.Length];
            for (int r = 0; r < rows; r++)
            {
                for (int b = 0; b < superBlocks; b++)
                {
                    int unit = (((r / 8) * superBlocks) + b) * unitBytes;
                    int src = ((r * superBlocks) + b) * bb;
                    int rr = r % 8;
                    for (int i = 0; i < bb; i++)
                    {
                        // where byte i of the super-block goes, from the layout's definition
                        int at = type != GgmlType.Q6_K
                            ? i switch
                            {
                                < 2 => (2 * rr) + i,
                                < 4 => 16 + (2 * rr) + (i - 2),
                                < 16 => 32 + (32 * ((i - 4) / 4)) + (4 * rr) + ((i - 4) % 4),
                                _ => type == GgmlType.Q5_K ? KQuantRowGroups.Q5_KQuantOffset(rr, i - 16) : KQuantRowGroups.Q4_KQuantOffset(rr, i - 16),
                            }
                            : i switch
                            {
                                < 192 => KQuantRowGroups.Q6_KQuantOffset(rr, i),
                                < 208 => 16 + (32 * ((i - 192) / 4)) + (4 * rr) + ((i - 192) % 4),
                                _ => (2 * rr) + (i - 208),
                            };
                        Assert.True(data[src + i] == copy[unit + at], $"row {r} super-block {b} byte {i}");
                        hits[unit + at]++;
                    }
                }
            }

            Assert.All(hits, h => Assert.Equal(1, h));
        }
    }

    [Fact]
    public void QuantOffsets_FollowTheChunkLayout()
    {
        // Q4_K: nibble byte 32g + 4c + k of row r in chunk 4c + g; Q6_K: ql[64h + 32k' + 4c..] and qh[32h + 4c..] in chunk (8h + c) x 3 + k.
        Assert.Equal(128 + (0 * 32) + (3 * 4) + 1, KQuantRowGroups.Q4_KQuantOffset(3, 1));
        Assert.Equal(128 + ((((1 * 4) + 2) * 32) + (5 * 4) + 3), KQuantRowGroups.Q4_KQuantOffset(5, 64 + 4 + 3));
        Assert.Equal(144 + (((((1 * 8) + 2) * 3) + 1) * 32) + (7 * 4) + 2, KQuantRowGroups.Q6_KQuantOffset(7, 64 + 32 + 8 + 2));
        Assert.Equal(144 + (((((0 * 8) + 7) * 3) + 2) * 32) + (0 * 4) + 3, KQuantRowGroups.Q6_KQuantOffset(0, 128 + 28 + 3));

        // Q5_K: qh bytes 4c + k in chunk c from 128, the nibbles as Q4_K's from 384
        Assert.Equal(128 + (5 * 32) + (6 * 4) + 2, KQuantRowGroups.Q5_KQuantOffset(6, 22));
        Assert.Equal(384 + ((((1 * 4) + 2) * 32) + (5 * 4) + 3), KQuantRowGroups.Q5_KQuantOffset(5, 32 + 64 + 4 + 3));
    }

    [Fact]
    public void Repack_RejectsMatricesWithoutRowGroups()
    {
        var data = new byte[12 * 144];
        fixed (byte* p = data)
        {
            using var w = new WeightMatrix("blk.0.ffn_up.weight", GgmlType.Q4_K, 12, 256, p);
            Assert.False(w.HasKQuantRowGroups);
            var e = Assert.Throws<InvalidOperationException>(() => w.KQuantRowGroupData());
            Assert.Contains("blk.0.ffn_up.weight", e.Message);
            Assert.Contains("12 rows", e.Message);
            var buffer = new byte[data.Length];
            fixed (byte* b = buffer)
            {
                byte* pb = b;
                var a = Assert.Throws<ArgumentException>(() => KQuantRowGroups.Repack(w, pb, 0, 1));
                Assert.Contains("blk.0.ffn_up.weight", a.Message);
            }

            using var q8 = new WeightMatrix("w", GgmlType.Q8_0, 16, 32, p);
            Assert.False(q8.HasKQuantRowGroups);
        }
    }

    [Fact]
    public void Q8KActivations_PairsTheSumsForTheRowGroupKernels()
    {
        var rng = new Random(8);
        var x = Enumerable.Range(0, 2 * 512).Select(_ => (float)((rng.NextDouble() * 2) - 1)).ToArray();
        var a = new Q8KActivations();
        a.Quantize(x, 2, 512);
        for (int b = 0; b < 4; b++)
        {
            var s = a.Sums16.AsSpan(b * 16, 16);
            for (int v = 0; v < 4; v++)
            {
                Assert.Equal(s[4 * v], (short)a.Sums16Pairs[(b * 8) + (2 * v)]);
                Assert.Equal(s[(4 * v) + 2], a.Sums16Pairs[(b * 8) + (2 * v)] >> 16);
                Assert.Equal(s[(4 * v) + 1], (short)a.Sums16Pairs[(b * 8) + (2 * v) + 1]);
                Assert.Equal(s[(4 * v) + 3], a.Sums16Pairs[(b * 8) + (2 * v) + 1] >> 16);
            }

            int[] order = [0, 2, 1, 3, 4, 6, 5, 7];
            for (int i = 0; i < 4; i++)
            {
                int j0 = order[2 * i], j1 = order[(2 * i) + 1];
                Assert.Equal(s[2 * j0] + s[(2 * j0) + 1], (short)a.Sums32Pairs[(b * 4) + i]);
                Assert.Equal(s[2 * j1] + s[(2 * j1) + 1], a.Sums32Pairs[(b * 4) + i] >> 16);
            }
        }
    }

    private delegate void GroupDot(byte* group, int superBlocks, int tokens, sbyte* xq, long xStride, float* xd, short* xsum, int* xpairs, float* output, long outStride);

    private static void Q4Vector(byte* g, int sb, int t, sbyte* xq, long xs, float* xd, short* xsum, int* xp, float* o, long os) => KQuantRowGroupDot.DotQ4_KAvx2(g, sb, t, xq, xs, xd, xp, o, os);

    private static void Q4Scalar(byte* g, int sb, int t, sbyte* xq, long xs, float* xd, short* xsum, int* xp, float* o, long os) => KQuantRowGroupDot.DotQ4_KScalar(g, sb, t, xq, xs, xd, xsum, o, os);

    private static void Q5Vector(byte* g, int sb, int t, sbyte* xq, long xs, float* xd, short* xsum, int* xp, float* o, long os) => KQuantRowGroupDot.DotQ5_KAvx2(g, sb, t, xq, xs, xd, xp, o, os);

    private static void Q5Scalar(byte* g, int sb, int t, sbyte* xq, long xs, float* xd, short* xsum, int* xp, float* o, long os) => KQuantRowGroupDot.DotQ5_KScalar(g, sb, t, xq, xs, xd, xsum, o, os);

    private static void Q6Vector(byte* g, int sb, int t, sbyte* xq, long xs, float* xd, short* xsum, int* xp, float* o, long os) => KQuantRowGroupDot.DotQ6_KAvx2(g, sb, t, xq, xs, xd, xp, o, os);

    private static void Q6Scalar(byte* g, int sb, int t, sbyte* xq, long xs, float* xd, short* xsum, int* xp, float* o, long os) => KQuantRowGroupDot.DotQ6_KScalar(g, sb, t, xq, xs, xd, xsum, o, os);

    [Theory]
    [InlineData(GgmlType.Q4_K, 1, 1)]
    [InlineData(GgmlType.Q4_K, 3, 2)]
    [InlineData(GgmlType.Q4_K, 5, 4)]
    [InlineData(GgmlType.Q4_K, 8, 3)]
    [InlineData(GgmlType.Q5_K, 1, 1)]
    [InlineData(GgmlType.Q5_K, 3, 4)]
    [InlineData(GgmlType.Q5_K, 8, 2)]
    [InlineData(GgmlType.Q6_K, 1, 1)]
    [InlineData(GgmlType.Q6_K, 3, 4)]
    [InlineData(GgmlType.Q6_K, 5, 2)]
    [InlineData(GgmlType.Q6_K, 8, 4)]
    public void VectorPathEqualsScalarTwin_BatchEqualsSingle_CloseToRowKernelAndFloat(GgmlType type, int superBlocks, int tokens)
    {
        var rng = new Random((superBlocks * 10) + tokens + (type == GgmlType.Q6_K ? 500 : 0));
        int cols = superBlocks * 256, bb = BlockBytes(type);
        var data = RandomRows(rng, type, 8, superBlocks);
        var x = Enumerable.Range(0, tokens * cols).Select(_ => (float)((rng.NextDouble() * 2) - 1)).ToArray();
        var a = new Q8KActivations();
        a.Quantize(x, tokens, cols);
        bool q6 = type == GgmlType.Q6_K;
        int pairsPerBlock = q6 ? 8 : 4;
        GroupDot vector = type switch { GgmlType.Q6_K => Q6Vector, GgmlType.Q5_K => Q5Vector, _ => Q4Vector };
        GroupDot scalar = type switch { GgmlType.Q6_K => Q6Scalar, GgmlType.Q5_K => Q5Scalar, _ => Q4Scalar };
        const int stride = 11;
        var vec = new float[tokens * stride];
        var sca = new float[tokens * stride];
        var single = new float[tokens * stride];
        var copy = new byte[data.Length];
        fixed (byte* p = data)
        fixed (byte* c = copy)
        fixed (sbyte* pq = a.Values)
        fixed (float* pd = a.Scales)
        fixed (short* ps = a.Sums16)
        fixed (int* pp = q6 ? a.Sums16Pairs : a.Sums32Pairs)
        fixed (float* pv = vec)
        fixed (float* psc = sca)
        fixed (float* p1 = single)
        {
            using var w = new WeightMatrix("w", type, 8, cols, p);
            KQuantRowGroups.Repack(w, c, 0, 1);
            scalar(c, superBlocks, tokens, pq, cols, pd, ps, pp, psc, stride);
            if (KQuantRowGroupDot.VectorPathSupported)
            {
                vector(c, superBlocks, tokens, pq, cols, pd, ps, pp, pv, stride);
                for (int t = 0; t < tokens; t++)
                {
                    vector(c, superBlocks, 1, pq + (t * cols), cols, pd + (t * superBlocks), ps + (t * superBlocks * 16), pp + (t * superBlocks * pairsPerBlock), p1 + (t * stride), stride);
                }
            }

            var row = new float[1];
            for (int t = 0; t < tokens; t++)
            {
                for (int r = 0; r < 8; r++)
                {
                    int i = (t * stride) + r;
                    if (KQuantRowGroupDot.VectorPathSupported)
                    {
                        Assert.True(Same(sca[i], vec[i]), $"token {t} row {r}: vector {vec[i]:R} vs scalar twin {sca[i]:R}");
                        Assert.True(Same(single[i], vec[i]), $"token {t} row {r}: alone {single[i]:R} vs in a batch of {tokens} {vec[i]:R}");
                    }

                    // the dequantized row times the quantized activations in double (the same product, rounded only at the
                    // end), the per-row kernel (another summation order) and the float product of the dequantized row
                    double exact = 0, norm = 0, quantized = 0;
                    for (int e = 0; e < cols; e++)
                    {
                        double we = Dequantize(type, data, ((r * superBlocks) + (e / 256)) * bb, e % 256);
                        double wx = we * x[(t * cols) + e];
                        exact += wx;
                        norm += Math.Abs(wx);
                        quantized += we * a.Values[(t * cols) + e] * (double)a.Scales[(t * superBlocks) + (e / 256)];
                    }

                    Assert.True(Math.Abs(sca[i] - quantized) <= 1e-5 * norm, $"token {t} row {r}: {sca[i]} vs {quantized} (sum |w x| {norm})");
                    Assert.True(Math.Abs(sca[i] - exact) <= 0.02 * norm, $"token {t} row {r}: {sca[i]} vs float {exact} (sum |w x| {norm})");
                    if (type != GgmlType.Q5_K)
                    {
                        fixed (float* pr = row)
                        {
                            if (q6)
                            {
                                KQuantDot.DotQ6_KScalar(p + (r * superBlocks * bb), superBlocks, 1, pq + (t * cols), pd + (t * superBlocks), pr, 1);
                            }
                            else
                            {
                                KQuantDot.DotQ4_KScalar(p + (r * superBlocks * bb), superBlocks, 1, pq + (t * cols), pd + (t * superBlocks), ps + (t * superBlocks * 16), pr, 1);
                            }
                        }

                        Assert.True(Math.Abs(sca[i] - row[0]) <= 1e-5 * norm, $"token {t} row {r}: {sca[i]} vs per-row kernel {row[0]} (sum |w x| {norm})");
                    }
                }

                // the outputs between the strides are left alone.
                Assert.Equal(0f, vec[(t * stride) + 8]);
                Assert.Equal(0f, sca[(t * stride) + 10]);
            }
        }
    }

    [Theory]
    [InlineData(GgmlType.Q4_K)]
    [InlineData(GgmlType.Q5_K)]
    [InlineData(GgmlType.Q6_K)]
    public void ExtremeCodes_IntegerSumsStayExact(GgmlType type)
    {
        // Q6_K: all values q = 0 (q - 32 = -32) and scales -128; Q4_K (Q5_K): all nibbles 15 (values 31), scales and
        // minimums 63. Activations
        // all +-127 after quantization: the largest integer sums the kernels hold.
        int bb = BlockBytes(type);
        var block = new byte[bb];
        if (type == GgmlType.Q6_K)
        {
            block.AsSpan(192, 16).Fill(0x80);
            BitConverter.TryWriteBytes(block.AsSpan(208), (Half)1f);
        }
        else
        {
            block.AsSpan(4, 12).Fill(0xFF);
            block.AsSpan(16).Fill(0xFF);
            BitConverter.TryWriteBytes(block.AsSpan(0), (Half)1f);
            BitConverter.TryWriteBytes(block.AsSpan(2), (Half)1f);
        }

        var data = Enumerable.Range(0, 8).SelectMany(_ => block).ToArray();
        var x = Enumerable.Range(0, 256).Select(i => i == 0 ? 1f : -1f).ToArray();
        var a = new Q8KActivations();
        a.Quantize(x, 1, 256);
        var copy = new byte[data.Length];
        var vec = new float[8];
        var sca = new float[8];
        fixed (byte* p = data)
        fixed (byte* c = copy)
        fixed (sbyte* pq = a.Values)
        fixed (float* pd = a.Scales)
        fixed (short* ps = a.Sums16)
        fixed (int* pp16 = a.Sums16Pairs)
        fixed (int* pp32 = a.Sums32Pairs)
        fixed (float* pv = vec)
        fixed (float* psc = sca)
        {
            using var w = new WeightMatrix("w", type, 8, 256, p);
            KQuantRowGroups.Repack(w, c, 0, 1);
            if (type == GgmlType.Q6_K)
            {
                KQuantRowGroupDot.DotQ6_KScalar(c, 1, 1, pq, 256, pd, ps, psc, 8);
                if (KQuantRowGroupDot.VectorPathSupported)
                {
                    KQuantRowGroupDot.DotQ6_KAvx2(c, 1, 1, pq, 256, pd, pp16, pv, 8);
                }
            }
            else if (type == GgmlType.Q5_K)
            {
                KQuantRowGroupDot.DotQ5_KScalar(c, 1, 1, pq, 256, pd, ps, psc, 8);
                if (KQuantRowGroupDot.VectorPathSupported)
                {
                    KQuantRowGroupDot.DotQ5_KAvx2(c, 1, 1, pq, 256, pd, pp32, pv, 8);
                }
            }
            else
            {
                KQuantRowGroupDot.DotQ4_KScalar(c, 1, 1, pq, 256, pd, ps, psc, 8);
                if (KQuantRowGroupDot.VectorPathSupported)
                {
                    KQuantRowGroupDot.DotQ4_KAvx2(c, 1, 1, pq, 256, pd, pp32, pv, 8);
                }
            }
        }

        // exact: sum over values of w x, x = -127 at value 0 and 127 elsewhere, times the activation scale -1/127
        double wq = type switch { GgmlType.Q6_K => -128.0 * -32, GgmlType.Q5_K => (63.0 * 31) - 63, _ => (63.0 * 15) - 63 };
        double exact = wq * 127 * 254 * a.Scales[0];
        for (int r = 0; r < 8; r++)
        {
            Assert.True(Math.Abs(exact - sca[r]) <= 1e-6 * Math.Abs(exact), $"row {r}: {sca[r]} vs {exact}");
            if (KQuantRowGroupDot.VectorPathSupported)
            {
                Assert.True(Same(sca[r], vec[r]), $"row {r}: vector {vec[r]:R} vs scalar {sca[r]:R}");
            }
        }
    }

    [Theory]
    [InlineData(GgmlType.Q4_K, 1)]
    [InlineData(GgmlType.Q4_K, 6)]
    [InlineData(GgmlType.Q5_K, 5)]
    [InlineData(GgmlType.Q6_K, 1)]
    [InlineData(GgmlType.Q6_K, 7)]
    public void MatMul_ReadsTheCopyWithTheScalarTwinsBitsAndLeavesTheRowsAlone(GgmlType type, int tokens)
    {
        var rng = new Random(70 + tokens);
        const int rows = 48, superBlocks = 3, cols = superBlocks * 256;
        var data = RandomRows(rng, type, rows, superBlocks);
        var original = data.ToArray();
        var x = Enumerable.Range(0, tokens * cols).Select(_ => (float)((rng.NextDouble() * 4) - 2)).ToArray();
        var a = new Q8KActivations();
        a.Quantize(x, tokens, cols);
        var y = new float[tokens * rows];
        var expected = new float[tokens * rows];
        using var pool = new WorkerPool(2);
        var kernel = new MatMulKernel(pool);
        var copy = new byte[data.Length];
        fixed (byte* p = data)
        fixed (byte* c = copy)
        fixed (sbyte* pq = a.Values)
        fixed (float* pd = a.Scales)
        fixed (short* ps = a.Sums16)
        fixed (float* pe = expected)
        {
            using var w = new WeightMatrix("w", type, rows, cols, p);
            Assert.True(w.HasKQuantRowGroups);
            Assert.False(w.HasResidentRows);
            Assert.False(w.IsRepacked);
            kernel.MatMul(w, x, y, tokens);
            Assert.True(w.IsRepacked);
            KQuantRowGroups.Repack(w, c, 0, rows / 8);
            Assert.True(copy.AsSpan().SequenceEqual(new ReadOnlySpan<byte>(w.KQuantRowGroupData(), copy.Length)));
            for (int g = 0; g < rows / 8; g++)
            {
                for (int t = 0; t < tokens; t++)
                {
                    byte* group = c + (g * 8L * w.RowByteCount);
                    if (type == GgmlType.Q6_K)
                    {
                        KQuantRowGroupDot.DotQ6_KScalar(group, superBlocks, 1, pq + (t * cols), cols, pd + (t * superBlocks), ps + (t * superBlocks * 16), pe + (t * rows) + (g * 8), rows);
                    }
                    else if (type == GgmlType.Q5_K)
                    {
                        KQuantRowGroupDot.DotQ5_KScalar(group, superBlocks, 1, pq + (t * cols), cols, pd + (t * superBlocks), ps + (t * superBlocks * 16), pe + (t * rows) + (g * 8), rows);
                    }
                    else
                    {
                        KQuantRowGroupDot.DotQ4_KScalar(group, superBlocks, 1, pq + (t * cols), cols, pd + (t * superBlocks), ps + (t * superBlocks * 16), pe + (t * rows) + (g * 8), rows);
                    }
                }
            }

            Assert.Equal(expected, y);
            Assert.Equal(original, data);

            // disposing the copy leaves the matrix usable: the next product makes it again, with the same bits.
            w.Dispose();
            Assert.False(w.IsRepacked);
            var again = new float[y.Length];
            kernel.MatMul(w, x, again, tokens);
            Assert.Equal(y, again);
        }
    }

    [Fact]
    public void FileMappedMatrix_DropsItsMappedPagesAfterRepacking()
    {
        if (!OperatingSystem.IsLinux())
        {
            return;
        }

        var rng = new Random(12);
        const int rows = 256, superBlocks = 8; // Q4_K: 294,912 bytes, 72 pages
        var data = RandomRows(rng, GgmlType.Q4_K, rows, superBlocks);
        using var dir = new TempDir();
        string path = dir.File("q4_k-rows.bin");
        File.WriteAllBytes(path, data);
        using var file = new MappedFile(path);
        using var w = new WeightMatrix("w", GgmlType.Q4_K, rows, superBlocks * 256, file.Pointer) { IsFileMapped = true };
        Assert.True(w.HasKQuantRowGroups);
        Assert.False(w.HasResidentRows);
        long sum = 0;
        for (int r = 0; r < rows; r++)
        {
            foreach (byte b in w.RowData(r))
            {
                sum += b;
            }
        }

        Assert.True(ProcessMappings.ResidentKb(path) >= (data.Length / 1024) - 8);
        using var pool = new WorkerPool(2);
        w.KQuantRowGroupData(pool);
        long after = ProcessMappings.ResidentKb(path);
        Assert.True(after <= 8, $"mapping still resident after repacking: {after} kB");
        for (int r = 0; r < rows; r++)
        {
            Assert.True(w.RowData(r).SequenceEqual(data.AsSpan(r * superBlocks * 144, superBlocks * 144)), $"row {r}");
        }

        // Lookups (a token embedding that is also the classifier) leave the mapping released.
        ProcessMappings.AssertLookupsLeaveTheMappingReleased(w, data, path, step: 5);
    }
}
