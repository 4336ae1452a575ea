using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace KvAdaQuant.Numerics;

/// <summary>
/// Dot products of an FP16 weight row with FP32 activations, the halves widened in registers (no row converted into a
/// buffer first). AVX-512 path with four accumulators; <see cref="DotScalar"/> is its twin. With <c>finiteHalves</c> the
/// caller states that the row holds no infinite or NaN half (<see cref="WeightMatrix.HalvesAllFinite"/>), and the halves
/// are widened in four operations instead of ten (<see cref="HalfBits.FiniteToSingle16"/>); the values, and so the
/// results, are the same bits.
/// </summary>
public static unsafe class HalfDot
{
    /// <summary>True when the vector path runs on this machine.</summary>
    public static bool VectorPathSupported => Avx512F.IsSupported && Vector512.IsHardwareAccelerated;

    /// <summary>sum_i half(row[i]) · x[i] over <paramref name="n"/> elements.</summary>
    public static float Dot(ushort* row, float* x, int n) => Dot(row, x, n, finiteHalves: false);

    /// <summary><see cref="Dot(ushort*, float*, int)"/>, the halves widened by the finite-only conversion where <paramref name="finiteHalves"/>.</summary>
    public static float Dot(ushort* row, float* x, int n, bool finiteHalves) =>
        !VectorPathSupported ? DotScalar(row, x, n) : finiteHalves ? DotAvx512<Finite>(row, x, n) : DotAvx512<Exact>(row, x, n);

    /// <summary>
    /// <see cref="Dot"/> of one row with four activation vectors (x + k * <paramref name="xStride"/>, k = 0..3) at once,
    /// each half widened once for the four; every result has exactly the arithmetic of the single <see cref="Dot"/>.
    /// </summary>
    public static void Dot4(ushort* row, float* x, long xStride, int n, float* output, long outStride) => Dot4(row, x, xStride, n, output, outStride, finiteHalves: false);

    /// <summary><see cref="Dot4(ushort*, float*, long, int, float*, long)"/>, the halves widened by the finite-only conversion where <paramref name="finiteHalves"/>.</summary>
    public static void Dot4(ushort* row, float* x, long xStride, int n, float* output, long outStride, bool finiteHalves)
    {
        if (finiteHalves)
        {
            Dot4<Finite>(row, x, xStride, n, output, outStride);
        }
        else
        {
            Dot4<Exact>(row, x, xStride, n, output, outStride);
        }
    }

    private static void Dot4<T>(ushort* row, float* x, long xStride, int n, float* output, long outStride)
        where T : struct, IWidening
    {
        if (!VectorPathSupported)
        {
            for (int k = 0; k < 4; k++)
            {
                output[k * outStride] = DotScalar(row, x + (k * xStride), n);
            }

            return;
        }

        float* x0 = x, x1 = x + xStride, x2 = x + (2 * xStride), x3 = x + (3 * xStride);
        Vector512<float> a00 = default, a01 = default, a02 = default, a03 = default;
        Vector512<float> a10 = default, a11 = default, a12 = default, a13 = default;
        Vector512<float> a20 = default, a21 = default, a22 = default, a23 = default;
        Vector512<float> a30 = default, a31 = default, a32 = default, a33 = default;
        int i = 0;
        for (; i + 64 <= n; i += 64)
        {
            var w0 = T.Widen(row + i);
            var w1 = T.Widen(row + i + 16);
            var w2 = T.Widen(row + i + 32);
            var w3 = T.Widen(row + i + 48);
            a00 = Vector512.FusedMultiplyAdd(w0, Vector512.Load(x0 + i), a00);
            a01 = Vector512.FusedMultiplyAdd(w1, Vector512.Load(x0 + i + 16), a01);
            a02 = Vector512.FusedMultiplyAdd(w2, Vector512.Load(x0 + i + 32), a02);
            a03 = Vector512.FusedMultiplyAdd(w3, Vector512.Load(x0 + i + 48), a03);
            a10 = Vector512.FusedMultiplyAdd(w0, Vector512.Load(x1 + i), a10);
            a11 = Vector512.FusedMultiplyAdd(w1, Vector512.Load(x1 + i + 16), a11);
            a12 = Vector512.FusedMultiplyAdd(w2, Vector512.Load(x1 + i + 32), a12);
            a13 = Vector512.FusedMultiplyAdd(w3, Vector512.Load(x1 + i + 48), a13);
            a20 = Vector512.FusedMultiplyAdd(w0, Vector512.Load(x2 + i), a20);
            a21 = Vector512.FusedMultiplyAdd(w1, Vector512.Load(x2 + i + 16), a21);
            a22 = Vector512.FusedMultiplyAdd(w2, Vector512.Load(x2 + i + 32), a22);
            a23 = Vector512.FusedMultiplyAdd(w3, Vector512.Load(x2 + i + 48), a23);
            a30 = Vector512.FusedMultiplyAdd(w0, Vector512.Load(x3 + i), a30);
            a31 = Vector512.FusedMultiplyAdd(w1, Vector512.Load(x3 + i + 16), a31);
            a32 = Vector512.FusedMultiplyAdd(w2, Vector512.Load(x3 + i + 32), a32);
            a33 = Vector512.FusedMultiplyAdd(w3, Vector512.Load(x3 + i + 48), a33);
        }

        for (; i + 16 <= n; i += 16)
        {
            var w0 = T.Widen(row + i);
            a00 = Vector512.FusedMultiplyAdd(w0, Vector512.Load(x0 + i), a00);
            a10 = Vector512.FusedMultiplyAdd(w0, Vector512.Load(x1 + i), a10);
            a20 = Vector512.FusedMultiplyAdd(w0, Vector512.Load(x2 + i), a20);
            a30 = Vector512.FusedMultiplyAdd(w0, Vector512.Load(x3 + i), a30);
        }

        output[0] = Finish(a00, a01, a02, a03, row, x0, i, n);
        output[outStride] = Finish(a10, a11, a12, a13, row, x1, i, n);
        output[2 * outStride] = Finish(a20, a21, a22, a23, row, x2, i, n);
        output[3 * outStride] = Finish(a30, a31, a32, a33, row, x3, i, n);
    }

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

    private static float DotAvx512<T>(ushort* row, float* x, int n)
        where T : struct, IWidening
    {
        var a0 = Vector512<float>.Zero;
        var a1 = Vector512<float>.Zero;
        var a2 = Vector512<float>.Zero;
        var a3 = Vector512<float>.Zero;
        int i = 0;
        for (; i + 64 <= n; i += 64)
        {
            a0 = Vector512.FusedMultiplyAdd(T.Widen(row + i), Vector512.Load(x + i), a0);
            a1 = Vector512.FusedMultiplyAdd(T.Widen(row + i + 16), Vector512.Load(x + i + 16), a1);
            a2 = Vector512.FusedMultiplyAdd(T.Widen(row + i + 32), Vector512.Load(x + i + 32), a2);
            a3 = Vector512.FusedMultiplyAdd(T.Widen(row + i + 48), Vector512.Load(x + i + 48), a3);
        }

        for (; i + 16 <= n; i += 16)
        {
            a0 = Vector512.FusedMultiplyAdd(T.Widen(row + i), Vector512.Load(x + i), a0);
        }

        return Finish(a0, a1, a2, a3, row, x, i, n);
    }

    // The four accumulators summed in one fixed order, then the scalar tail from element i.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Finish(Vector512<float> a0, Vector512<float> a1, Vector512<float> a2, Vector512<float> a3, ushort* row, float* x, int i, int n)
    {
        float sum = Vector512.Sum((a0 + a1) + (a2 + a3));
        for (; i < n; i++)
        {
            sum = MathF.FusedMultiplyAdd(HalfBits.ToSingle(row[i]), x[i], sum);
        }

        return sum;
    }

    // How the vector paths widen 16 halves: exactly for every half, or in fewer operations for finite ones.
    private interface IWidening
    {
        static abstract Vector512<float> Widen(ushort* src);
    }

    private struct Exact : IWidening
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector512<float> Widen(ushort* src) => HalfBits.ToSingle16(src);
    }

    private struct Finite : IWidening
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector512<float> Widen(ushort* src) => HalfBits.FiniteToSingle16(src);
    }
}
