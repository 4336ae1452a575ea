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
    /// <summary>2^112: rebiases a half's exponent field (bias 15) placed in a float's (bias 127), as a multiplier.</summary>
    internal const float ExponentRebias = 5.192296858534828e33f;

    /// <summary>2^-24: the value of a subnormal half's mantissa unit.</summary>
    internal const float SubnormalUnit = 5.9604645e-8f;

    /// <summary>(127 - 15) &lt;&lt; 23: rebiases a half's exponent field (bias 15), placed in a float's, to the float bias (127).</summary>
    internal const uint ExponentRebiasBits = 112u << 23;

    /// <summary>
    /// The float value of the half whose bits are <paramref name="bits"/>: the bits shifted into place and scaled by 2^112
    /// (exact). A subnormal half makes that a product of a subnormal float, which some x86 cores (this one) take through a
    /// microcode assist: for scales that are often subnormal use <see cref="ToSingleNoSubnormals"/> (same bits).
    /// </summary>
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

    /// <summary>
    /// <see cref="ToSingle"/>'s value with no float arithmetic on a subnormal operand: normal halves rebiased by an integer
    /// add, subnormal ones (and zero) as the mantissa times 2^-24, a product of normal floats. A few more operations than
    /// <see cref="ToSingle"/> (which the Q8_0 decode kernels keep: there it measured 10 % faster), and no microcode assist
    /// where scales are subnormal halves, as IQ4_XS super-block scales of small weights are (d ≈ max |w| / 4,000).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float ToSingleNoSubnormals(ushort bits)
    {
        uint magnitude = bits & 0x7FFFu;
        uint shifted = magnitude << 13;
        uint normal = shifted + ExponentRebiasBits;
        uint subnormal = BitConverter.SingleToUInt32Bits((int)magnitude * SubnormalUnit);
        uint special = shifted | 0x7F800000u;
        uint result = magnitude >= 0x7C00u ? special : magnitude >= 0x0400u ? normal : subnormal;
        return BitConverter.UInt32BitsToSingle(result | ((uint)(bits & 0x8000) << 16));
    }

    /// <summary>
    /// Eight halves to floats exactly as <see cref="ToSingleNoSubnormals(ushort)"/> converts each (AVX2), with its arithmetic: normal
    /// halves rebiased by an integer add, subnormal ones as mantissa x 2^-24, so no lane multiplies a subnormal float.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> ToSingle8(Vector128<ushort> bits) => ToSingle8(Avx2.ConvertToVector256Int32(bits));

    /// <summary>As <see cref="ToSingle8(Vector128{ushort})"/> for the halves in the low 16 bits of eight int lanes (the high bits are ignored).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> ToSingle8(Vector256<int> h)
    {
        var magnitude = h & Vector256.Create(0x7FFF);
        var shifted = magnitude << 13;
        var normal = shifted + Vector256.Create((int)ExponentRebiasBits);
        var subnormal = (Avx.ConvertToVector256Single(magnitude) * Vector256.Create(SubnormalUnit)).AsInt32();
        var special = shifted | Vector256.Create(0x7F800000);
        var finite = Vector256.ConditionalSelect(Vector256.GreaterThan(magnitude, Vector256.Create(0x03FF)), normal, subnormal);
        var value = Vector256.ConditionalSelect(Vector256.GreaterThan(magnitude, Vector256.Create(0x7BFF)), special, finite);
        return (value | ((h & Vector256.Create(0x8000)) << 16)).AsSingle();
    }

    /// <summary>
    /// Sixteen halves in the low 16 bits of int lanes (the high bits are ignored) to floats exactly as
    /// <see cref="ToSingleNoSubnormals(ushort)"/> converts each (AVX-512F): <see cref="ToSingle8(Vector256{int})"/> at 512 bits.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> ToSingle16NoSubnormals(Vector512<int> h)
    {
        var magnitude = h & Vector512.Create(0x7FFF);
        var shifted = magnitude << 13;
        var normal = shifted + Vector512.Create((int)ExponentRebiasBits);
        var subnormal = (Avx512F.ConvertToVector512Single(magnitude) * Vector512.Create(SubnormalUnit)).AsInt32();
        var special = shifted | Vector512.Create(0x7F800000);
        var finite = Vector512.ConditionalSelect(Vector512.GreaterThan(magnitude, Vector512.Create(0x03FF)), normal, subnormal);
        var value = Vector512.ConditionalSelect(Vector512.GreaterThan(magnitude, Vector512.Create(0x7BFF)), special, finite);
        return (value | ((h & Vector512.Create(0x8000)) << 16)).AsSingle();
    }

    /// <summary>
    /// Sixteen finite halves to floats, exactly as <see cref="ToSingle(ushort)"/> converts them (AVX-512F), in four operations:
    /// sign-extended, shifted so that the exponent and mantissa sit under a float's and the sign on top, masked, and scaled by
    /// 2^112. An infinite or NaN half gives a wrong finite value (65,536 or more in magnitude): callers use this only on data
    /// known to hold none (<see cref="HasNonFinite"/>).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> FiniteToSingle16(ushort* src)
    {
        var h = Avx512F.ConvertToVector512Int32(Vector256.Load((short*)src));
        return ((h << 13) & Vector512.Create(unchecked((int)0x8FFFFFFF))).AsSingle() * Vector512.Create(ExponentRebias);
    }

    /// <summary>
    /// Whether any of the <paramref name="count"/> halves at <paramref name="src"/> is infinite or NaN (all five exponent bits
    /// set): 32 halves a step where AVX-512 BW runs, else <see cref="HasNonFiniteScalar"/>, its twin.
    /// </summary>
    public static bool HasNonFinite(ushort* src, long count)
    {
        if (!Avx512BW.IsSupported || !Vector512.IsHardwareAccelerated)
        {
            return HasNonFiniteScalar(src, count);
        }

        var exponent = Vector512.Create((ushort)0x7C00);
        long i = 0;
        while (i + 32 <= count)
        {
            // a block of up to 4,096 halves with no branch inside, then one test
            long end = Math.Min(count & ~31L, i + 4096);
            var found = Vector512<ushort>.Zero;
            for (; i < end; i += 32)
            {
                var h = Vector512.Load(src + i) & exponent;
                found |= Vector512.Equals(h, exponent);
            }

            if (found != Vector512<ushort>.Zero)
            {
                return true;
            }
        }

        return HasNonFiniteScalar(src + i, count - i);
    }

    /// <summary>Scalar twin of <see cref="HasNonFinite"/>.</summary>
    public static bool HasNonFiniteScalar(ushort* src, long count)
    {
        for (long i = 0; i < count; i++)
        {
            if ((src[i] & 0x7C00) == 0x7C00)
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>
    /// Sixteen halves to floats, exactly as <see cref="ToSingle(ushort)"/> converts each, Inf and NaN included (AVX-512F). This
    /// one keeps the shift-and-multiply by 2^112 (three operations a vector: F16 weight rows measured 1.2-1.4x slower with
    /// <see cref="ToSingleNoSubnormals"/>'s select between an integer rebias and a converted mantissa), so a subnormal half
    /// multiplies a subnormal float.
    /// </summary>
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
