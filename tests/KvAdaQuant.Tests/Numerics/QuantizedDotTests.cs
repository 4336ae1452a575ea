using KvAdaQuant.Numerics;

namespace KvAdaQuant.Tests.Numerics;

public unsafe class QuantizedDotTests
{
    private static byte[] RandomBlocks(Random rng, int blocks, int blockBytes)
    {
        var data = new byte[blocks * blockBytes];
        rng.NextBytes(data);
        for (int b = 0; b < blocks; b++)
        {
            fixed (byte* p = &data[b * blockBytes])
            {
                *(Half*)p = (Half)(float)((rng.NextDouble() * 0.02) + 0.001);
            }

            if (blockBytes == 34)
            {
                // Q8_0 values come from round(x/d) with |x/d| <= 127: never -128.
                for (int i = 2; i < 34; i++)
                {
                    if (data[(b * 34) + i] == 0x80)
                    {
                        data[(b * 34) + i] = 0x81;
                    }
                }
            }
        }

        return data;
    }

    private static (sbyte[] Q, float[] D, float[] X) Activations(Random rng, int cols)
    {
        var x = Enumerable.Range(0, cols).Select(_ => (float)((rng.NextDouble() * 4) - 2)).ToArray();
        var a = new Q8Activations();
        a.Quantize(x, 1, cols);
        return (a.Values[..cols], a.Scales[..(cols / 32)], x);
    }

    [SkippableTheory]
    [InlineData(1)]
    [InlineData(7)]
    [InlineData(64)]
    public void VectorPathsEqualScalarTwins(int blocks)
    {
        Skip.IfNot(QuantizedDot.VectorPathSupported, "no AVX2/FMA on this CPU");
        var rng = new Random(blocks);
        for (int trial = 0; trial < 20; trial++)
        {
            var (q, d, _) = Activations(rng, blocks * 32);
            var w8 = RandomBlocks(rng, blocks, 34);
            var w4 = RandomBlocks(rng, blocks, 18);
            fixed (byte* p8 = w8)
            fixed (byte* p4 = w4)
            fixed (sbyte* pq = q)
            fixed (float* pd = d)
            {
                float s8 = QuantizedDot.DotQ8_0Scalar(p8, pq, pd, blocks);
                float v8 = QuantizedDot.DotQ8_0Avx2(p8, pq, pd, blocks);
                float s4 = QuantizedDot.DotQ4_0Scalar(p4, pq, pd, blocks);
                float v4 = QuantizedDot.DotQ4_0Avx2(p4, pq, pd, blocks);
                Assert.True(MathF.Abs(s8 - v8) <= 1e-5f * (1 + MathF.Abs(s8)), $"Q8_0 scalar {s8} vs vector {v8}");
                Assert.True(MathF.Abs(s4 - v4) <= 1e-5f * (1 + MathF.Abs(s4)), $"Q4_0 scalar {s4} vs vector {v4}");
            }
        }
    }

    [Theory]
    [InlineData(1)]
    [InlineData(64)]
    public void Q4_0WithBlockSumsEqualsScalarTwin(int blocks)
    {
        var rng = new Random(200 + blocks);
        var x = Enumerable.Range(0, blocks * 32).Select(_ => (float)((rng.NextDouble() * 4) - 2)).ToArray();
        var a = new Q8Activations();
        a.Quantize(x, 1, x.Length);
        var w = RandomBlocks(rng, blocks, 18);
        fixed (byte* pw = w)
        fixed (sbyte* pq = a.Values)
        fixed (float* pd = a.Scales)
        fixed (int* ps = a.Sums)
        {
            float scalar = QuantizedDot.DotQ4_0Scalar(pw, pq, pd, blocks);
            float withSums = QuantizedDot.DotQ4_0(pw, pq, pd, ps, blocks);
            Assert.True(MathF.Abs(scalar - withSums) <= 1e-5f * (1 + MathF.Abs(scalar)), $"scalar {scalar} vs block-sum path {withSums}");
        }
    }

    [Theory]
    [InlineData(1)]
    [InlineData(64)]
    public void FourRowTileEqualsSingleRowsBitForBit(int blocks)
    {
        var rng = new Random(100 + blocks);
        var (q, d, _) = Activations(rng, blocks * 32);
        var w = RandomBlocks(rng, 4 * blocks, 34);
        var tile = new float[4];
        fixed (byte* pw = w)
        fixed (sbyte* pq = q)
        fixed (float* pd = d)
        fixed (float* pt = tile)
        {
            QuantizedDot.DotQ8_0x4(pw, blocks * 34, pq, pd, blocks, pt, 1);
            for (int r = 0; r < 4; r++)
            {
                Assert.Equal(QuantizedDot.DotQ8_0(pw + (r * blocks * 34), pq, pd, blocks), tile[r]);
            }
        }
    }

    [Theory]
    [InlineData(1, 2)]
    [InlineData(7, 2)]
    [InlineData(64, 2)]
    [InlineData(1, 3)]
    [InlineData(7, 3)]
    [InlineData(64, 3)]
    public void FourRowsByTwoOrThreeTokensEqualSingleRowsBitForBit(int blocks, int tokens)
    {
        // DotQ8_0x4Tokens2/3 (decode steps of two or three sequences): rows 3 blocks apart, tokens' activations and results
        // in strided buffers; every result has the single-row bits, and is within rounding of the scalar twin.
        var rng = new Random(200 + blocks + tokens);
        long xStride = (blocks * 32) + 32, dStride = blocks + 1;
        var q = new sbyte[tokens * xStride];
        var d = new float[tokens * dStride];
        for (int t = 0; t < tokens; t++)
        {
            var (qt, dt, _) = Activations(rng, blocks * 32);
            qt.CopyTo(q, t * xStride);
            dt.CopyTo(d, t * dStride);
        }

        var w = RandomBlocks(rng, 12 * blocks, 34);
        w[2] = 0x81; // extreme codes and a zero scale
        w[3] = 0x7F;
        w[3 * blocks * 34] = 0;
        w[(3 * blocks * 34) + 1] = 0;
        var y = new float[tokens * 10];
        fixed (byte* pw = w)
        fixed (sbyte* pq = q)
        fixed (float* pd = d)
        fixed (float* py = y)
        {
            if (tokens == 2)
            {
                QuantizedDot.DotQ8_0x4Tokens2(pw, 3 * blocks * 34, pq, xStride, pd, dStride, blocks, py, 2, 10);
            }
            else
            {
                QuantizedDot.DotQ8_0x4Tokens3(pw, 3 * blocks * 34, pq, xStride, pd, dStride, blocks, py, 2, 10);
            }

            // The dispatcher the matrix kernel calls gives the same bits, for one token too, and names a bad count.
            var viaDispatch = new float[tokens * 10];
            var one = new float[10];
            fixed (float* pv = viaDispatch)
            fixed (float* ps = one)
            {
                QuantizedDot.DotQ8_0x4Tokens(tokens, pw, 3 * blocks * 34, pq, xStride, pd, dStride, blocks, pv, 2, 10);
                QuantizedDot.DotQ8_0x4Tokens(1, pw, 3 * blocks * 34, pq, xStride, pd, dStride, blocks, ps, 2, 10);
            }

            Assert.Equal(y, viaDispatch);
            Assert.Equal(y.AsSpan(0, 10).ToArray(), one);
            byte* rowsPtr = pw;
            var e = Assert.Throws<ArgumentOutOfRangeException>(() => QuantizedDot.DotQ8_0x4Tokens(4, rowsPtr, 3 * blocks * 34, null, xStride, null, dStride, blocks, null, 2, 10));
            Assert.Contains("one to three tokens a pass, got 4", e.Message);

            for (int t = 0; t < tokens; t++)
            {
                for (int r = 0; r < 4; r++)
                {
                    byte* row = pw + (r * 3 * blocks * 34);
                    float single = QuantizedDot.DotQ8_0(row, pq + (t * xStride), pd + (t * dStride), blocks);
                    float scalar = QuantizedDot.DotQ8_0Scalar(row, pq + (t * xStride), pd + (t * dStride), blocks);
                    float got = y[(t * 10) + (r * 2)];
                    Assert.True(BitConverter.SingleToInt32Bits(single) == BitConverter.SingleToInt32Bits(got), $"token {t} row {r}: {got} vs one row {single}");
                    Assert.True(MathF.Abs(scalar - got) <= 1e-5f * (1 + MathF.Abs(scalar)), $"token {t} row {r}: {got} vs scalar twin {scalar}");
                }
            }
        }
    }

    [Theory]
    [InlineData(1, 1)]
    [InlineData(7, 3)]
    [InlineData(64, 1)]
    [InlineData(64, 100)]
    public void RowPairEqualsSingleRowsBitForBit(int blocks, int distance)
    {
        var rng = new Random(400 + blocks + distance);
        var (q, d, _) = Activations(rng, blocks * 32);
        var w = RandomBlocks(rng, (distance + 1) * blocks, 34);

        // Extreme codes (-127 / 127) and a zero scale in the second row.
        w[2] = 0x81;
        w[3] = 0x7F;
        w[(distance * blocks * 34) + 0] = 0;
        w[(distance * blocks * 34) + 1] = 0;
        fixed (byte* pw = w)
        fixed (sbyte* pq = q)
        fixed (float* pd = d)
        {
            byte* row0 = pw, row1 = pw + (distance * blocks * 34);
            float* pair = stackalloc float[2];
            QuantizedDot.DotQ8_0x2(row0, distance * blocks * 34, pq, pd, blocks, pair, 1);
            float y0 = pair[0], y1 = pair[1];
            Assert.Equal(BitConverter.SingleToInt32Bits(QuantizedDot.DotQ8_0(row0, pq, pd, blocks)), BitConverter.SingleToInt32Bits(y0));
            Assert.Equal(BitConverter.SingleToInt32Bits(QuantizedDot.DotQ8_0(row1, pq, pd, blocks)), BitConverter.SingleToInt32Bits(y1));
        }
    }

    [Theory]
    [InlineData(1, 2100, 2)]
    [InlineData(1, 2100, 9)]
    [InlineData(2, 2100, 5)]
    [InlineData(2, 1105, 3)]
    [InlineData(2, 127, 6)]
    [InlineData(1, 2100, 7)]
    [InlineData(2, 2100, 6)]
    public void BatchedQ8_0MatMulEqualsOneRowAtATimeBitForBit(int threads, int rows, int tokens)
    {
        // Batches (prefill, several sequences' decode): tiles take rows a quarter of the work chunk apart (2,100 rows on one
        // thread: two chunks of 1,052 and 1,048 rows, quarters of 263 and 262; 127 rows on two: quarters of 8 and a last
        // chunk of 31 with three rows over); two or three tokens go through decode's row quads all at once
        // (DotQ8_0x4Tokens2/3) and its row pairs one token after the other; one, two or three tokens past the last full four
        // through DotQ8_0x4 or DotQ8_0x4Tokens2/3 with the tile's rows (9, 5, 6 and 7 tokens).
        var rng = new Random(700 + rows + tokens);
        const int blocks = 8, cols = blocks * 32;
        var w = RandomBlocks(rng, rows * blocks, 34);
        var x = Enumerable.Range(0, tokens * cols).Select(_ => (float)((rng.NextDouble() * 4) - 2)).ToArray();
        var y = new float[tokens * rows];
        var a = new Q8Activations();
        a.Quantize(x, tokens, cols);
        using var pool = new WorkerPool(threads);
        fixed (byte* pw = w)
        fixed (sbyte* pq = a.Values)
        fixed (float* pd = a.Scales)
        {
            using var m = new WeightMatrix("q8", GgmlType.Q8_0, rows, cols, pw);
            new MatMulKernel(pool).MatMul(m, x, y, tokens);
            for (int t = 0; t < tokens; t++)
            {
                for (int r = 0; r < rows; r++)
                {
                    float single = QuantizedDot.DotQ8_0(pw + (r * blocks * 34), pq + (t * cols), pd + (t * blocks), blocks);
                    Assert.True(BitConverter.SingleToInt32Bits(single) == BitConverter.SingleToInt32Bits(y[(t * rows) + r]), $"token {t} row {r}: {y[(t * rows) + r]} vs one row at a time {single}");
                }
            }
        }
    }

    [Theory]
    [InlineData(1, 1105)]
    [InlineData(2, 2100)]
    [InlineData(1, 2100)]
    [InlineData(2, 127)]
    public void SingleTokenQ8_0MatMulEqualsOneRowAtATimeBitForBit(int threads, int rows)
    {
        // Chunks of ceil(rows / (8 x threads)) rows: 1,105 rows on one thread give chunks of 139 (pairs 69 rows apart and
        // one row over), 2,100 on two give chunks of 132 (pairs 66 apart) and a last chunk of 120 (halves shorter than
        // DecodePairDistance: one row at a time), 2,100 on one give chunks of 263 (four rows 65 apart, three over) and a
        // last chunk of 259; 127 rows give chunks too short to pair.
        var rng = new Random(500 + rows);
        const int blocks = 8, cols = blocks * 32;
        var w = RandomBlocks(rng, rows * blocks, 34);
        var x = Enumerable.Range(0, cols).Select(_ => (float)((rng.NextDouble() * 4) - 2)).ToArray();
        var y = new float[rows];
        var a = new Q8Activations();
        a.Quantize(x, 1, cols);
        using var pool = new WorkerPool(threads);
        fixed (byte* pw = w)
        fixed (sbyte* pq = a.Values)
        fixed (float* pd = a.Scales)
        {
            using var m = new WeightMatrix("q8", GgmlType.Q8_0, rows, cols, pw);
            new MatMulKernel(pool).MatMul(m, x, y, 1);
            for (int r = 0; r < rows; r++)
            {
                float single = QuantizedDot.DotQ8_0(pw + (r * blocks * 34), pq, pd, blocks);
                Assert.True(BitConverter.SingleToInt32Bits(single) == BitConverter.SingleToInt32Bits(y[r]), $"row {r}: {y[r]} vs one row at a time {single}");
            }
        }
    }

    [Theory]
    [InlineData(1)]
    [InlineData(5)]
    [InlineData(17)]
    [InlineData(37)]
    [InlineData(64)]
    public void FourByFourPrefillTileEqualsSingleRowDotsBitForBit(int blocks)
    {
        var rng = new Random(300 + blocks);
        int cols = blocks * 32;
        var x = Enumerable.Range(0, 4 * cols).Select(_ => (float)((rng.NextDouble() * 6) - 3)).ToArray();
        var a = new Q8Activations();
        a.Quantize(x, 4, cols);
        var w = RandomBlocks(rng, 4 * blocks, 34);

        // Extreme codes exercise the offset trick's range: -128/127 weights against -127/127 activations.
        w[2] = 0x80;
        w[3] = 0x7F;
        var y = new float[4 * 5];
        fixed (byte* pw = w)
        fixed (sbyte* pq = a.Values)
        fixed (float* pd = a.Scales)
        fixed (float* py = y)
        {
            QuantizedDot.DotQ8_0Tile4x4(pw, blocks * 34, pq, cols, pd, blocks, blocks, py, 5);
            var prepared = new float[4 * 5];
            var scales = new float[blocks * 4];
            var corrections = new int[blocks * 32];
            fixed (float* pp = prepared)
            fixed (float* ps = scales)
            fixed (int* pc = corrections)
            {
                QuantizedDot.PrepareQ8_0Tile(pw, blocks * 34, blocks, ps, pc);
                QuantizedDot.DotQ8_0Tile4x4Prepared(pw, blocks * 34, ps, pc, pq, cols, pd, blocks, blocks, pp, 5);
            }

            Assert.Equal(y, prepared);
            for (int t = 0; t < 4; t++)
            {
                for (int r = 0; r < 4; r++)
                {
                    float single = QuantizedDot.DotQ8_0(pw + (r * blocks * 34), pq + (t * cols), pd + (t * blocks), blocks);
                    Assert.Equal(BitConverter.SingleToInt32Bits(single), BitConverter.SingleToInt32Bits(y[(t * 5) + r]));
                    float scalar = QuantizedDot.DotQ8_0Scalar(pw + (r * blocks * 34), pq + (t * cols), pd + (t * blocks), blocks);
                    Assert.True(MathF.Abs(scalar - y[(t * 5) + r]) <= 1e-5f * (1 + MathF.Abs(scalar)), $"scalar {scalar} vs tile {y[(t * 5) + r]}");
                }
            }
        }
    }

    [Fact]
    public void IntegerDotIsCloseToFloatDotOfDequantizedRow()
    {
        var rng = new Random(3);
        const int blocks = 64;
        var (q, d, x) = Activations(rng, blocks * 32);
        foreach (var (type, size) in new[] { (GgmlType.Q8_0, 34), (GgmlType.Q4_0, 18) })
        {
            var w = RandomBlocks(rng, blocks, size);
            var deq = Dequantize(type, w, blocks);
            double exact = 0, norm = 0;
            for (int i = 0; i < deq.Length; i++)
            {
                exact += deq[i] * x[i];
                norm += Math.Abs(deq[i] * x[i]);
            }

            fixed (byte* p = w)
            fixed (sbyte* pq = q)
            fixed (float* pd = d)
            {
                float got = type == GgmlType.Q8_0 ? QuantizedDot.DotQ8_0(p, pq, pd, blocks) : QuantizedDot.DotQ4_0(p, pq, pd, blocks);

                // int8 activations: relative error per product about 1/254; bound against the absolute sum.
                Assert.True(Math.Abs(got - exact) <= 0.01 * norm, $"{type}: {got} vs {exact} (sum |w x| {norm})");
            }
        }
    }

    // Independent of RowDequantizer: ggml's Q8_0 (d, 32 x int8) and Q4_0 (d, 16 bytes: low nibbles are
    // elements 0..15, high nibbles 16..31, each minus 8) written out directly.
    private static float[] Dequantize(GgmlType type, byte[] w, int blocks)
    {
        var r = new float[blocks * 32];
        for (int b = 0; b < blocks; b++)
        {
            int size = type == GgmlType.Q8_0 ? 34 : 18;
            float d = (float)BitConverter.UInt16BitsToHalf(BitConverter.ToUInt16(w, b * size));
            for (int i = 0; i < 32; i++)
            {
                r[(b * 32) + i] = type == GgmlType.Q8_0
                    ? (sbyte)w[(b * size) + 2 + i] * d
                    : (i < 16 ? (w[(b * size) + 2 + i] & 0x0F) - 8 : (w[(b * size) + 2 + i - 16] >> 4) - 8) * d;
            }
        }

        return r;
    }

    [Fact]
    public void ActivationQuantizationFollowsGgmlX86Rule()
    {
        var x = new float[32];
        x[0] = 127f;
        x[1] = -63.5f;
        x[2] = 0.5f;
        x[3] = 2.5f;
        x[4] = -1.5f;
        foreach (bool vector in new[] { false, true })
        {
            var a = new Q8Activations();
            a.Quantize(x, 1, 32, vector);
            Assert.Equal((float)(Half)(127f / 127f), a.Scales[0]);
            Assert.Equal(127, a.Values[0]);
            Assert.Equal(-64, a.Values[1]); // -63.5 rounds to even
            Assert.Equal(0, a.Values[2]);   // 0.5 rounds to even
            Assert.Equal(2, a.Values[3]);   // 2.5 rounds to even
            Assert.Equal(-2, a.Values[4]);
            Assert.Equal(127 - 64 + 2 - 2, a.Sums[0]);
        }
    }

    [Fact]
    public void ActivationQuantizationVectorPathEqualsScalarTwin()
    {
        var rng = new Random(11);
        const int n = 3, cols = 256;
        var x = new float[n * cols];
        for (int i = 0; i < x.Length; i++)
        {
            // Mixed magnitudes, exact halves (ties) and an all-zero block.
            x[i] = (i / 32) switch
            {
                2 => 0f,
                3 => (rng.Next(-254, 255) * 0.5f) + 0f,
                _ => (float)((rng.NextDouble() - 0.5) * Math.Pow(10, rng.Next(-3, 3))),
            };
        }

        var s = new Q8Activations();
        var v = new Q8Activations();
        s.Quantize(x, n, cols, vector: false);
        v.Quantize(x, n, cols, vector: true);
        Assert.Equal(s.Values.AsSpan(0, n * cols).ToArray(), v.Values.AsSpan(0, n * cols).ToArray());
        Assert.Equal(s.Scales.AsSpan(0, n * cols / 32).ToArray(), v.Scales.AsSpan(0, n * cols / 32).ToArray());
        Assert.Equal(s.Sums.AsSpan(0, n * cols / 32).ToArray(), v.Sums.AsSpan(0, n * cols / 32).ToArray());
        Assert.All(v.Values.AsSpan(64, 32).ToArray(), q => Assert.Equal(0, q));
    }
}
