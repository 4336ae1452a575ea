using System.Runtime.CompilerServices;

namespace KvAdaQuant.Numerics;

/// <summary>
/// IEEE binary16 to binary32 conversion by bit arithmetic, for the per-block scales of quantized weights, where the
/// general <c>(float)Half</c> conversion costs more than the block's integer dot product. Exact for every input.
/// </summary>
public static class HalfBits
{
    /// <summary>2^112: rebiases a half's exponent field (bias 15) placed in a float's (bias 127).</summary>
    private const float ExponentRebias = 5.192296858534828e33f;

    /// <summary>The float value of the half whose bits are <paramref name="bits"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float ToSingle(ushort bits)
    {
        uint magnitude = bits & 0x7FFFu;
        if (magnitude >= 0x7C00u)
        {
            // Infinity and NaN keep an all-ones exponent.
            return (float)BitConverter.UInt16BitsToHalf(bits);
        }

        // Normal halves: exponent and mantissa shifted into place, then scaled by 2^112 (exact). Subnormal halves
        // land on float subnormals, and the same exact scaling normalizes them.
        float f = BitConverter.UInt32BitsToSingle(magnitude << 13) * ExponentRebias;
        return BitConverter.UInt32BitsToSingle(BitConverter.SingleToUInt32Bits(f) | ((uint)(bits & 0x8000) << 16));
    }
}
