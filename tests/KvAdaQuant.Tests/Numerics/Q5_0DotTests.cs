using KvAdaQuant.Numerics;

namespace KvAdaQuant.Tests.Numerics;

/// <summary>
/// The Q5_0 dot product with Q8_0 activations: the vector path equals its scalar twin bit for bit, the values follow
/// ggml's dequantize_row_q5_0 (written out here), the result is close to the float product, and the matrix product uses it.
/// </summary>
public unsafe class Q5_0DotTests
{
    private static byte[] RandomRows(Random rng, int rows, int blocks)
    {
        var w = new byte[rows * blocks * 22];
        rng.NextBytes(w);
        for (int i = 0; i < rows * blocks; i++)
        {
            BitConverter.TryWriteBytes(w.AsSpan(i * 22), (Half)(float)((rng.NextDouble() * 0.02) - 0.01));
        }

        return w;
    }

    // ggml's dequantize_row_q5_0 for one block: x0 = (qs[j] & 0xF | ((qh >> j) & 1) << 4) - 16, x1 from the high nibble and bit j + 16.
    private static float[] Dequantize(byte[] data, int o)
    {
        var y = new float[32];
        float d = (float)BitConverter.UInt16BitsToHalf(BitConverter.ToUInt16(data, o));
        uint qh = BitConverter.ToUInt32(data, o + 2);
        for (int j = 0; j < 16; j++)
        {
            int xh0 = (int)(((qh >> j) << 4) & 0x10);
            int xh1 = (int)((qh >> (j + 12)) & 0x10);
            y[j] = ((data[o + 6 + j] & 0x0F | xh0) - 16) * d;
            y[j + 16] = ((data[o + 6 + j] >> 4 | xh1) - 16) * d;
        }

        return y;
    }

    [Theory]
    [InlineData(1)]
    [InlineData(6)]
    [InlineData(64)]
    public void VectorPathEqualsScalarTwin_ValuesAreGgmls_CloseToFloat(int blocks)
    {
        var rng = new Random(blocks);
        int cols = blocks * 32;
        var w = RandomRows(rng, 1, blocks);
        var x = Enumerable.Range(0, cols).Select(_ => (float)((rng.NextDouble() * 2) - 1)).ToArray();
        var a = new Q8Activations();
        a.Quantize(x, 1, cols);
        fixed (byte* pw = w)
        fixed (sbyte* pq = a.Values)
        fixed (float* pd = a.Scales)
        {
            double exact = 0, norm = 0;
            for (int b = 0; b < blocks; b++)
            {
                var deq = Dequantize(w, b * 22);
                float d = (float)BitConverter.UInt16BitsToHalf(BitConverter.ToUInt16(w, b * 22));
                for (int i = 0; i < 32; i++)
                {
                    Assert.Equal(deq[i], Q5_0Dot.Value(pw + (b * 22), i) * d);
                    exact += deq[i] * x[(b * 32) + i];
                    norm += Math.Abs(deq[i] * x[(b * 32) + i]);
                }
            }

            float scalar = Q5_0Dot.DotScalar(pw, pq, pd, blocks);
            Assert.True(Math.Abs(scalar - exact) <= 0.02 * norm, $"{scalar} vs float {exact} (sum |w x| {norm})");
            if (Q5_0Dot.VectorPathSupported)
            {
                float vector = Q5_0Dot.DotAvx2(pw, pq, pd, blocks);
                Assert.Equal(BitConverter.SingleToInt32Bits(scalar), BitConverter.SingleToInt32Bits(vector));
            }
        }
    }

    [Fact]
    public void ExtremeValues_AreExact()
    {
        // all values -16 (nibbles 0, bits 0), d = 1, activations all -127 after quantization except the first at +127:
        // 16 x 127 x 30 per block (signs as below), exact in the int32 lanes.
        var w = new byte[22];
        BitConverter.TryWriteBytes(w.AsSpan(0), (Half)1f);
        var x = Enumerable.Range(0, 32).Select(i => i == 0 ? -1f : 1f).ToArray();
        var a = new Q8Activations();
        a.Quantize(x, 1, 32);
        fixed (byte* pw = w)
        fixed (sbyte* pq = a.Values)
        fixed (float* pd = a.Scales)
        {
            float scalar = Q5_0Dot.DotScalar(pw, pq, pd, 1);
            double exact = 0;
            for (int i = 0; i < 32; i++)
            {
                exact += -16.0 * a.Values[i] * a.Scales[0];
            }

            Assert.True(Math.Abs(scalar - exact) <= 1e-6 * Math.Abs(exact), $"{scalar} vs {exact}");
            if (Q5_0Dot.VectorPathSupported)
            {
                Assert.Equal(scalar, Q5_0Dot.DotAvx2(pw, pq, pd, 1));
            }
        }
    }

    [Theory]
    [InlineData(1)]
    [InlineData(5)]
    public void MatMul_MultipliesQ5_0RowsWithTheIntegerKernel(int tokens)
    {
        var rng = new Random(40 + tokens);
        const int rows = 13, blocks = 6, cols = blocks * 32;
        var data = RandomRows(rng, rows, blocks);
        var x = Enumerable.Range(0, tokens * cols).Select(_ => (float)((rng.NextDouble() * 4) - 2)).ToArray();
        var a = new Q8Activations();
        a.Quantize(x, tokens, cols);
        var y = new float[tokens * rows];
        using var pool = new WorkerPool(2);
        var kernel = new MatMulKernel(pool);
        fixed (byte* p = data)
        fixed (sbyte* pq = a.Values)
        fixed (float* pd = a.Scales)
        {
            using var w = new WeightMatrix("w", GgmlType.Q5_0, rows, cols, p);
            kernel.MatMul(w, x, y, tokens);
            for (int t = 0; t < tokens; t++)
            {
                for (int r = 0; r < rows; r++)
                {
                    float expected = Q5_0Dot.DotScalar(p + (r * blocks * 22), pq + (t * cols), pd + (t * blocks), blocks);
                    Assert.Equal(BitConverter.SingleToInt32Bits(expected), BitConverter.SingleToInt32Bits(y[(t * rows) + r]));
                }
            }
        }
    }
}
