using KvAdaQuant.Numerics;

namespace KvAdaQuant.Tests.Numerics;

public class HalfBitsTests
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
}
