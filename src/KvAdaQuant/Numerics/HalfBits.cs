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

        // Finite halves: exponent and mantissa shifted into place, then scaled by 2^112 (exact); subnormal halves land
        // on float subnormals, and the same exact scaling normalizes them. Infinity and NaN (all-ones exponent) are
        // selected without a branch or call, so hot loops keep their accumulators in registers.
        uint shifted = magnitude << 13;
        uint finite = BitConverter.SingleToUInt32Bits(BitConverter.UInt32BitsToSingle(shifted) * ExponentRebias);
        uint special = shifted | 0x7F800000u;
        uint result = magnitude >= 0x7C00u ? special : finite;
        return BitConverter.UInt32BitsToSingle(result | ((uint)(bits & 0x8000) << 16));
    }
}
