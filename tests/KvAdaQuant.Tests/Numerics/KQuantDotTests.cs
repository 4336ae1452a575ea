using KvAdaQuant.Numerics;

namespace KvAdaQuant.Tests.Numerics;

/// <summary>
/// The Q4_K and Q6_K dot products with Q8_K activations: the AVX2 path equals its scalar twin bit for bit for 1-4 tokens, a token gives the
/// same bits alone and in a batch, and the result is close to a float product with the weights dequantized by ggml's
/// rules (written out here, independently of the library).
/// </summary>
public unsafe class KQuantDotTests
{
    private static byte[] RandomQ6_K(Random rng, int count)
    {
        var data = new byte[count * 210];
        rng.NextBytes(data);
        for (int b = 0; b < count; b++)
        {
            fixed (byte* p = &data[b * 210])
            {
                *(Half*)(p + 208) = (Half)(float)((rng.NextDouble() * 0.01) + 0.001);
            }
        }

        return data;
    }

    private static byte[] RandomQ4_K(Random rng, int count)
    {
        var data = new byte[count * 144];
        rng.NextBytes(data);
        for (int b = 0; b < count; b++)
        {
            fixed (byte* p = &data[b * 144])
            {
                *(Half*)p = (Half)(float)((rng.NextDouble() * 0.01) + 0.001);
                *(Half*)(p + 2) = (Half)(float)(rng.NextDouble() * 0.01);
            }
        }

        return data;
    }

    // ggml's dequantize_row_q6_K.
    private static float[] DequantizeQ6_K(byte[] data, int count)
    {
        var y = new float[count * 256];
        for (int b = 0; b < count; b++)
        {
            int o = b * 210;
            float d = (float)BitConverter.UInt16BitsToHalf(BitConverter.ToUInt16(data, o + 208));
            for (int h = 0; h < 2; h++)
            {
                int ql = o + (h * 64), qh = o + 128 + (h * 32), sc = o + 192 + (h * 8), yo = (b * 256) + (h * 128);
                for (int l = 0; l < 32; l++)
                {
                    int isc = l / 16;
                    int q1 = ((data[ql + l] & 0xF) | (((data[qh + l] >> 0) & 3) << 4)) - 32;
                    int q2 = ((data[ql + l + 32] & 0xF) | (((data[qh + l] >> 2) & 3) << 4)) - 32;
                    int q3 = ((data[ql + l] >> 4) | (((data[qh + l] >> 4) & 3) << 4)) - 32;
                    int q4 = ((data[ql + l + 32] >> 4) | (((data[qh + l] >> 6) & 3) << 4)) - 32;
                    y[yo + l] = d * (sbyte)data[sc + isc] * q1;
                    y[yo + l + 32] = d * (sbyte)data[sc + isc + 2] * q2;
                    y[yo + l + 64] = d * (sbyte)data[sc + isc + 4] * q3;
                    y[yo + l + 96] = d * (sbyte)data[sc + isc + 6] * q4;
                }
            }
        }

        return y;
    }

    // ggml's dequantize_row_q4_K.
    private static float[] DequantizeQ4_K(byte[] data, int count)
    {
        var y = new float[count * 256];
        for (int b = 0; b < count; b++)
        {
            int o = b * 144;
            float d = (float)BitConverter.UInt16BitsToHalf(BitConverter.ToUInt16(data, o));
            float dmin = (float)BitConverter.UInt16BitsToHalf(BitConverter.ToUInt16(data, o + 2));
            var sc = data.AsSpan(o + 4, 12);
            for (int j = 0; j < 8; j++)
            {
                int s = j < 4 ? sc[j] & 63 : (sc[j + 4] & 0xF) | ((sc[j - 4] >> 6) << 4);
                int m = j < 4 ? sc[j + 4] & 63 : (sc[j + 4] >> 4) | ((sc[j] >> 6) << 4);
                for (int l = 0; l < 32; l++)
                {
                    byte q = data[o + 16 + ((j / 2) * 32) + l];
                    int v = j % 2 == 0 ? q & 0xF : q >> 4;
                    y[(b * 256) + (j * 32) + l] = (d * s * v) - (dmin * m);
                }
            }
        }

        return y;
    }

    private delegate void Dot(byte* row, int superBlocks, int tokens, sbyte* xq, float* xd, short* xsum, float* output, long outStride);

    private static void Q6Scalar(byte* row, int superBlocks, int tokens, sbyte* xq, float* xd, short* xsum, float* output, long outStride)
        => KQuantDot.DotQ6_KScalar(row, superBlocks, tokens, xq, xd, output, outStride);

    private static void Q6Vector(byte* row, int superBlocks, int tokens, sbyte* xq, float* xd, short* xsum, float* output, long outStride)
        => KQuantDot.DotQ6_KAvx2(row, superBlocks, tokens, xq, xd, output, outStride);

    [Theory]
    [InlineData(false, 1)]
    [InlineData(false, 3)]
    [InlineData(false, 4)]
    [InlineData(true, 1)]
    [InlineData(true, 2)]
    [InlineData(true, 4)]
    public void VectorPathEqualsScalarTwinBitForBit_BatchEqualsSingleTokens_CloseToFloat(bool q6, int tokens)
    {
        var rng = new Random(tokens + (q6 ? 100 : 0));
        const int count = 5, cols = count * 256;
        var w = q6 ? RandomQ6_K(rng, count) : RandomQ4_K(rng, count);
        var deq = q6 ? DequantizeQ6_K(w, count) : DequantizeQ4_K(w, count);
        var x = Enumerable.Range(0, tokens * cols).Select(_ => (float)((rng.NextDouble() * 2) - 1)).ToArray();
        var a = new Q8KActivations();
        a.Quantize(x, tokens, cols);
        Dot scalar = q6 ? Q6Scalar : KQuantDot.DotQ4_KScalar;
        Dot vector = q6 ? Q6Vector : KQuantDot.DotQ4_KAvx2;
        var batch = new float[tokens * 3];
        var single = new float[tokens];
        var vectorBatch = new float[tokens * 3];
        fixed (byte* pw = w)
        fixed (sbyte* pq = a.Values)
        fixed (float* pd = a.Scales)
        fixed (short* ps = a.Sums16)
        fixed (float* pb = batch)
        fixed (float* p1 = single)
        fixed (float* pv = vectorBatch)
        {
            scalar(pw, count, tokens, pq, pd, ps, pb, 3);
            for (int t = 0; t < tokens; t++)
            {
                scalar(pw, count, 1, pq + (t * cols), pd + (t * count), ps + (t * count * 16), p1 + t, 1);
            }

            if (KQuantDot.VectorPathSupported)
            {
                vector(pw, count, tokens, pq, pd, ps, pv, 3);
            }
        }

        for (int t = 0; t < tokens; t++)
        {
            double exact = 0, norm = 0;
            for (int i = 0; i < cols; i++)
            {
                exact += deq[i] * x[(t * cols) + i];
                norm += Math.Abs(deq[i] * x[(t * cols) + i]);
            }

            Assert.True(Math.Abs(batch[t * 3] - exact) <= 0.02 * norm, $"token {t}: {batch[t * 3]} vs float {exact} (sum |w x| {norm})");
            Assert.Equal(BitConverter.SingleToInt32Bits(single[t]), BitConverter.SingleToInt32Bits(batch[t * 3]));
            if (KQuantDot.VectorPathSupported)
            {
                Assert.Equal(BitConverter.SingleToInt32Bits(batch[t * 3]), BitConverter.SingleToInt32Bits(vectorBatch[t * 3]));
            }
        }
    }

    [Fact]
    public void ExtremeCodes_IntegerSumsStayExact()
    {
        // Q6_K: every value q = 0 (q - 32 = -32), every scale -128, activations all at -127 or 127 after quantization:
        // the largest integer sums the kernels hold (8 x 4 x 32 x 127 x 128 per lane and super-block).
        var w = new byte[210];
        for (int i = 192; i < 208; i++)
        {
            w[i] = 0x80;
        }

        fixed (byte* p = w)
        {
            *(Half*)(p + 208) = (Half)1f;
        }

        // the first value of largest magnitude is +1 (quantized to -127), all others -1 (quantized to +127)
        var x = Enumerable.Range(0, 256).Select(i => i == 0 ? 1f : -1f).ToArray();
        var a = new Q8KActivations();
        a.Quantize(x, 1, 256);
        Assert.Equal(-127, (int)a.Values[0]);
        Assert.All(a.Values[1..256], v => Assert.Equal(127, (int)v));
        float scalar = 0, vector = 0;
        fixed (byte* pw = w)
        fixed (sbyte* pq = a.Values)
        fixed (float* pd = a.Scales)
        {
            KQuantDot.DotQ6_KScalar(pw, 1, 1, pq, pd, &scalar, 1);
            if (KQuantDot.VectorPathSupported)
            {
                KQuantDot.DotQ6_KAvx2(pw, 1, 1, pq, pd, &vector, 1);
                Assert.Equal(scalar, vector);
            }
        }

        // exact: 128 x 32 x 127 x (255 - 1), times d = 1 and the activation scale 1 / iscale = -1 / 127
        double exact = 128.0 * 32 * 127 * 254 * a.Scales[0];
        Assert.True(Math.Abs(exact - scalar) <= 1e-6 * Math.Abs(exact), $"{scalar} vs {exact}");
    }

    [Fact]
    public void Q6Value_ReadsGgmlLayout()
    {
        var w = RandomQ6_K(new Random(5), 1);
        var deq = DequantizeQ6_K(w, 1);
        float d = (float)BitConverter.UInt16BitsToHalf(BitConverter.ToUInt16(w, 208));
        fixed (byte* p = w)
        {
            for (int e = 0; e < 256; e++)
            {
                Assert.Equal(deq[e], d * (sbyte)w[192 + (e / 16)] * (KQuantDot.Q6Value(p, e) - 32));
            }
        }
    }

    [Fact]
    public void MoreThanFourTokensAtOnce_Throws()
    {
        var w = new byte[210];
        var x = new sbyte[5 * 256];
        var d = new float[5];
        var y = new float[5];
        fixed (byte* pw = w)
        fixed (sbyte* px = x)
        fixed (float* pd = d)
        fixed (float* py = y)
        {
            byte* rw = pw;
            sbyte* rx = px;
            float* rd = pd, ry = py;
            Assert.Throws<ArgumentOutOfRangeException>(() => KQuantDot.DotQ6_KScalar(rw, 1, 5, rx, rd, ry, 1));
            Assert.Throws<ArgumentOutOfRangeException>(() => KQuantDot.DotQ4_KScalar(rw, 1, 0, rx, rd, null, ry, 1));
        }
    }
}
