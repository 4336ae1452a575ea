using KvAdaQuant.Numerics;

namespace KvAdaQuant.Tests.Numerics;

/// <summary>
/// The Q4_1-layout row-group copy (<see cref="Q4_1RowGroups"/>: Q4_1, Q5_1, Q5_0) and its 8-row kernel: every field of
/// every block lands in its slot (the fifth bits through <see cref="Q4_1RowGroups.FifthBitSource"/>, each once); the 512-bit
/// path equals the scalar twin, a token alone equals the same token in a batch, and every row equals the row-by-row kernel
/// (<see cref="LowBitDot.DotQ4_1Scalar"/>, <see cref="Q5_0Dot.DotScalar"/>, tested against the dequantized product in
/// <c>LowBitDotTests</c> and <c>Q5_0DotTests</c>) bit for bit, subnormal FP16 steps and minimums and the extreme codes
/// included; the matrix product reads the copy.
/// </summary>
public unsafe class Q4_1RowGroupsTests
{
    private static bool Same(float a, float b) => BitConverter.SingleToInt32Bits(a) == BitConverter.SingleToInt32Bits(b);

    private static int BlockBytes(GgmlType type) => Q4_1RowGroups.BlockBytes(type);

    // Random codes and fifth bits; finite FP16 d (and m), every third block's subnormal.
    private static byte[] RandomRows(Random rng, GgmlType type, int rows, int blocks)
    {
        int bb = BlockBytes(type);
        var w = new byte[rows * blocks * bb];
        rng.NextBytes(w);
        for (int i = 0; i < rows * blocks; i++)
        {
            float scale = i % 3 == 2 ? 3e-6f : 0.01f;
            BitConverter.TryWriteBytes(w.AsSpan(i * bb), (Half)(float)((rng.NextDouble() * scale) + (scale / 20)));
            if (Q4_1RowGroups.HasMinimums(type))
            {
                BitConverter.TryWriteBytes(w.AsSpan((i * bb) + 2), (Half)(float)((rng.NextDouble() - 0.5) * 10 * scale));
            }
        }

        return w;
    }

    // The row-by-row kernel's scalar twin on the original row.
    private static float RowKernel(GgmlType type, byte* row, int blocks, sbyte* xq, float* xd, float* xs1)
    {
        if (type == GgmlType.Q5_0)
        {
            return Q5_0Dot.DotScalar(row, xq, xd, blocks);
        }

        float y;
        LowBitDot.DotQ4_1Scalar(row, blocks, 1, type == GgmlType.Q5_1, xq, xd, xs1, &y, 1);
        return y;
    }

    [Theory]
    [InlineData(GgmlType.Q4_1)]
    [InlineData(GgmlType.Q5_1)]
    [InlineData(GgmlType.Q5_0)]
    public void Repack_PutsEveryFieldInItsSlot(GgmlType type)
    {
        var rng = new Random(6 + (int)type);
        const int rows = 16, blocks = 3;
        int bb = BlockBytes(type), unitBytes = 8 * bb;
        bool fiveBit = Q4_1RowGroups.HasFifthBits(type), mins = Q4_1RowGroups.HasMinimums(type);
        Assert.Equal(unitBytes, Q4_1RowGroups.UnitBytes(type));
        var data = RandomRows(rng, type, rows, blocks);
        var copy = new byte[data.Length];
        fixed (byte* p = data)
        fixed (byte* c = copy)
        {
            using var w = new WeightMatrix("w", type, rows, blocks * 32, p);
            Q4_1RowGroups.Repack(w, c, 0, rows / 8);
        }

        var hits = new int[copy.Length * 8];
        void Hit(int at, int bit = -1)
        {
            if (bit < 0)
            {
                for (int i = 0; i < 8; i++)
                {
                    hits[(at * 8) + i]++;
                }
            }
            else
            {
                hits[(at * 8) + bit]++;
            }
        }

        int nib = Q4_1RowGroups.NibbleOffset(type), qhAt = mins ? 4 : 2;
        for (int r = 0; r < rows; r++)
        {
            for (int b = 0; b < blocks; b++)
            {
                int unit = (((r / 8) * blocks) + b) * unitBytes, src = ((r * blocks) + b) * bb, rr = r % 8;
                for (int i = 0; i < 2; i++)
                {
                    Assert.Equal(data[src + i], copy[unit + (2 * rr) + i]);
                    Hit(unit + (2 * rr) + i);
                    if (mins)
                    {
                        Assert.Equal(data[src + 2 + i], copy[unit + 16 + (2 * rr) + i]);
                        Hit(unit + 16 + (2 * rr) + i);
                    }
                }

                for (int i = 0; i < 16; i++)
                {
                    Assert.Equal(data[src + bb - 16 + i], copy[unit + nib + (16 * rr) + i]);
                    Hit(unit + nib + (16 * rr) + i);
                }

                if (fiveBit && rr % 2 == 0)
                {
                    int word = unit + Q4_1RowGroups.FifthBitsOffset(type, rr / 2);
                    for (int bit = 0; bit < 64; bit++)
                    {
                        var (row, value) = Q4_1RowGroups.FifthBitSource(bit);
                        int qh = BitConverter.ToInt32(data, ((((r + row) * blocks) + b) * bb) + qhAt);
                        Assert.Equal((qh >> value) & 1, (copy[word + (bit / 8)] >> (bit % 8)) & 1);
                        Hit(word + (bit / 8), bit % 8);
                    }
                }
            }
        }

        Assert.All(hits, h => Assert.Equal(1, h));

        // each of a pair's 64 fifth bits has one slot
        var sources = Enumerable.Range(0, 64).Select(Q4_1RowGroups.FifthBitSource).Distinct().ToArray();
        Assert.Equal(64, sources.Length);
    }

    [Theory]
    [InlineData(GgmlType.Q4_1, 1, 1)]
    [InlineData(GgmlType.Q4_1, 5, 2)]
    [InlineData(GgmlType.Q4_1, 13, 5)]
    [InlineData(GgmlType.Q5_1, 1, 1)]
    [InlineData(GgmlType.Q5_1, 5, 3)]
    [InlineData(GgmlType.Q5_1, 13, 4)]
    [InlineData(GgmlType.Q5_0, 1, 1)]
    [InlineData(GgmlType.Q5_0, 5, 3)]
    [InlineData(GgmlType.Q5_0, 13, 4)]
    public void VectorEqualsScalarTwin_BatchEqualsSingle_EachRowEqualsTheRowKernel(GgmlType type, int blocks, int tokens)
    {
        var rng = new Random((blocks * 10) + tokens + (100 * (int)type));
        int cols = blocks * 32, bb = BlockBytes(type);
        var data = RandomRows(rng, type, 8, blocks);
        var x = Enumerable.Range(0, tokens * cols).Select(_ => (float)((rng.NextDouble() * 2) - 1)).ToArray();
        var a = new Q8Activations();
        a.Quantize(x, tokens, cols);
        var s1 = a.Q8_1Sums(x, tokens, cols);
        const int stride = 11;
        var vec = new float[tokens * stride];
        var sca = new float[tokens * stride];
        var single = new float[tokens * stride];
        var copy = new byte[data.Length];
        bool vector = Q4_1RowGroups.VectorPathSupported(type);
        fixed (byte* p = data)
        fixed (byte* c = copy)
        fixed (sbyte* pq = a.Values)
        fixed (float* pd = a.Scales)
        fixed (float* ps = s1)
        fixed (float* pv = vec)
        fixed (float* psc = sca)
        fixed (float* p1 = single)
        {
            using var w = new WeightMatrix("w", type, 8, cols, p);
            Q4_1RowGroups.Repack(w, c, 0, 1);
            Q4_1RowGroups.DotScalar(c, type, blocks, tokens, pq, cols, pd, ps, psc, stride);
            if (vector)
            {
                Q4_1RowGroups.DotAvx512(c, type, blocks, tokens, pq, cols, pd, ps, pv, stride);
                for (int t = 0; t < tokens; t++)
                {
                    Q4_1RowGroups.DotAvx512(c, type, blocks, 1, pq + (t * cols), cols, pd + (t * blocks), ps + (t * blocks), p1 + (t * stride), stride);
                }
            }

            for (int t = 0; t < tokens; t++)
            {
                for (int r = 0; r < 8; r++)
                {
                    int i = (t * stride) + r;
                    float row = RowKernel(type, p + (r * blocks * bb), blocks, pq + (t * cols), pd + (t * blocks), ps + (t * blocks));
                    Assert.True(Same(row, sca[i]), $"token {t} row {r}: scalar twin {sca[i]:R} vs row kernel {row:R}");
                    if (vector)
                    {
                        Assert.True(Same(sca[i], vec[i]), $"token {t} row {r}: vector {vec[i]:R} vs scalar twin {sca[i]:R}");
                        Assert.True(Same(single[i], vec[i]), $"token {t} row {r}: alone {single[i]:R} vs in a batch of {tokens} {vec[i]:R}");
                    }
                }

                // the outputs between the strides are left alone.
                Assert.Equal(0f, sca[(t * stride) + 8]);
                Assert.Equal(0f, vec[(t * stride) + 10]);
            }
        }
    }

    [Theory]
    [InlineData(GgmlType.Q4_1)]
    [InlineData(GgmlType.Q5_1)]
    [InlineData(GgmlType.Q5_0)]
    public void ExtremeCodes_IntegerSumsStayExact(GgmlType type)
    {
        // every code at its largest (15 or 31) in even rows and 0 in odd rows; d 1, m 0; activations -1 at value 0 and 1
        // elsewhere: the quantized values at their largest magnitude, so the pair sums reach 2 x 31 x 127 (Q5_0: values
        // 15 and -16).
        int bb = BlockBytes(type);
        bool fiveBit = Q4_1RowGroups.HasFifthBits(type);
        var data = new byte[8 * bb];
        for (int r = 0; r < 8; r++)
        {
            var block = data.AsSpan(r * bb, bb);
            block[2..].Fill(r % 2 == 0 ? (byte)0xFF : (byte)0);
            BitConverter.TryWriteBytes(block, (Half)1f);
            if (Q4_1RowGroups.HasMinimums(type))
            {
                BitConverter.TryWriteBytes(block[2..], (Half)0f);
            }
        }

        var x = Enumerable.Range(0, 32).Select(i => i == 0 ? -1f : 1f).ToArray();
        var a = new Q8Activations();
        a.Quantize(x, 1, 32);
        var s1 = a.Q8_1Sums(x, 1, 32);
        var copy = new byte[data.Length];
        var vec = new float[8];
        var sca = new float[8];
        fixed (byte* p = data)
        fixed (byte* c = copy)
        fixed (sbyte* pq = a.Values)
        fixed (float* pd = a.Scales)
        fixed (float* ps = s1)
        fixed (float* pv = vec)
        fixed (float* psc = sca)
        {
            using var w = new WeightMatrix("w", type, 8, 32, p);
            Q4_1RowGroups.Repack(w, c, 0, 1);
            Q4_1RowGroups.DotScalar(c, type, 1, 1, pq, 32, pd, ps, psc, 1);
            if (Q4_1RowGroups.VectorPathSupported(type))
            {
                Q4_1RowGroups.DotAvx512(c, type, 1, 1, pq, 32, pd, ps, pv, 1);
            }
        }

        long qsum = a.Values.Take(32).Sum(v => (long)v);
        for (int r = 0; r < 8; r++)
        {
            double value = type == GgmlType.Q5_0 ? (r % 2 == 0 ? 15.0 : -16.0) : r % 2 == 0 ? (fiveBit ? 31.0 : 15.0) : 0;
            double exact = value * qsum * a.Scales[0];
            Assert.True(Math.Abs(exact - sca[r]) <= 1e-6 * Math.Abs(exact), $"row {r}: {sca[r]} vs {exact}");
            if (Q4_1RowGroups.VectorPathSupported(type))
            {
                Assert.True(Same(sca[r], vec[r]), $"row {r}: vector {vec[r]:R} vs scalar twin {sca[r]:R}");
            }
        }
    }

    [Theory]
    [InlineData(GgmlType.Q4_1, 1)]
    [InlineData(GgmlType.Q4_1, 6)]
    [InlineData(GgmlType.Q5_1, 1)]
    [InlineData(GgmlType.Q5_1, 5)]
    [InlineData(GgmlType.Q5_0, 1)]
    [InlineData(GgmlType.Q5_0, 7)]
    public void MatMul_ReadsTheCopyWithTheRowKernelsBitsAndLeavesTheRowsAlone(GgmlType type, int tokens)
    {
        var rng = new Random(70 + tokens + (int)type);
        const int rows = 48, blocks = 9, cols = blocks * 32;
        int bb = BlockBytes(type);
        var data = RandomRows(rng, type, rows, blocks);
        var original = data.ToArray();
        var x = Enumerable.Range(0, tokens * cols).Select(_ => (float)((rng.NextDouble() * 4) - 2)).ToArray();
        var a = new Q8Activations();
        a.Quantize(x, tokens, cols);
        var s1 = a.Q8_1Sums(x, tokens, cols);
        var y = new float[tokens * rows];
        using var pool = new WorkerPool(2);
        var kernel = new MatMulKernel(pool);
        fixed (byte* p = data)
        fixed (sbyte* pq = a.Values)
        fixed (float* pd = a.Scales)
        fixed (float* ps = s1)
        {
            using var w = new WeightMatrix("w", type, rows, cols, p);
            Assert.Equal(Q4_1RowGroups.VectorPathSupported(type), w.HasQ4_1RowGroups);
            Assert.False(w.IsRepacked);
            kernel.MatMul(w, x, y, tokens);
            Assert.Equal(w.HasQ4_1RowGroups, w.IsRepacked);
            for (int r = 0; r < rows; r++)
            {
                for (int t = 0; t < tokens; t++)
                {
                    float row = RowKernel(type, p + (r * blocks * bb), blocks, pq + (t * cols), pd + (t * blocks), ps + (t * blocks));
                    Assert.True(Same(row, y[(t * rows) + r]), $"token {t} row {r}: product {y[(t * rows) + r]:R} vs row kernel {row:R}");
                }
            }

            Assert.Equal(original, data);
        }

        // 12 rows: no row groups, the row kernel.
        var twelve = RandomRows(rng, type, 12, 1);
        fixed (byte* p = twelve)
        {
            using var w = new WeightMatrix("blk.0.ffn_down.weight", type, 12, 32, p);
            Assert.False(w.HasQ4_1RowGroups);
            var e = Assert.Throws<InvalidOperationException>(() => w.Q4_1RowGroupData());
            Assert.Contains("blk.0.ffn_down.weight", e.Message);
            Assert.Contains("12 rows", e.Message);
            var r = Assert.Throws<ArgumentException>(() => Q4_1RowGroups.Repack(w, null, 0, 1));
            Assert.Contains("12 rows", r.Message);
        }
    }

    [Fact]
    public void TokenCountsBelowOneAreRejected()
    {
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => Q4_1RowGroups.DotScalar(null, GgmlType.Q4_1, 1, 0, null, 32, null, null, null, 1));
        Assert.Contains("at least 1 token", e.Message);
        var t = Assert.Throws<ArgumentException>(() => Q4_1RowGroups.DotAvx512(null, GgmlType.Q4_0, 1, 1, null, 32, null, null, null, 1));
        Assert.Contains("Q4_0 has no Q4_1-layout row groups", t.Message);
    }
}
