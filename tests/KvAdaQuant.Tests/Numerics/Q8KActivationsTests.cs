using KvAdaQuant.Numerics;

namespace KvAdaQuant.Tests.Numerics;

/// <summary>Q8_K activations: llama.cpp's quantize_row_q8_K rule, written out here, and the vector path equal to the scalar twin.</summary>
public class Q8KActivationsTests
{
    // ggml's quantize_row_q8_K_ref for one block, independently: nearest_int by the float magic number.
    private static (sbyte[] Q, float D, short[] Sums) Reference(float[] x)
    {
        float max = 0, amax = 0;
        foreach (float v in x)
        {
            if (MathF.Abs(v) > amax)
            {
                amax = MathF.Abs(v);
                max = v;
            }
        }

        var q = new sbyte[256];
        var sums = new short[16];
        if (amax == 0)
        {
            return (q, 0, sums);
        }

        float iscale = -127f / max;
        for (int j = 0; j < 256; j++)
        {
            float val = (iscale * x[j]) + 12582912f;
            int i = (BitConverter.SingleToInt32Bits(val) & 0x007fffff) - 0x00400000;
            q[j] = (sbyte)Math.Min(127, i);
            sums[j / 16] += q[j];
        }

        return (q, 1 / iscale, sums);
    }

    [Theory]
    [InlineData(1, 1.0)]
    [InlineData(2, 1e-3)]
    [InlineData(3, 50.0)]
    public void VectorAndScalarEqualGgmlRule(int seed, double scale)
    {
        var rng = new Random(seed);
        const int n = 3, cols = 512;
        var x = Enumerable.Range(0, n * cols).Select(_ => (float)(((rng.NextDouble() * 2) - 1) * scale)).ToArray();

        // ties of magnitude with opposite signs (the first one decides the sign of the scale), exact halves, zeros
        x[10] = 2f * (float)scale;
        x[11] = -2f * (float)scale;
        x[300] = -3f * (float)scale;
        x[301] = 3f * (float)scale;
        Array.Clear(x, 2 * 256, 256);
        var vector = new Q8KActivations();
        var scalar = new Q8KActivations();
        vector.Quantize(x, n, cols, vector: true);
        scalar.Quantize(x, n, cols, vector: false);
        Assert.Equal(scalar.Values[..(n * cols)], vector.Values[..(n * cols)]);
        Assert.Equal(scalar.Scales[..(n * cols / 256)], vector.Scales[..(n * cols / 256)]);
        Assert.Equal(scalar.Sums16[..(n * cols / 16)], vector.Sums16[..(n * cols / 16)]);
        for (int b = 0; b < n * cols / 256; b++)
        {
            var (q, d, sums) = Reference(x[(b * 256)..((b + 1) * 256)]);
            Assert.Equal(q, scalar.Values[(b * 256)..((b + 1) * 256)]);
            Assert.Equal(BitConverter.SingleToInt32Bits(d), BitConverter.SingleToInt32Bits(scalar.Scales[b]));
            Assert.Equal(sums, scalar.Sums16[(b * 16)..((b + 1) * 16)]);
        }

        Assert.True(scalar.Scales[0] < 0, "the first of two equal magnitudes (positive) gives iscale = -127 / max < 0");
        Assert.Equal(-127, (int)scalar.Values[10]);
        Assert.Equal(0f, scalar.Scales[2]);
    }

    [Fact]
    public void RowLengthNotAMultipleOf256_Throws()
    {
        var e = Assert.Throws<ArgumentException>(() => new Q8KActivations().Quantize(new float[288], 1, 288));
        Assert.Contains("288", e.Message);
    }
}
