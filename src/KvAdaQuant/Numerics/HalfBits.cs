using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace KvAdaQuant.Numerics;

/// <summary>
/// IEEE binary16 to binary32 conversion by bit arithmetic, for the per-block scales of quantized weights, where the
/// general <c>(float)Half</c> conversion costs more than the block's integer dot product. Exact for every input.
/// </summary>
public static unsafe class HalfBits
{
    /// <summary>2^112: rebiases a half's exponent field (bias 15) placed in a float's (bias 127).</summary>
    internal const float ExponentRebias = 5.192296858534828e33f;

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

    /// <summary>Sixteen halves to floats, exactly as <see cref="ToSingle(ushort)"/> converts each, Inf and NaN included (AVX-512F).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> ToSingle16(ushort* src)
    {
        var h = Avx512F.ConvertToVector512Int32(Vector256.Load(src));
        var magnitude = h & Vector512.Create(0x7FFF);
        var shifted = magnitude << 13;
        var finite = shifted.AsSingle() * Vector512.Create(ExponentRebias);
        var special = (shifted | Vector512.Create(0x7F800000)).AsSingle();
        var value = Vector512.ConditionalSelect(Vector512.GreaterThanOrEqual(magnitude, Vector512.Create(0x7C00)).AsSingle(), special, finite);
        return (value.AsInt32() | ((h & Vector512.Create(0x8000)) << 16)).AsSingle();
    }
}
