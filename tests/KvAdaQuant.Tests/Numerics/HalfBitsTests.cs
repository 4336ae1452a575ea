using KvAdaQuant.Numerics;

namespace KvAdaQuant.Tests.Numerics;

public unsafe class HalfBitsTests
{
    [Fact]
    public void EveryHalfConvertsExactlyAsTheLibraryConversion()
    {
        int checkedCount = 0;
        for (int bits = 0; bits <= ushort.MaxValue; bits++)
        {
            float expected = (float)BitConverter.UInt16BitsToHalf((ushort)bits);
            float actual = HalfBits.ToSingle((ushort)bits);
            Assert.Equal(BitConverter.SingleToInt32Bits(actual), BitConverter.SingleToInt32Bits(HalfBits.ToSingleNoSubnormals((ushort)bits)));
            if (float.IsNaN(expected))
            {
                Assert.True(float.IsNaN(actual), $"0x{bits:X4} should be NaN, got {actual}");
            }
            else
            {
                Assert.True(
                    BitConverter.SingleToInt32Bits(expected) == BitConverter.SingleToInt32Bits(actual),
                    $"0x{bits:X4}: expected {expected:R}, got {actual:R}");
            }

            checkedCount++;
        }

        Assert.Equal(65536, checkedCount);
    }

    [Fact]
    public void EightAtOnceEqualOneAtATimeForEveryHalf()
    {
        if (!System.Runtime.Intrinsics.X86.Avx2.IsSupported)
        {
            return;
        }

        for (int i = 0; i < 65536; i += 8)
        {
            var v = HalfBits.ToSingle8(System.Runtime.Intrinsics.Vector128.Create(
                (ushort)i, (ushort)(i + 1), (ushort)(i + 2), (ushort)(i + 3), (ushort)(i + 4), (ushort)(i + 5), (ushort)(i + 6), (ushort)(i + 7)));
            for (int j = 0; j < 8; j++)
            {
                Assert.Equal(BitConverter.SingleToInt32Bits(HalfBits.ToSingle((ushort)(i + j))), BitConverter.SingleToInt32Bits(v[j]));
            }
        }
    }

    [Fact]
    public void SixteenAtOnceEqualOneAtATimeForEveryHalf_HighBitsIgnored()
    {
        if (!System.Runtime.Intrinsics.X86.Avx512F.IsSupported)
        {
            return;
        }

        var lanes = new int[16];
        for (int i = 0; i < 65536; i += 16)
        {
            for (int j = 0; j < 16; j++)
            {
                // junk above the half, which the conversion must ignore
                lanes[j] = (i + j) | (j << 20);
            }

            var v = HalfBits.ToSingle16NoSubnormals(System.Runtime.Intrinsics.Vector512.Create(lanes));
            for (int j = 0; j < 16; j++)
            {
                Assert.Equal(BitConverter.SingleToInt32Bits(HalfBits.ToSingleNoSubnormals((ushort)(i + j))), BitConverter.SingleToInt32Bits(v[j]));
            }
        }
    }

    [Fact]
    public void FiniteToSingle16_EqualsTheExactConversionForEveryFiniteHalf_AndFlagsTheOthersByMagnitude()
    {
        if (!System.Runtime.Intrinsics.X86.Avx512F.IsSupported)
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
                var v = HalfBits.FiniteToSingle16(p + i);
                for (int k = 0; k < 16; k++)
                {
                    ushort h = bits[i + k];
                    if ((h & 0x7C00) == 0x7C00)
                    {
                        // Inf / NaN: a wrong finite value, 65,536 or more in magnitude (no finite half reaches it)
                        Assert.True(float.IsFinite(v[k]) && Math.Abs(v[k]) >= 65536f, $"half 0x{h:X4}: {v[k]}");
                    }
                    else
                    {
                        Assert.Equal(BitConverter.SingleToInt32Bits(HalfBits.ToSingle(h)), BitConverter.SingleToInt32Bits(v[k]));
                    }
                }
            }
        }
    }

    [Theory]
    [InlineData(0, -1)]
    [InlineData(31, -1)]
    [InlineData(31, 30)]
    [InlineData(5000, -1)]
    [InlineData(5000, 0)]
    [InlineData(5000, 4095)]
    [InlineData(5000, 4096)]
    [InlineData(5000, 4991)]
    [InlineData(5000, 4999)]
    [InlineData(9000, 8200)]
    public void HasNonFinite_VectorEqualsScalarTwin_WhereverTheSpecialHalfSits(int count, int at)
    {
        var rng = new Random(count + at);
        foreach (ushort special in new ushort[] { 0x7C00, 0xFC00, 0x7E00, 0xFFFF })
        {
            // random finite halves (exponent below 31), one special at `at` (none where at is -1)
            var data = Enumerable.Range(0, count).Select(_ => (ushort)(rng.Next(0x10000) & 0xBFFF)).ToArray();
            if (at >= 0)
            {
                data[at] = special;
            }

            fixed (ushort* p = data)
            {
                Assert.Equal(at >= 0, HalfBits.HasNonFiniteScalar(p, count));
                Assert.Equal(at >= 0, HalfBits.HasNonFinite(p, count));
            }
        }
    }
}
