using KvAdaQuant.Numerics;

namespace KvAdaQuant.Tests.Numerics;

/// <summary>
/// The Q2_K, Q3_K and IQ4_XS row-group copies (dword-interleaved units of <see cref="KQuantRowGroups"/>) and their 8-row kernels
/// (<see cref="LowBitRowGroupDot"/>): every original byte lands in its slot once; the vector paths equal their scalar twins,
/// a token alone equals the same token in a batch, and every row equals the row-by-row kernel (<see cref="LowBitDot"/>,
/// tested against the dequantized product in <c>LowBitDotTests</c>) bit for bit, subnormal FP16 scales and the extreme
/// codes included; the matrix product reads the copy.
/// </summary>
public unsafe class LowBitRowGroupsTests
{
    private static bool Same(float a, float b) => BitConverter.SingleToInt32Bits(a) == BitConverter.SingleToInt32Bits(b);

    private static int BlockBytes(GgmlType type) => type switch
    {
        GgmlType.Q2_K => LowBitDot.Q2_KBlockBytes,
        GgmlType.Q3_K => LowBitDot.Q3_KBlockBytes,
        _ => LowBitDot.Iq4_XSBlockBytes,
    };

    private static bool VectorRuns(GgmlType type) => type == GgmlType.IQ4_XS ? LowBitRowGroupDot.Iq4_XSVectorPathSupported : LowBitRowGroupDot.Q2_KVectorPathSupported;

    // Random codes and scale bytes with finite FP16 scales; every third super-block's scales subnormal (as IQ4_XS files
    // of small weights have), the kernels' conversion of those is the one the row kernels use.
    private static byte[] RandomRows(Random rng, GgmlType type, int rows, int superBlocks)
    {
        int bb = BlockBytes(type);
        var w = new byte[rows * superBlocks * bb];
        rng.NextBytes(w);
        for (int i = 0; i < rows * superBlocks; i++)
        {
            fixed (byte* p = &w[i * bb])
            {
                float scale = i % 3 == 2 ? 3e-6f : 0.01f;
                var d = (Half)(float)((rng.NextDouble() * scale) + (scale / 20));
                switch (type)
                {
                    case GgmlType.Q2_K:
                        *(Half*)(p + 80) = d;
                        *(Half*)(p + 82) = (Half)(float)(rng.NextDouble() * scale);
                        break;
                    case GgmlType.Q3_K:
                        *(Half*)(p + 108) = d;
                        break;
                    default:
                        *(Half*)p = d;
                        break;
                }
            }
        }

        return w;
    }

    private static void Group(GgmlType type, bool vector, byte* g, int superBlocks, int tokens, sbyte* xq, long xStride, float* xd, short* xs, int* xp, float* o, long os)
    {
        switch (type, vector)
        {
            case (GgmlType.Q2_K, true):
                LowBitRowGroupDot.DotQ2_KAvx2(g, superBlocks, tokens, xq, xStride, xd, xp, o, os);
                break;
            case (GgmlType.Q2_K, false):
                LowBitRowGroupDot.DotQ2_KScalar(g, superBlocks, tokens, xq, xStride, xd, xs, o, os);
                break;
            case (GgmlType.Q3_K, true):
                LowBitRowGroupDot.DotQ3_KAvx2(g, superBlocks, tokens, xq, xStride, xd, xp, o, os);
                break;
            case (GgmlType.Q3_K, false):
                LowBitRowGroupDot.DotQ3_KScalar(g, superBlocks, tokens, xq, xStride, xd, xs, o, os);
                break;
            case (_, true):
                LowBitRowGroupDot.DotIq4_XSAvx2(g, superBlocks, tokens, xq, xStride, xd, xs, o, os);
                break;
            default:
                LowBitRowGroupDot.DotIq4_XSScalar(g, superBlocks, tokens, xq, xStride, xd, xs, o, os);
                break;
        }
    }

    // The row-by-row kernel (vector path where it runs) on the original row.
    private static float RowKernel(GgmlType type, byte* row, int superBlocks, sbyte* xq, float* xd, short* xs)
    {
        float y;
        switch (type)
        {
            case GgmlType.Q2_K:
                LowBitDot.DotQ2_K(row, superBlocks, 1, xq, xd, xs, &y, 1);
                break;
            case GgmlType.Q3_K:
                LowBitDot.DotQ3_K(row, superBlocks, 1, xq, xd, xs, &y, 1);
                break;
            default:
                LowBitDot.DotIq4_XS(row, superBlocks, 1, xq, xd, &y, 1);
                break;
        }

        return y;
    }

    [Theory]
    [InlineData(GgmlType.Q2_K)]
    [InlineData(GgmlType.Q3_K)]
    [InlineData(GgmlType.IQ4_XS)]
    public void Repack_MovesEveryByteToItsSlotOnce(GgmlType type)
    {
        var rng = new Random(5);
        const int rows = 16, superBlocks = 3;
        int bb = BlockBytes(type), unitBytes = 8 * bb;
        Assert.Equal(unitBytes, KQuantRowGroups.UnitBytes(type));
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
                    for (int i = 0; i < bb; i++)
                    {
                        // dword i / 4 of every row in one chunk of 32 bytes, row r % 8 at 4 (r % 8); Q3_K's last two bytes (d)
                        // after the 27 chunks, row r % 8 at 2 (r % 8)
                        int at = i < (bb & ~3) ? (32 * (i / 4)) + (4 * (r % 8)) + (i % 4) : (27 * 32) + (2 * (r % 8)) + (i - 108);
                        Assert.Equal(at, KQuantRowGroups.InterleavedOffset(r % 8, i, bb));
                        Assert.True(data[src + i] == copy[unit + at], $"row {r} super-block {b} byte {i}");
                        hits[unit + at]++;
                    }
                }
            }

            Assert.All(hits, h => Assert.Equal(1, h));
        }
    }

    [Theory]
    [InlineData(GgmlType.Q2_K, 1, 1)]
    [InlineData(GgmlType.Q2_K, 3, 2)]
    [InlineData(GgmlType.Q2_K, 4, 3)]
    [InlineData(GgmlType.Q2_K, 6, 4)]
    [InlineData(GgmlType.Q3_K, 1, 1)]
    [InlineData(GgmlType.Q3_K, 3, 2)]
    [InlineData(GgmlType.Q3_K, 4, 3)]
    [InlineData(GgmlType.Q3_K, 6, 4)]
    [InlineData(GgmlType.IQ4_XS, 1, 1)]
    [InlineData(GgmlType.IQ4_XS, 3, 2)]
    [InlineData(GgmlType.IQ4_XS, 4, 3)]
    [InlineData(GgmlType.IQ4_XS, 6, 4)]
    public void VectorEqualsScalarTwin_BatchEqualsSingle_EachRowEqualsTheRowKernel(GgmlType type, int superBlocks, int tokens)
    {
        var rng = new Random((superBlocks * 10) + tokens + (100 * (int)type));
        int cols = superBlocks * 256, bb = BlockBytes(type);
        var data = RandomRows(rng, type, 8, superBlocks);
        var x = Enumerable.Range(0, tokens * cols).Select(_ => (float)((rng.NextDouble() * 2) - 1)).ToArray();
        var a = new Q8KActivations();
        a.Quantize(x, tokens, cols);
        const int stride = 11;
        var vec = new float[tokens * stride];
        var sca = new float[tokens * stride];
        var single = new float[tokens * stride];
        var copy = new byte[data.Length];
        bool vector = VectorRuns(type);
        fixed (byte* p = data)
        fixed (byte* c = copy)
        fixed (sbyte* pq = a.Values)
        fixed (float* pd = a.Scales)
        fixed (short* ps = a.Sums16)
        fixed (int* pp = a.Sums16Pairs)
        fixed (float* pv = vec)
        fixed (float* psc = sca)
        fixed (float* p1 = single)
        {
            using var w = new WeightMatrix("w", type, 8, cols, p);
            KQuantRowGroups.Repack(w, c, 0, 1);
            Group(type, false, c, superBlocks, tokens, pq, cols, pd, ps, pp, psc, stride);
            if (vector)
            {
                Group(type, true, c, superBlocks, tokens, pq, cols, pd, ps, pp, pv, stride);
                for (int t = 0; t < tokens; t++)
                {
                    Group(type, true, c, superBlocks, 1, pq + (t * cols), cols, pd + (t * superBlocks), ps + (t * superBlocks * 16), pp + (t * superBlocks * 8), p1 + (t * stride), stride);
                }
            }

            for (int t = 0; t < tokens; t++)
            {
                for (int r = 0; r < 8; r++)
                {
                    int i = (t * stride) + r;
                    float row = RowKernel(type, p + (r * superBlocks * bb), superBlocks, pq + (t * cols), pd + (t * superBlocks), ps + (t * superBlocks * 16));
                    Assert.True(Same(row, sca[i]), $"token {t} row {r}: scalar twin {sca[i]:R} vs row kernel {row:R}");
                    if (vector)
                    {
                        Assert.True(Same(sca[i], vec[i]), $"token {t} row {r}: vector {vec[i]:R} vs scalar twin {sca[i]:R}");
                        Assert.True(Same(single[i], vec[i]), $"token {t} row {r}: alone {single[i]:R} vs in a batch of {tokens} {vec[i]:R}");
                    }
                }

                // the outputs between the strides are left alone.
                Assert.Equal(0f, vec[(t * stride) + 8]);
                Assert.Equal(0f, sca[(t * stride) + 10]);
            }
        }
    }

    [Theory]
    [InlineData(GgmlType.Q2_K, 1)]
    [InlineData(GgmlType.Q2_K, 4)]
    [InlineData(GgmlType.Q3_K, 1)]
    [InlineData(GgmlType.Q3_K, 4)]
    [InlineData(GgmlType.IQ4_XS, 1)]
    [InlineData(GgmlType.IQ4_XS, 4)]
    public void ExtremeCodes_IntegerSumsStayExact(GgmlType type, int tokens)
    {
        // Q2_K: codes 3, scales and minimums 15; Q3_K: every value -4 (codes 0, high bits clear) with scale -32 (all scale
        // bits clear), or 3 with scale 31 (all bits set), alternating by row; IQ4_XS: every code 0 (level -127) with scale 0 (-32), or every code 15
        // (113) with scale 63 (31), alternating by row. Activations -1 at value 0 and 1 elsewhere: the quantized values at their
        // largest magnitude.
        int bb = BlockBytes(type);
        var data = new byte[8 * bb];
        for (int r = 0; r < 8; r++)
        {
            var block = data.AsSpan(r * bb, bb);
            if (type == GgmlType.Q2_K)
            {
                block[..80].Fill(0xFF);
                BitConverter.TryWriteBytes(block[80..], (Half)1f);
                BitConverter.TryWriteBytes(block[82..], (Half)0.5f);
            }
            else if (type == GgmlType.Q3_K)
            {
                block[..108].Fill(r % 2 == 0 ? (byte)0 : (byte)0xFF);
                BitConverter.TryWriteBytes(block[108..], (Half)1f);
            }
            else
            {
                bool low = r % 2 == 0;
                BitConverter.TryWriteBytes(block, (Half)1f);
                block.Slice(2, 6).Fill(low ? (byte)0 : (byte)0xFF);
                block[8..].Fill(low ? (byte)0 : (byte)0xFF);
            }
        }

        var x = Enumerable.Range(0, tokens * 256).Select(i => i % 256 == 0 ? -1f : 1f).ToArray();
        var a = new Q8KActivations();
        a.Quantize(x, tokens, 256);
        var copy = new byte[data.Length];
        var vec = new float[tokens * 8];
        var sca = new float[tokens * 8];
        fixed (byte* p = data)
        fixed (byte* c = copy)
        fixed (sbyte* pq = a.Values)
        fixed (float* pd = a.Scales)
        fixed (short* ps = a.Sums16)
        fixed (int* pp = a.Sums16Pairs)
        fixed (float* pv = vec)
        fixed (float* psc = sca)
        {
            using var w = new WeightMatrix("w", type, 8, 256, p);
            KQuantRowGroups.Repack(w, c, 0, 1);
            Group(type, false, c, 1, tokens, pq, 256, pd, ps, pp, psc, 8);
            if (VectorRuns(type))
            {
                Group(type, true, c, 1, tokens, pq, 256, pd, ps, pp, pv, 8);
            }

            for (int t = 0; t < tokens; t++)
            {
                for (int r = 0; r < 8; r++)
                {
                    // every value's weight times the sum of the quantized activations, times their scale
                    double wv = type switch
                    {
                        GgmlType.Q2_K => (15.0 * 3) - (0.5 * 15),
                        GgmlType.Q3_K => r % 2 == 0 ? -32.0 * -4 : 31.0 * 3,
                        _ => r % 2 == 0 ? -32.0 * -127 : 31.0 * 113,
                    };
                    long qsum = 0;
                    for (int e = 0; e < 256; e++)
                    {
                        qsum += a.Values[(t * 256) + e];
                    }

                    double exact = wv * qsum * a.Scales[t];
                    int i = (t * 8) + r;
                    Assert.True(Math.Abs(exact - sca[i]) <= 1e-6 * Math.Abs(exact), $"token {t} row {r}: {sca[i]} vs {exact}");
                    float row = RowKernel(type, p + (r * bb), 1, pq + (t * 256), pd + t, ps + (t * 16));
                    Assert.True(Same(row, sca[i]), $"token {t} row {r}: scalar twin {sca[i]:R} vs row kernel {row:R}");
                    if (VectorRuns(type))
                    {
                        Assert.True(Same(sca[i], vec[i]), $"token {t} row {r}: vector {vec[i]:R} vs scalar twin {sca[i]:R}");
                    }
                }
            }
        }
    }

    [Theory]
    [InlineData(GgmlType.Q2_K, 1)]
    [InlineData(GgmlType.Q2_K, 6)]
    [InlineData(GgmlType.Q3_K, 1)]
    [InlineData(GgmlType.Q3_K, 5)]
    [InlineData(GgmlType.IQ4_XS, 1)]
    [InlineData(GgmlType.IQ4_XS, 7)]
    public void MatMul_ReadsTheCopyWithTheRowKernelsBitsAndLeavesTheRowsAlone(GgmlType type, int tokens)
    {
        var rng = new Random(90 + tokens);
        const int rows = 48, superBlocks = 3, cols = superBlocks * 256;
        int bb = BlockBytes(type);
        var data = RandomRows(rng, type, rows, superBlocks);
        var original = data.ToArray();
        var x = Enumerable.Range(0, tokens * cols).Select(_ => (float)((rng.NextDouble() * 4) - 2)).ToArray();
        var a = new Q8KActivations();
        a.Quantize(x, tokens, cols);
        var y = new float[tokens * rows];
        using var pool = new WorkerPool(2);
        var kernel = new MatMulKernel(pool);
        fixed (byte* p = data)
        fixed (sbyte* pq = a.Values)
        fixed (float* pd = a.Scales)
        fixed (short* ps = a.Sums16)
        {
            using var w = new WeightMatrix("w", type, rows, cols, p);
            Assert.True(KQuantRowGroups.Applies(type, rows));
            Assert.Equal(VectorRuns(type) || type != GgmlType.IQ4_XS, w.HasKQuantRowGroups);
            Assert.False(w.IsRepacked);
            kernel.MatMul(w, x, y, tokens);
            Assert.Equal(w.HasKQuantRowGroups, w.IsRepacked);
            for (int r = 0; r < rows; r++)
            {
                for (int t = 0; t < tokens; t++)
                {
                    float row = RowKernel(type, p + (r * superBlocks * bb), superBlocks, pq + (t * cols), pd + (t * superBlocks), ps + (t * superBlocks * 16));
                    Assert.True(Same(row, y[(t * rows) + r]), $"token {t} row {r}: product {y[(t * rows) + r]:R} vs row kernel {row:R}");
                }
            }

            Assert.Equal(original, data);
        }

        // 12 rows: no row groups, the row kernel.
        var twelve = RandomRows(rng, type, 12, 1);
        fixed (byte* p = twelve)
        {
            using var w = new WeightMatrix("blk.0.ffn_down.weight", type, 12, 256, p);
            Assert.False(KQuantRowGroups.Applies(type, 12));
            Assert.False(w.HasKQuantRowGroups);
            var e = Assert.Throws<InvalidOperationException>(() => w.KQuantRowGroupData());
            Assert.Contains("blk.0.ffn_down.weight", e.Message);
            Assert.Contains("12 rows", e.Message);
        }
    }

    // IQ4_NL blocks (FP16 d, 16 code bytes) with finite scales, every third subnormal.
    private static byte[] RandomIq4NlRows(Random rng, int rows, int blocks)
    {
        var w = new byte[rows * blocks * 18];
        rng.NextBytes(w);
        for (int i = 0; i < rows * blocks; i++)
        {
            float scale = i % 3 == 2 ? 3e-6f : 0.01f;
            BitConverter.TryWriteBytes(w.AsSpan(i * 18), (Half)(float)((rng.NextDouble() * scale) + (scale / 20)));
        }

        return w;
    }

    [Theory]
    [InlineData(1, 1)]
    [InlineData(5, 2)]
    [InlineData(8, 3)]
    [InlineData(13, 4)]
    public void Iq4_NL_VectorEqualsScalarTwin_BatchEqualsSingle_CloseToTheQuantizedProduct(int blocks, int tokens)
    {
        var rng = new Random(400 + (blocks * 10) + tokens);
        int cols = blocks * 32;
        var data = RandomIq4NlRows(rng, 8, blocks);
        var x = Enumerable.Range(0, tokens * cols).Select(_ => (float)((rng.NextDouble() * 2) - 1)).ToArray();
        var a = new Q8Activations();
        a.Quantize(x, tokens, cols);
        const int stride = 11;
        var vec = new float[tokens * stride];
        var sca = new float[tokens * stride];
        var single = new float[tokens * stride];
        var copy = new byte[data.Length];
        bool vector = LowBitRowGroupDot.Iq4_XSVectorPathSupported;
        var deq = new float[cols];
        fixed (byte* p = data)
        fixed (byte* c = copy)
        fixed (sbyte* pq = a.Values)
        fixed (float* pd = a.Scales)
        fixed (int* ps = a.Sums)
        fixed (float* pv = vec)
        fixed (float* psc = sca)
        fixed (float* p1 = single)
        {
            using var w = new WeightMatrix("w", GgmlType.IQ4_NL, 8, cols, p);
            Q4_0RowGroups.Repack(w, c, 0, 1);
            for (int r = 0; r < 8; r++)
            {
                for (int b = 0; b < blocks; b++)
                {
                    Assert.Equal(data[(((r * blocks) + b) * 18) + 2 + 5], copy[(b * Q4_0RowGroups.UnitBytes) + Q4_0RowGroups.QuantOffset(r, 5)]);
                }
            }

            LowBitRowGroupDot.DotIq4_NLScalar(c, tokens, pq, cols, pd, blocks, blocks, psc, stride);
            if (vector)
            {
                LowBitRowGroupDot.DotIq4_NL(c, tokens, pq, cols, pd, ps, blocks, blocks, pv, stride);
                for (int t = 0; t < tokens; t++)
                {
                    LowBitRowGroupDot.DotIq4_NL(c, 1, pq + (t * cols), cols, pd + (t * blocks), ps + (t * blocks), blocks, blocks, p1 + (t * stride), stride);
                }
            }

            for (int r = 0; r < 8; r++)
            {
                RowDequantizer.Dequantize(GgmlType.IQ4_NL, data.AsSpan(r * blocks * 18, blocks * 18), deq);
                for (int t = 0; t < tokens; t++)
                {
                    int i = (t * stride) + r;
                    double quantized = 0, norm = 0;
                    for (int e = 0; e < cols; e++)
                    {
                        double wx = deq[e] * a.Values[(t * cols) + e] * (double)a.Scales[(t * blocks) + (e / 32)];
                        quantized += wx;
                        norm += Math.Abs(wx);
                    }

                    Assert.True(Math.Abs(sca[i] - quantized) <= 1e-5 * norm, $"token {t} row {r}: {sca[i]} vs {quantized} (sum |w x| {norm})");
                    if (vector)
                    {
                        Assert.True(Same(sca[i], vec[i]), $"token {t} row {r}: vector {vec[i]:R} vs scalar twin {sca[i]:R}");
                        Assert.True(Same(single[i], vec[i]), $"token {t} row {r}: alone {single[i]:R} vs in a batch of {tokens} {vec[i]:R}");
                    }
                }
            }

            for (int t = 0; t < tokens; t++)
            {
                Assert.Equal(0f, vec[(t * stride) + 8]);
                Assert.Equal(0f, sca[(t * stride) + 10]);
            }
        }
    }

    [Fact]
    public void Iq4_NL_ExtremeCodes_IntegerSumsStayExact()
    {
        // every code 0 (level -127) or every code 15 (113), alternating by row, d = 1, against activations at their largest
        var data = new byte[8 * 18];
        for (int r = 0; r < 8; r++)
        {
            BitConverter.TryWriteBytes(data.AsSpan(r * 18), (Half)1f);
            data.AsSpan((r * 18) + 2, 16).Fill(r % 2 == 0 ? (byte)0 : (byte)0xFF);
        }

        var x = Enumerable.Range(0, 4 * 32).Select(i => i % 32 == 0 ? -1f : 1f).ToArray();
        var a = new Q8Activations();
        a.Quantize(x, 4, 32);
        var vec = new float[32];
        var sca = new float[32];
        var copy = new byte[data.Length];
        fixed (byte* p = data)
        fixed (byte* c = copy)
        fixed (sbyte* pq = a.Values)
        fixed (float* pd = a.Scales)
        fixed (int* ps = a.Sums)
        fixed (float* pv = vec)
        fixed (float* psc = sca)
        {
            using var w = new WeightMatrix("w", GgmlType.IQ4_NL, 8, 32, p);
            Q4_0RowGroups.Repack(w, c, 0, 1);
            LowBitRowGroupDot.DotIq4_NLScalar(c, 4, pq, 32, pd, 1, 1, psc, 8);
            if (LowBitRowGroupDot.Iq4_XSVectorPathSupported)
            {
                LowBitRowGroupDot.DotIq4_NL(c, 4, pq, 32, pd, ps, 1, 1, pv, 8);
            }
        }

        for (int t = 0; t < 4; t++)
        {
            long qsum = 0;
            for (int e = 0; e < 32; e++)
            {
                qsum += a.Values[(t * 32) + e];
            }

            for (int r = 0; r < 8; r++)
            {
                double exact = (r % 2 == 0 ? -127.0 : 113.0) * qsum * a.Scales[t];
                int i = (t * 8) + r;
                Assert.True(Math.Abs(exact - sca[i]) <= 1e-6 * Math.Abs(exact), $"token {t} row {r}: {sca[i]} vs {exact}");
                if (LowBitRowGroupDot.Iq4_XSVectorPathSupported)
                {
                    Assert.True(Same(sca[i], vec[i]), $"token {t} row {r}: vector {vec[i]:R} vs scalar {sca[i]:R}");
                }
            }
        }
    }

    [Theory]
    [InlineData(1)]
    [InlineData(6)]
    public void Iq4_NL_MatMul_ReadsTheCopyWithTheScalarTwinsBits(int tokens)
    {
        var rng = new Random(500 + tokens);
        const int rows = 48, blocks = 7, cols = blocks * 32;
        var data = RandomIq4NlRows(rng, rows, blocks);
        var original = data.ToArray();
        var x = Enumerable.Range(0, tokens * cols).Select(_ => (float)((rng.NextDouble() * 4) - 2)).ToArray();
        var a = new Q8Activations();
        a.Quantize(x, tokens, cols);
        var y = new float[tokens * rows];
        var expected = new float[tokens * rows];
        var copy = new byte[data.Length];
        using var pool = new WorkerPool(2);
        var kernel = new MatMulKernel(pool);
        fixed (byte* p = data)
        fixed (byte* c = copy)
        fixed (sbyte* pq = a.Values)
        fixed (float* pd = a.Scales)
        fixed (float* pe = expected)
        {
            using var w = new WeightMatrix("w", GgmlType.IQ4_NL, rows, cols, p);
            Assert.Equal(LowBitRowGroupDot.Iq4_XSVectorPathSupported, w.HasQ4_0RowGroups);
            kernel.MatMul(w, x, y, tokens);
            if (!w.HasQ4_0RowGroups)
            {
                return;
            }

            Assert.True(w.IsRepacked);
            Q4_0RowGroups.Repack(w, c, 0, rows / 8);
            Assert.True(copy.AsSpan().SequenceEqual(new ReadOnlySpan<byte>(w.Q4_0RowGroupData(), copy.Length)));
            for (int g = 0; g < rows / 8; g++)
            {
                for (int t = 0; t < tokens; t++)
                {
                    LowBitRowGroupDot.DotIq4_NLScalar(c + (g * 8L * w.RowByteCount), 1, pq + (t * cols), cols, pd + (t * blocks), blocks, blocks, pe + (t * rows) + (g * 8), rows);
                }
            }

            Assert.Equal(expected, y);
            Assert.Equal(original, data);
        }
    }

    [Theory]
    [InlineData(0)]
    [InlineData(5)]
    public void TokenCountsOutsideOneToFourAreRejected(int tokens)
    {
        var unit = new byte[KQuantRowGroups.Iq4_XSUnitBytes];
        var x = new sbyte[5 * 256];
        var d = new float[5];
        var s16 = new short[5 * 16];
        var pairs = new int[5 * 8];
        var sums = new int[5 * 8];
        var y = new float[5 * 8];
        fixed (byte* g = unit)
        fixed (sbyte* px = x)
        fixed (float* pd = d)
        fixed (short* ps = s16)
        fixed (int* pp = pairs)
        fixed (int* pi = sums)
        fixed (float* py = y)
        {
            byte* gg = g;
            sbyte* xx = px;
            float* dd = pd, yy = py;
            short* ss = ps;
            int* p2 = pp, p4 = pi;
            var calls = new Action[]
            {
                () => LowBitRowGroupDot.DotQ2_K(gg, 1, tokens, xx, 256, dd, ss, p2, yy, 8),
                () => LowBitRowGroupDot.DotQ3_K(gg, 1, tokens, xx, 256, dd, ss, p2, yy, 8),
                () => LowBitRowGroupDot.DotIq4_XS(gg, 1, tokens, xx, 256, dd, ss, yy, 8),
                () => LowBitRowGroupDot.DotIq4_NL(gg, tokens, xx, 32, dd, p4, 1, 1, yy, 8),
                () => LowBitRowGroupDot.DotIq4_NLScalar(gg, tokens, xx, 32, dd, 1, 1, yy, 8),
            };
            foreach (var call in calls)
            {
                var e = Assert.Throws<ArgumentOutOfRangeException>(call);
                Assert.Equal("tokens", e.ParamName);
                Assert.Contains("1 to 4 tokens", e.Message);
            }
        }
    }
}
