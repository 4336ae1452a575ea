using System.Buffers.Binary;
using KvAdaQuant.Numerics;

namespace KvAdaQuant.Tests.Numerics;

/// <summary>
/// Hand-built ggml blocks with exactly representable scales, checked against an independent per-element
/// description of each layout (which bits of which byte make element e), not against the production loops.
/// </summary>
public class RowDequantizerTests
{
    private static byte[] RandomBytes(int n, int seed)
    {
        var b = new byte[n];
        new Random(seed).NextBytes(b);
        return b;
    }

    private static float[] Run(GgmlType type, byte[] block, int elements)
    {
        var o = new float[elements];
        RowDequantizer.Dequantize(type, block, o);
        return o;
    }

    [Fact]
    public void Q4_0LowNibblesFirstThenHighNibblesMinusEight()
    {
        var block = new byte[18];
        BinaryPrimitives.WriteHalfLittleEndian(block, (Half)0.5f);
        for (int j = 0; j < 16; j++)
        {
            block[2 + j] = (byte)(j | ((15 - j) << 4));
        }

        var o = Run(GgmlType.Q4_0, block, 32);
        for (int j = 0; j < 16; j++)
        {
            Assert.Equal((j - 8) * 0.5f, o[j]);
            Assert.Equal((15 - j - 8) * 0.5f, o[j + 16]);
        }
    }

    [Fact]
    public void Q4_1AddsTheMinimum()
    {
        var block = new byte[20];
        BinaryPrimitives.WriteHalfLittleEndian(block, (Half)0.25f);
        BinaryPrimitives.WriteHalfLittleEndian(block.AsSpan(2), (Half)(-1.5f));
        for (int j = 0; j < 16; j++)
        {
            block[4 + j] = (byte)(j | ((15 - j) << 4));
        }

        var o = Run(GgmlType.Q4_1, block, 32);
        for (int j = 0; j < 16; j++)
        {
            Assert.Equal((j * 0.25f) - 1.5f, o[j]);
            Assert.Equal(((15 - j) * 0.25f) - 1.5f, o[j + 16]);
        }
    }

    [Theory]
    [InlineData(GgmlType.Q5_0)]
    [InlineData(GgmlType.Q5_1)]
    public void Q5FifthBitOfElementIIsBitIOfQh(GgmlType type)
    {
        bool hasMin = type == GgmlType.Q5_1;
        var block = RandomBytes(hasMin ? 24 : 22, 5);
        BinaryPrimitives.WriteHalfLittleEndian(block, (Half)2f);
        if (hasMin)
        {
            BinaryPrimitives.WriteHalfLittleEndian(block.AsSpan(2), (Half)(-3f));
        }

        int qhAt = hasMin ? 4 : 2;
        uint qh = BinaryPrimitives.ReadUInt32LittleEndian(block.AsSpan(qhAt));
        var qs = block.AsSpan(qhAt + 4, 16).ToArray();
        var o = Run(type, block, 32);
        for (int e = 0; e < 32; e++)
        {
            int low = e < 16 ? qs[e] & 0xF : qs[e - 16] >> 4;
            int q = low + (int)(16 * ((qh >> e) & 1));
            float expected = hasMin ? (q * 2f) - 3f : (q - 16) * 2f;
            Assert.Equal(expected, o[e]);
        }
    }

    [Fact]
    public void Q8_0IsScaleTimesSignedByte()
    {
        var block = RandomBytes(34, 8);
        BinaryPrimitives.WriteHalfLittleEndian(block, (Half)0.125f);
        var o = Run(GgmlType.Q8_0, block, 32);
        for (int e = 0; e < 32; e++)
        {
            Assert.Equal((sbyte)block[2 + e] * 0.125f, o[e]);
        }
    }

    /// <summary>Packs eight 6-bit (scale, min) pairs as ggml's Q4_K/Q5_K quantizers do.</summary>
    private static byte[] PackScales(int[] sc, int[] m)
    {
        var s = new byte[12];
        for (int j = 0; j < 4; j++)
        {
            s[j] = (byte)(sc[j] | ((sc[j + 4] >> 4) << 6));
            s[j + 4] = (byte)(m[j] | ((m[j + 4] >> 4) << 6));
            s[j + 8] = (byte)((sc[j + 4] & 0xF) | ((m[j + 4] & 0xF) << 4));
        }

        return s;
    }

    [Fact]
    public void ScaleMinK4UnpacksAllEightSixBitPairs()
    {
        var rng = new Random(3);
        for (int trial = 0; trial < 100; trial++)
        {
            var sc = Enumerable.Range(0, 8).Select(_ => rng.Next(64)).ToArray();
            var m = Enumerable.Range(0, 8).Select(_ => rng.Next(64)).ToArray();
            var packed = PackScales(sc, m);
            for (int j = 0; j < 8; j++)
            {
                Assert.Equal((sc[j], m[j]), RowDequantizer.ScaleMinK4(j, packed));
            }
        }
    }

    [Theory]
    [InlineData(GgmlType.Q4_K)]
    [InlineData(GgmlType.Q5_K)]
    public void KQuantsWithScalesAndMins(GgmlType type)
    {
        bool five = type == GgmlType.Q5_K;
        var rng = new Random(11);
        var sc = Enumerable.Range(0, 8).Select(_ => rng.Next(64)).ToArray();
        var m = Enumerable.Range(0, 8).Select(_ => rng.Next(64)).ToArray();
        sc[7] = 63;
        m[6] = 63;
        var block = RandomBytes(five ? 176 : 144, 12);
        BinaryPrimitives.WriteHalfLittleEndian(block, (Half)0.5f);
        BinaryPrimitives.WriteHalfLittleEndian(block.AsSpan(2), (Half)0.25f);
        PackScales(sc, m).CopyTo(block, 4);
        var qh = five ? block.AsSpan(16, 32).ToArray() : [];
        var qs = block.AsSpan(five ? 48 : 16, 128).ToArray();
        var o = Run(type, block, 256);
        for (int e = 0; e < 256; e++)
        {
            int sub = e / 32, group = e / 64, l = e % 32;
            int q = sub % 2 == 0 ? qs[(group * 32) + l] & 0xF : qs[(group * 32) + l] >> 4;
            if (five)
            {
                q += 16 * ((qh[l] >> sub) & 1);
            }

            Assert.Equal((0.5f * sc[sub] * q) - (0.25f * m[sub]), o[e]);
        }
    }

    [Fact]
    public void Q6_KSixteenElementsPerSignedScale()
    {
        var block = RandomBytes(210, 6);
        BinaryPrimitives.WriteHalfLittleEndian(block.AsSpan(208), (Half)0.5f);
        var ql = block.AsSpan(0, 128).ToArray();
        var qh = block.AsSpan(128, 64).ToArray();
        var sc = block.AsSpan(192, 16).ToArray().Select(b => (sbyte)b).ToArray();
        var o = Run(GgmlType.Q6_K, block, 256);
        for (int e = 0; e < 256; e++)
        {
            int half = e / 128, quarter = e % 128 / 32, l = e % 32;
            int lowByte = ql[(half * 64) + ((quarter % 2) * 32) + l];
            int low = quarter < 2 ? lowByte & 0xF : lowByte >> 4;
            int high = (qh[(half * 32) + l] >> (2 * quarter)) & 3;
            int q = (low | (high << 4)) - 32;
            Assert.Equal(0.5f * sc[e / 16] * q, o[e]);
        }
    }

    [Fact]
    public void MultipleBlocksAreIndependent()
    {
        var one = RandomBytes(144, 1);
        BinaryPrimitives.WriteHalfLittleEndian(one, (Half)0.5f);
        BinaryPrimitives.WriteHalfLittleEndian(one.AsSpan(2), (Half)0.25f);
        var two = one.Concat(one).ToArray();
        BinaryPrimitives.WriteHalfLittleEndian(two.AsSpan(144), (Half)1f);
        var a = Run(GgmlType.Q4_K, one, 256);
        var b = Run(GgmlType.Q4_K, two, 512);
        Assert.Equal(a, b[..256]);
        Assert.NotEqual(a, b[256..]);
    }

    [Fact]
    public void Q2_KFourBitScaleAndMinPerSixteenTwoBitCodesFourPerByte()
    {
        var block = RandomBytes(84, 21);
        BinaryPrimitives.WriteHalfLittleEndian(block.AsSpan(80), (Half)0.5f);
        BinaryPrimitives.WriteHalfLittleEndian(block.AsSpan(82), (Half)0.25f);
        var o = Run(GgmlType.Q2_K, block, 256);

        // ggml's loop: per half of 128, four passes over the same 32 bytes taking 2 bits at a time, two sub-blocks per pass.
        var expected = new float[256];
        int y = 0, sub = 0;
        for (int half = 0; half < 2; half++)
        {
            for (int shift = 0; shift < 8; shift += 2)
            {
                for (int part = 0; part < 2; part++, sub++)
                {
                    int sc = block[sub];
                    for (int l = 0; l < 16; l++)
                    {
                        int q = (block[16 + (32 * half) + (16 * part) + l] >> shift) & 3;
                        expected[y++] = (0.5f * (sc & 0xF) * q) - (0.25f * (sc >> 4));
                    }
                }
            }
        }

        Assert.Equal(expected, o);
    }

    /// <summary>Packs sixteen 6-bit Q3_K scales (0..63, value + 32) as ggml's quantize_row_q3_K does.</summary>
    private static byte[] PackQ3_KScales(int[] ls)
    {
        var s = new byte[12];
        for (int j = 0; j < 16; j++)
        {
            int l = ls[j];
            if (j < 8)
            {
                s[j] = (byte)(l & 0xF);
            }
            else
            {
                s[j - 8] |= (byte)((l & 0xF) << 4);
            }

            s[(j % 4) + 8] |= (byte)((l >> 4) << (2 * (j / 4)));
        }

        return s;
    }

    [Fact]
    public void ScaleQ3_KUnpacksAllSixteenSixBitScales()
    {
        var rng = new Random(4);
        for (int trial = 0; trial < 100; trial++)
        {
            var ls = Enumerable.Range(0, 16).Select(_ => rng.Next(64)).ToArray();
            var packed = PackQ3_KScales(ls);
            for (int j = 0; j < 16; j++)
            {
                Assert.Equal(ls[j] - 32, RowDequantizer.ScaleQ3_K(j, packed));
            }
        }
    }

    [Fact]
    public void Q3_KTwoLowBitsAndAnInvertedHighBitTimesSignedSixBitScales()
    {
        var rng = new Random(22);
        var ls = Enumerable.Range(0, 16).Select(_ => rng.Next(64)).ToArray();
        ls[3] = 0;
        ls[12] = 63;
        var block = RandomBytes(110, 23);
        PackQ3_KScales(ls).CopyTo(block, 96);
        BinaryPrimitives.WriteHalfLittleEndian(block.AsSpan(108), (Half)0.5f);
        var o = Run(GgmlType.Q3_K, block, 256);

        // ggml's loop: the high-bit mask walks one bit per pass of 32 elements over the same 32 hmask bytes.
        var expected = new float[256];
        int y = 0, sub = 0, bit = 0;
        for (int half = 0; half < 2; half++)
        {
            for (int shift = 0; shift < 8; shift += 2, bit++)
            {
                for (int part = 0; part < 2; part++, sub++)
                {
                    for (int l = 0; l < 16; l++)
                    {
                        int low = (block[32 + (32 * half) + (16 * part) + l] >> shift) & 3;
                        bool high = (block[(16 * part) + l] & (1 << bit)) != 0;
                        expected[y++] = 0.5f * (ls[sub] - 32) * (low - (high ? 0 : 4));
                    }
                }
            }
        }

        Assert.Equal(expected, o);
    }

    private static readonly int[] Iq4Levels = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113];

    [Fact]
    public void Iq4_NLLowNibblesThenHighNibblesThroughTheNonUniformLevels()
    {
        var block = RandomBytes(18, 24);
        BinaryPrimitives.WriteHalfLittleEndian(block, (Half)0.125f);
        var o = Run(GgmlType.IQ4_NL, block, 32);
        for (int e = 0; e < 32; e++)
        {
            int code = e < 16 ? block[2 + e] & 0xF : block[2 + e - 16] >> 4;
            Assert.Equal(0.125f * Iq4Levels[code], o[e]);
        }
    }

    [Fact]
    public void Iq4_XSSixBitScalePerThirtyTwoSplitOverTwoFields()
    {
        var rng = new Random(25);
        var ls = Enumerable.Range(0, 8).Select(_ => rng.Next(64)).ToArray();
        ls[2] = 0;
        ls[5] = 63;
        var block = RandomBytes(136, 26);
        BinaryPrimitives.WriteHalfLittleEndian(block, (Half)0.25f);
        int h = 0;
        for (int ib = 0; ib < 8; ib++)
        {
            h |= (ls[ib] >> 4) << (2 * ib);
        }

        BinaryPrimitives.WriteUInt16LittleEndian(block.AsSpan(2), (ushort)h);
        for (int i = 0; i < 4; i++)
        {
            block[4 + i] = (byte)((ls[2 * i] & 0xF) | ((ls[(2 * i) + 1] & 0xF) << 4));
        }

        var o = Run(GgmlType.IQ4_XS, block, 256);
        for (int e = 0; e < 256; e++)
        {
            int ib = e / 32, j = e % 32;
            int code = j < 16 ? block[8 + (16 * ib) + j] & 0xF : block[8 + (16 * ib) + j - 16] >> 4;
            Assert.Equal(0.25f * (ls[ib] - 32) * Iq4Levels[code], o[e]);
        }
    }

    [Theory]
    [InlineData(GgmlType.Q2_K, 84)]
    [InlineData(GgmlType.Q3_K, 110)]
    [InlineData(GgmlType.IQ4_XS, 136)]
    public void LowBitSuperBlocksAreIndependentAndTheirGeometryIsGgmls(GgmlType type, int bytes)
    {
        Assert.Equal((256, bytes), GgmlTypeInfo.Geometry(type));
        Assert.True(RowDequantizer.Supports(type));
        var one = RandomBytes(bytes, 27);
        var two = one.Concat(RandomBytes(bytes, 28)).ToArray();
        var a = Run(type, one, 256);
        var b = Run(type, two, 512);
        Assert.Equal(a, b[..256]);
        Assert.Equal((32, 18), GgmlTypeInfo.Geometry(GgmlType.IQ4_NL));
    }
}
