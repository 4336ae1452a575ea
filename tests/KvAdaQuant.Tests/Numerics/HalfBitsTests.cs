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
}
