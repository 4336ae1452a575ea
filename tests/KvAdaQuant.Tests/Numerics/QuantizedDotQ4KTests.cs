using KvAdaQuant.Numerics;

namespace KvAdaQuant.Tests.Numerics;

public unsafe class QuantizedDotQ4KTests
{
    private static byte[] RandomSuperBlocks(Random rng, int count)
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

    // ggml's dequantize_row_q4_K, written out independently of the library.
    private static float[] Dequantize(byte[] data, int count)
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

    [Fact]
    public void VectorPathEqualsScalarTwinAndFloatReference()
    {
        var rng = new Random(11);
        const int count = 4;
        var w = RandomSuperBlocks(rng, count);
        var x = Enumerable.Range(0, count * 256).Select(_ => (float)((rng.NextDouble() * 2) - 1)).ToArray();
        var a = new Q8Activations();
        a.Quantize(x, 1, x.Length);
        var deq = Dequantize(w, count);
        double exact = 0, norm = 0;
        for (int i = 0; i < deq.Length; i++)
        {
            exact += deq[i] * x[i];
            norm += Math.Abs(deq[i] * x[i]);
        }

        fixed (byte* pw = w)
        fixed (sbyte* pq = a.Values)
        fixed (float* pd = a.Scales)
        fixed (int* ps = a.Sums)
        {
            float scalar = QuantizedDot.DotQ4_KScalar(pw, pq, pd, ps, count);
            Assert.True(Math.Abs(scalar - exact) <= 0.01 * norm, $"scalar {scalar} vs float {exact} (sum |w x| {norm})");
            if (QuantizedDot.VectorPathSupported)
            {
                float vector = QuantizedDot.DotQ4_KAvx2(pw, pq, pd, ps, count);
                Assert.True(Math.Abs(scalar - vector) <= 1e-4 * (1 + Math.Abs(scalar)), $"scalar {scalar} vs vector {vector}");
            }
        }
    }
}
