using KvAdaQuant.Numerics;

namespace KvAdaQuant.Tests.Numerics;

public unsafe class HalfDotTests
{
    [Fact]
    public void ToSingle16_ConvertsEveryHalfExactlyAsTheScalarConversion()
    {
        if (!HalfDot.VectorPathSupported)
        {
            return;
        }

        var bits = new ushort[65536];
        for (int i = 0; i < bits.Length; i++)
        {
            bits[i] = (ushort)i;
        }

        fixed (ushort* p = bits)
        {
            for (int i = 0; i < bits.Length; i += 16)
            {
                var v = HalfBits.ToSingle16(p + i);
                for (int k = 0; k < 16; k++)
                {
                    float expected = HalfBits.ToSingle(bits[i + k]);
                    Assert.True(
                        BitConverter.SingleToInt32Bits(v[k]) == BitConverter.SingleToInt32Bits(expected) || (float.IsNaN(v[k]) && float.IsNaN(expected)),
                        $"half 0x{bits[i + k]:X4}: {v[k]:R} vs {expected:R}");
                }
            }
        }
    }

    [Theory]
    [InlineData(1)]
    [InlineData(15)]
    [InlineData(64)]
    [InlineData(100)]
    [InlineData(2048)]
    public void Dot_VectorEqualsScalarTwin_BothCloseToTheDoubleDot(int n)
    {
        var rng = new Random(n);
        var row = Enumerable.Range(0, n).Select(_ => BitConverter.HalfToUInt16Bits((Half)((rng.NextDouble() * 2) - 1))).ToArray();
        var x = Enumerable.Range(0, n).Select(_ => (float)((rng.NextDouble() * 4) - 2)).ToArray();
        double exact = 0, magnitude = 0;
        for (int i = 0; i < n; i++)
        {
            exact += (double)(float)BitConverter.UInt16BitsToHalf(row[i]) * x[i];
            magnitude += Math.Abs((double)(float)BitConverter.UInt16BitsToHalf(row[i]) * x[i]);
        }

        fixed (ushort* r = row)
        fixed (float* px = x)
        {
            float vector = HalfDot.Dot(r, px, n), scalar = HalfDot.DotScalar(r, px, n);
            double bound = 1e-6 * Math.Max(magnitude, 1e-30) * Math.Sqrt(n);
            Assert.True(Math.Abs(scalar - exact) <= bound, $"scalar {scalar} vs {exact}");
            Assert.Equal(BitConverter.SingleToInt32Bits(scalar), BitConverter.SingleToInt32Bits(vector));
        }
    }

    [Theory]
    [InlineData(15)]
    [InlineData(100)]
    [InlineData(2048)]
    public void Dot4_GivesEachTokenTheBitsOfTheSingleDot(int n)
    {
        var rng = new Random(n + 1);
        var row = Enumerable.Range(0, n).Select(_ => BitConverter.HalfToUInt16Bits((Half)((rng.NextDouble() * 2) - 1))).ToArray();
        int stride = n + 3;
        var x = Enumerable.Range(0, 4 * stride).Select(_ => (float)((rng.NextDouble() * 4) - 2)).ToArray();
        var output = new float[4 * 5];
        fixed (ushort* r = row)
        fixed (float* px = x)
        fixed (float* po = output)
        {
            HalfDot.Dot4(r, px, stride, n, po, 5);
            for (int k = 0; k < 4; k++)
            {
                float single = HalfDot.Dot(r, px + (k * stride), n);
                Assert.Equal(BitConverter.SingleToInt32Bits(single), BitConverter.SingleToInt32Bits(output[k * 5]));
            }
        }
    }

    [Fact]
    public void MatMul_OfAnF16MatrixMatchesTheDequantizedRowDots()
    {
        var rng = new Random(3);
        const int rows = 37, cols = 200, tokens = 7;
        var w = Enumerable.Range(0, rows * cols).Select(_ => BitConverter.HalfToUInt16Bits((Half)((rng.NextDouble() * 2) - 1))).ToArray();
        var x = Enumerable.Range(0, tokens * cols).Select(_ => (float)((rng.NextDouble() * 4) - 2)).ToArray();
        var y = new float[tokens * rows];
        using var pool = new WorkerPool(2);
        fixed (ushort* p = w)
        {
            using var m = new WeightMatrix("f16", GgmlType.F16, rows, cols, (byte*)p);
            new MatMulKernel(pool).MatMul(m, x, y, tokens);
            var row = new float[cols];
            for (int r = 0; r < rows; r++)
            {
                m.DequantizeRow(r, row);
                for (int t = 0; t < tokens; t++)
                {
                    double exact = 0;
                    for (int c = 0; c < cols; c++)
                    {
                        exact += (double)row[c] * x[(t * cols) + c];
                    }

                    Assert.True(Math.Abs(y[(t * rows) + r] - exact) <= 1e-4, $"row {r} token {t}: {y[(t * rows) + r]} vs {exact}");
                }
            }
        }
    }

    [Theory]
    [InlineData(16)]
    [InlineData(200)]
    [InlineData(2048)]
    public void FiniteHalvesPath_GivesTheExactPathsBits(int n)
    {
        var rng = new Random(n);
        // finite halves over the whole range, subnormals and signed zeros included
        var row = Enumerable.Range(0, n).Select(_ => (ushort)(rng.Next(0x10000) & 0xBFFF)).ToArray();
        var x = Enumerable.Range(0, 4 * n).Select(_ => (float)((rng.NextDouble() * 2) - 1) * 1e-3f).ToArray();
        var exact = new float[4 * 3];
        var finite = new float[4 * 3];
        fixed (ushort* r = row)
        fixed (float* px = x)
        fixed (float* pe = exact)
        fixed (float* pf = finite)
        {
            Assert.Equal(
                BitConverter.SingleToInt32Bits(HalfDot.Dot(r, px, n, finiteHalves: false)),
                BitConverter.SingleToInt32Bits(HalfDot.Dot(r, px, n, finiteHalves: true)));
            HalfDot.Tile(r, 0, 1, px, n, 4, n, pe, 0, 3, finiteHalves: false);
            HalfDot.Tile(r, 0, 1, px, n, 4, n, pf, 0, 3, finiteHalves: true);
        }

        Assert.Equal(exact.Select(BitConverter.SingleToInt32Bits), finite.Select(BitConverter.SingleToInt32Bits));
    }

    [Fact]
    public void MatMul_ScansForInfAndNaN_AndKeepsTheExactConversionForAMatrixThatHasThem()
    {
        var rng = new Random(8);
        const int rows = 8, cols = 256;
        var w = Enumerable.Range(0, rows * cols).Select(_ => BitConverter.HalfToUInt16Bits((Half)((rng.NextDouble() * 2) - 1))).ToArray();
        var x = Enumerable.Range(0, cols).Select(_ => (float)((rng.NextDouble() * 4) - 2)).ToArray();
        var y = new float[rows];
        using var pool = new WorkerPool(2);
        var kernel = new MatMulKernel(pool);
        fixed (ushort* p = w)
        fixed (float* px = x)
        {
            using (var finite = new WeightMatrix("finite", GgmlType.F16, rows, cols, (byte*)p))
            {
                Assert.True(finite.HalvesAllFinite);
                kernel.MatMul(finite, x, y, 1);
                for (int r = 0; r < rows; r++)
                {
                    Assert.Equal(BitConverter.SingleToInt32Bits(HalfDot.Dot(p + (r * cols), px, cols)), BitConverter.SingleToInt32Bits(y[r]));
                }
            }

            // +Inf in row 2, NaN in row 5: those rows' results are infinite / NaN, as the exact conversion gives
            p[(2 * cols) + 100] = 0x7C00;
            p[(5 * cols) + 7] = 0x7E00;
            using var special = new WeightMatrix("special", GgmlType.F16, rows, cols, (byte*)p);
            Assert.False(special.HalvesAllFinite);
            kernel.MatMul(special, x, y, 1);
            Assert.True(float.IsInfinity(y[2]), $"{y[2]}");
            Assert.True(float.IsNaN(y[5]), $"{y[5]}");
            for (int r = 0; r < rows; r++)
            {
                float expected = HalfDot.Dot(p + (r * cols), px, cols);
                Assert.True(BitConverter.SingleToInt32Bits(expected) == BitConverter.SingleToInt32Bits(y[r]) || (float.IsNaN(expected) && float.IsNaN(y[r])), $"row {r}: {y[r]} vs {expected}");
            }
        }

        using var q8 = new WeightMatrix("q8", GgmlType.Q8_0, 1, 32, (byte*)null);
        Assert.False(q8.HalvesAllFinite);
    }

    [Theory]
    [InlineData(1, 1, 16, false)]
    [InlineData(4, 4, 2048, true)]
    [InlineData(4, 4, 200, false)]
    [InlineData(5, 6, 100, true)]
    [InlineData(6, 1, 64, false)]
    [InlineData(3, 9, 47, true)]
    public void Tile_GivesEveryRowAndTokenTheScalarTwinsBits(int rows, int tokens, int n, bool finiteHalves)
    {
        var rng = new Random((rows * 100) + (tokens * 10) + n);
        int rowStride = n + 5, xStride = n + 3;
        var w = Enumerable.Range(0, rows * rowStride).Select(_ => BitConverter.HalfToUInt16Bits((Half)((rng.NextDouble() * 2) - 1))).ToArray();
        var x = Enumerable.Range(0, tokens * xStride).Select(_ => (float)((rng.NextDouble() * 4) - 2)).ToArray();
        const int rowOut = 3;
        int tokenOut = (rows * rowOut) + 1;
        var output = new float[tokens * tokenOut];
        fixed (ushort* pw = w)
        fixed (float* px = x)
        fixed (float* po = output)
        {
            HalfDot.Tile(pw, rowStride, rows, px, xStride, tokens, n, po, rowOut, tokenOut, finiteHalves);
            for (int k = 0; k < rows; k++)
            {
                for (int t = 0; t < tokens; t++)
                {
                    float scalar = HalfDot.DotScalar(pw + (k * rowStride), px + (t * xStride), n);
                    float got = output[(t * tokenOut) + (k * rowOut)];
                    Assert.True(BitConverter.SingleToInt32Bits(scalar) == BitConverter.SingleToInt32Bits(got), $"row {k} token {t}: {got:R} vs scalar twin {scalar:R}");
                }
            }
        }

        // the outputs between the strides are left alone
        Assert.Equal(0f, output[1]);
        Assert.Equal(0f, output[tokenOut - 1]);
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => HalfDot.Tile(null, 0, 0, null, 0, 1, 16, null, 0, 0, false));
        Assert.Contains("at least one row", e.Message);
    }

    [Theory]
    [InlineData(1, 1, 16)]
    [InlineData(4, 4, 2048)]
    [InlineData(5, 6, 100)]
    [InlineData(6, 1, 47)]
    public void TileBFloat16_GivesEveryRowAndTokenTheScalarTwinsBits_CloseToTheDoubleDot(int rows, int tokens, int n)
    {
        var rng = new Random((rows * 100) + (tokens * 10) + n + 1);
        int rowStride = n + 5, xStride = n + 3;
        // bfloat16 values: the upper halves of random floats, a few of them subnormal
        var w = Enumerable.Range(0, rows * rowStride).Select(i => (ushort)(BitConverter.SingleToUInt32Bits((float)((rng.NextDouble() * 2) - 1) * (i % 37 == 0 ? 1e-39f : 1f)) >> 16)).ToArray();
        var x = Enumerable.Range(0, tokens * xStride).Select(_ => (float)((rng.NextDouble() * 4) - 2)).ToArray();
        const int rowOut = 2;
        int tokenOut = (rows * rowOut) + 1;
        var output = new float[tokens * tokenOut];
        fixed (ushort* pw = w)
        fixed (float* px = x)
        fixed (float* po = output)
        {
            HalfDot.TileBFloat16(pw, rowStride, rows, px, xStride, tokens, n, po, rowOut, tokenOut);
            for (int k = 0; k < rows; k++)
            {
                for (int t = 0; t < tokens; t++)
                {
                    float scalar = HalfDot.DotBFloat16Scalar(pw + (k * rowStride), px + (t * xStride), n);
                    float got = output[(t * tokenOut) + (k * rowOut)];
                    Assert.True(BitConverter.SingleToInt32Bits(scalar) == BitConverter.SingleToInt32Bits(got), $"row {k} token {t}: {got:R} vs scalar twin {scalar:R}");
                    double exact = 0, magnitude = 0;
                    for (int i = 0; i < n; i++)
                    {
                        double p = (double)BitConverter.UInt32BitsToSingle((uint)w[(k * rowStride) + i] << 16) * x[(t * xStride) + i];
                        exact += p;
                        magnitude += Math.Abs(p);
                    }

                    Assert.True(Math.Abs(got - exact) <= 1e-6 * magnitude * Math.Sqrt(n), $"row {k} token {t}: {got} vs {exact}");
                }
            }
        }
    }
}
