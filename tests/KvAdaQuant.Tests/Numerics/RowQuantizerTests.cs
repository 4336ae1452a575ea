using System.Buffers.Binary;
using KvAdaQuant.Numerics;

namespace KvAdaQuant.Tests.Numerics;

/// <summary>ggml reference rounding of Q8_0 / Q4_0 / F16 on hand-computed blocks, and round-trip error bounds.</summary>
public class RowQuantizerTests
{
    [Fact]
    public void Q8_0ScaleIsAbsMaxOver127AndRoundsHalfAwayFromZero()
    {
        var x = new float[32];
        x[0] = 127f;
        x[1] = -63.5f; // -> -64 (roundf), banker's rounding would give -64 too
        x[2] = 0.5f;   // -> 1 (roundf), banker's rounding would give 0
        x[3] = 2.5f;   // -> 3, banker's would give 2
        x[4] = -1.49f; // -> -1
        var b = new byte[34];
        RowQuantizer.Quantize(GgmlType.Q8_0, x, b);
        Assert.Equal(1f, (float)BinaryPrimitives.ReadHalfLittleEndian(b));
        Assert.Equal(new sbyte[] { 127, -64, 1, 3, -1, 0 }, b.AsSpan(2, 6).ToArray().Select(v => (sbyte)v).ToArray());
    }

    [Fact]
    public void Q4_0ScaleIsSignedMaxOverMinusEightAndClampsAtFifteen()
    {
        var x = new float[32];
        x[0] = -8f;   // the largest magnitude, negative: d = 1
        x[1] = 7.4f;  // 15.9 truncates to 15
        x[2] = -0.5f; // 8.0 -> 8
        x[3] = -0.6f; // 7.9 -> 7
        x[16] = 3f;   // 11.5 -> 11
        var b = new byte[18];
        RowQuantizer.Quantize(GgmlType.Q4_0, x, b);
        Assert.Equal(1f, (float)BinaryPrimitives.ReadHalfLittleEndian(b));
        Assert.Equal(0 | (11 << 4), b[2]);
        Assert.Equal(15 | (8 << 4), b[3]);
        Assert.Equal(8 | (8 << 4), b[4]);
        Assert.Equal(7 | (8 << 4), b[5]);

        // A positive maximum gives a negative scale; its mirror image -max would need 16 and is clamped to 15.
        x = new float[32];
        x[0] = 8f;
        x[1] = -8f;
        RowQuantizer.Quantize(GgmlType.Q4_0, x, b);
        Assert.Equal(-1f, (float)BinaryPrimitives.ReadHalfLittleEndian(b));
        var back = new float[32];
        RowDequantizer.Dequantize(GgmlType.Q4_0, b, back);
        Assert.Equal(8f, back[0]);
        Assert.Equal(-7f, back[1]);
    }

    [Theory]
    [InlineData(GgmlType.Q8_0, 34, 0.5)]
    [InlineData(GgmlType.Q4_0, 18, 1.0)]
    // d is rounded to FP16 after the quants are chosen, adding up to |q| * 2^-11 * d (<= 0.07 d) to the rounding error.
    public void RoundTripErrorIsBoundedByTheBlockScale(GgmlType type, int blockBytes, double scales)
    {
        var rng = new Random(42);
        var x = Enumerable.Range(0, 32 * 64).Select(i => (float)((rng.NextDouble() - 0.5) * Math.Pow(10, (i / 32 % 6) - 1))).ToArray();
        x[40] = 0f;
        Array.Clear(x, 64, 32); // an all-zero block
        var q = new byte[64 * blockBytes];
        RowQuantizer.Quantize(type, x, q);
        var back = new float[x.Length];
        RowDequantizer.Dequantize(type, q, back);
        for (int b = 0; b < 64; b++)
        {
            float d = Math.Abs((float)BinaryPrimitives.ReadHalfLittleEndian(q.AsSpan(b * blockBytes)));
            for (int j = 0; j < 32; j++)
            {
                int i = (b * 32) + j;
                Assert.True(Math.Abs(x[i] - back[i]) <= ((scales + 0.07) * d) + 1e-7, $"{type} element {i}: {x[i]} -> {back[i]} with d {d}");
            }
        }

        Assert.All(back.AsSpan(64, 32).ToArray(), v => Assert.Equal(0f, v));
    }

    [Fact]
    public void F16RoundsToNearestEvenAndF32IsExact()
    {
        float[] x = [1f, 1f + (1f / 2048), 1f + (3f / 2048), 65504f, -0.1f];
        var h = new byte[x.Length * 2];
        RowQuantizer.Quantize(GgmlType.F16, x, h);
        var back = new float[x.Length];
        RowDequantizer.Dequantize(GgmlType.F16, h, back);
        Assert.Equal(1f, back[1]); // halfway between 1 and 1 + 2^-10: ties to even
        Assert.Equal(1f + (2f / 1024), back[2]); // halfway between 1 + 2^-10 and 1 + 2^-9: ties to even
        Assert.Equal(65504f, back[3]);
        Assert.Equal((float)(Half)(-0.1f), back[4]);
        var f = new byte[x.Length * 4];
        RowQuantizer.Quantize(GgmlType.F32, x, f);
        RowDequantizer.Dequantize(GgmlType.F32, f, back);
        Assert.Equal(x, back);
    }

    [Fact]
    public void BF16RoundsToNearestEvenAndKeepsNaNQuiet()
    {
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7 (ties to even: 1); 1 + 3 x 2^-8 halfway between 1 + 2^-7 and 1 + 2^-6
        // (ties to even: 1 + 2^-6); just above the half rounds up; -0 and infinities stay; a NaN stays a (quiet) NaN.
        float[] x = [1f, 1f + (1f / 256), 1f + (3f / 256), 1f + (1f / 256) + (1f / 65536), -0f, float.PositiveInfinity, float.NaN, BitConverter.UInt32BitsToSingle(0x7F800001)];
        var h = new byte[x.Length * 2];
        RowQuantizer.Quantize(GgmlType.BF16, x, h);
        var back = new float[x.Length];
        RowDequantizer.Dequantize(GgmlType.BF16, h, back);
        Assert.Equal(1f, back[0]);
        Assert.Equal(1f, back[1]);
        Assert.Equal(1f + (4f / 256), back[2]);
        Assert.Equal(1f + (2f / 256), back[3]);
        Assert.Equal(BitConverter.SingleToInt32Bits(-0f), BitConverter.SingleToInt32Bits(back[4]));
        Assert.Equal(float.PositiveInfinity, back[5]);
        Assert.True(float.IsNaN(back[6]));
        Assert.True(float.IsNaN(back[7]), "a signalling NaN whose payload sits in the low bits must not round to infinity");
        Assert.Equal(0x3F80, RowQuantizer.ToBFloat16(1f));
    }

    [Fact]
    public void WrongDestinationSizeOrTypeIsRejected()
    {
        Assert.Throws<ArgumentException>(() => RowQuantizer.Quantize(GgmlType.Q8_0, new float[32], new byte[33]));
        Assert.Throws<ArgumentException>(() => RowQuantizer.Quantize(GgmlType.Q4_0, new float[31], new byte[18]));
        Assert.Throws<NotSupportedException>(() => RowQuantizer.Quantize(GgmlType.Q4_K, new float[256], new byte[144]));
    }
}
