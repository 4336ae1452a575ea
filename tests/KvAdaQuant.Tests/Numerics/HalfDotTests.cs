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
    public void Dot_VectorAndScalarTwinAgreeWithTheDoubleDot(int n)
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
            Assert.True(Math.Abs(vector - exact) <= bound, $"vector {vector} vs {exact}");
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
}
