using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace KvAdaQuant.Numerics;

/// <summary>
/// Dot products of an FP16 weight row with FP32 activations, the halves widened in registers (no row converted into a
/// buffer first). AVX-512 path with four accumulators; <see cref="DotScalar"/> is its twin.
/// </summary>
public static unsafe class HalfDot
{
    private const float ExponentRebias = 5.192296858534828e33f;

    /// <summary>True when the vector path runs on this machine.</summary>
    public static bool VectorPathSupported => Avx512F.IsSupported && Vector512.IsHardwareAccelerated;

    /// <summary>sum_i half(row[i]) · x[i] over <paramref name="n"/> elements.</summary>
    public static float Dot(ushort* row, float* x, int n) => VectorPathSupported ? DotAvx512(row, x, n) : DotScalar(row, x, n);

    /// <summary>Scalar twin of <see cref="Dot"/>: one fused multiply-add per element, in order.</summary>
    public static float DotScalar(ushort* row, float* x, int n)
    {
        float sum = 0;
        for (int i = 0; i < n; i++)
        {
            sum = MathF.FusedMultiplyAdd(HalfBits.ToSingle(row[i]), x[i], sum);
        }

        return sum;
    }

    /// <summary>Sixteen halves to floats, exactly as <see cref="HalfBits.ToSingle"/> converts each (Inf and NaN included).</summary>
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

    private static float DotAvx512(ushort* row, float* x, int n)
    {
        var a0 = Vector512<float>.Zero;
        var a1 = Vector512<float>.Zero;
        var a2 = Vector512<float>.Zero;
        var a3 = Vector512<float>.Zero;
        int i = 0;
        for (; i + 64 <= n; i += 64)
        {
            a0 = Vector512.FusedMultiplyAdd(ToSingle16(row + i), Vector512.Load(x + i), a0);
            a1 = Vector512.FusedMultiplyAdd(ToSingle16(row + i + 16), Vector512.Load(x + i + 16), a1);
            a2 = Vector512.FusedMultiplyAdd(ToSingle16(row + i + 32), Vector512.Load(x + i + 32), a2);
            a3 = Vector512.FusedMultiplyAdd(ToSingle16(row + i + 48), Vector512.Load(x + i + 48), a3);
        }

        for (; i + 16 <= n; i += 16)
        {
            a0 = Vector512.FusedMultiplyAdd(ToSingle16(row + i), Vector512.Load(x + i), a0);
        }

        float sum = Vector512.Sum((a0 + a1) + (a2 + a3));
        for (; i < n; i++)
        {
            sum = MathF.FusedMultiplyAdd(HalfBits.ToSingle(row[i]), x[i], sum);
        }

        return sum;
    }
}
