using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace KvAdaQuant.Numerics;

/// <summary>
/// Dot products of FP16 weight rows with FP32 activations, the halves widened in registers (no row converted into a buffer
/// first). Every result has one arithmetic whatever the batch: the products of elements i = 16j + l fused-added into lane
/// l of one 16-lane accumulator in order of j, the lanes summed as <see cref="Reduce"/> does (upper and lower halves, twice,
/// then pairs), then the elements past the last multiple of 16 fused-added one by one. So a row alone, the same row in a
/// tile of four rows by four tokens (<see cref="Tile"/>, each widened half used for four tokens and each activation load
/// for four rows), and the scalar twin (<see cref="DotScalar"/>) give the same bits. With <c>finiteHalves</c> the caller
/// states that the rows hold no infinite or NaN half (<see cref="WeightMatrix.HalvesAllFinite"/>), and the halves are
/// widened in four operations instead of ten (<see cref="HalfBits.FiniteToSingle16"/>): the same values. BF16 rows (the
/// upper halves of floats) take the same tiles and order (<see cref="TileBFloat16"/>, <see cref="DotBFloat16Scalar"/>), each
/// value widened by a 16-bit shift.
/// </summary>
public static unsafe class HalfDot
{
    /// <summary>True when the vector path runs on this machine.</summary>
    public static bool VectorPathSupported => Avx512F.IsSupported && Vector512.IsHardwareAccelerated;

    /// <summary>sum_i half(row[i]) · x[i] over <paramref name="n"/> elements.</summary>
    public static float Dot(ushort* row, float* x, int n) => Dot(row, x, n, finiteHalves: false);

    /// <summary><see cref="Dot(ushort*, float*, int)"/>, the halves widened by the finite-only conversion where <paramref name="finiteHalves"/>.</summary>
    public static float Dot(ushort* row, float* x, int n, bool finiteHalves)
    {
        if (!VectorPathSupported)
        {
            return DotScalar(row, x, n);
        }

        return finiteHalves ? One<Finite>(row, x, n) : One<Exact>(row, x, n);
    }

    /// <summary>
    /// output[t x <paramref name="tokenOutStride"/> + k x <paramref name="rowOutStride"/>] = <see cref="Dot(ushort*, float*, int, bool)"/>
    /// of row k (at <paramref name="row"/> + k x <paramref name="rowStride"/> halves, k &lt; <paramref name="rows"/>) and
    /// activation vector t (at <paramref name="x"/> + t x <paramref name="xStride"/>, t &lt; <paramref name="tokens"/>), each
    /// the single dot's bits. Four rows are read together (as four tokens are): each widened half serves four tokens and
    /// each activation load four rows.
    /// </summary>
    public static void Tile(ushort* row, long rowStride, int rows, float* x, long xStride, int tokens, int n, float* output, long rowOutStride, long tokenOutStride, bool finiteHalves)
    {
        if (finiteHalves)
        {
            Checked<Finite>(row, rowStride, rows, x, xStride, tokens, n, output, rowOutStride, tokenOutStride);
        }
        else
        {
            Checked<Exact>(row, rowStride, rows, x, xStride, tokens, n, output, rowOutStride, tokenOutStride);
        }
    }

    /// <summary>
    /// <see cref="Tile"/> for BF16 rows: every result has the arithmetic of <see cref="DotBFloat16Scalar"/> (exact for every
    /// value, Inf and NaN included: a bfloat16 is the upper half of a float).
    /// </summary>
    public static void TileBFloat16(ushort* row, long rowStride, int rows, float* x, long xStride, int tokens, int n, float* output, long rowOutStride, long tokenOutStride)
        => Checked<BFloat>(row, rowStride, rows, x, xStride, tokens, n, output, rowOutStride, tokenOutStride);

    /// <summary>
    /// <see cref="Dot(ushort*, float*, int)"/> of one row with four activation vectors (x + k * <paramref name="xStride"/>,
    /// k = 0..3) at once; every result has exactly the arithmetic of the single <see cref="Dot(ushort*, float*, int)"/>.
    /// </summary>
    public static void Dot4(ushort* row, float* x, long xStride, int n, float* output, long outStride) =>
        Tile(row, 0, 1, x, xStride, 4, n, output, 0, outStride, finiteHalves: false);

    /// <summary>Scalar twin of <see cref="Dot(ushort*, float*, int)"/>: the same 16 lanes, lane sum and tail, one element at a time.</summary>
    public static float DotScalar(ushort* row, float* x, int n) => DotScalar<Exact>(row, x, n);

    /// <summary>Scalar twin of <see cref="TileBFloat16"/> for one row and token: <see cref="DotScalar"/> with BF16 values.</summary>
    public static float DotBFloat16Scalar(ushort* row, float* x, int n) => DotScalar<BFloat>(row, x, n);

    private static float DotScalar<T>(ushort* row, float* x, int n)
        where T : struct, IWidening
    {
        Span<float> lanes = stackalloc float[16];
        int body = n & ~15;
        for (int i = 0; i < body; i++)
        {
            lanes[i & 15] = MathF.FusedMultiplyAdd(T.One(row[i]), x[i], lanes[i & 15]);
        }

        Span<float> t8 = stackalloc float[8];
        for (int l = 0; l < 8; l++)
        {
            t8[l] = lanes[l] + lanes[l + 8];
        }

        float t0 = t8[0] + t8[4], t1 = t8[1] + t8[5], t2 = t8[2] + t8[6], t3 = t8[3] + t8[7];
        float sum = (t0 + t1) + (t2 + t3);
        for (int i = body; i < n; i++)
        {
            sum = MathF.FusedMultiplyAdd(T.One(row[i]), x[i], sum);
        }

        return sum;
    }

    // The tile's counts checked, then the vector path, or the scalar twin row by row and token by token.
    private static void Checked<T>(ushort* row, long rowStride, int rows, float* x, long xStride, int tokens, int n, float* output, long rowOutStride, long tokenOutStride)
        where T : struct, IWidening
    {
        if (rows < 1 || tokens < 1)
        {
            throw new ArgumentOutOfRangeException(rows < 1 ? nameof(rows) : nameof(tokens), "a tile has at least one row and one token");
        }

        if (VectorPathSupported)
        {
            Tile<T>(row, rowStride, rows, x, xStride, tokens, n, output, rowOutStride, tokenOutStride);
            return;
        }

        for (int k = 0; k < rows; k++)
        {
            for (int t = 0; t < tokens; t++)
            {
                output[(t * tokenOutStride) + (k * rowOutStride)] = DotScalar<T>(row + (k * rowStride), x + (t * xStride), n);
            }
        }
    }

    private static void Tile<T>(ushort* row, long rowStride, int rows, float* x, long xStride, int tokens, int n, float* output, long rowOutStride, long tokenOutStride)
        where T : struct, IWidening
    {
        int k = 0;
        for (; k + 4 <= rows; k += 4)
        {
            ushort* r = row + (k * rowStride);
            float* o = output + (k * rowOutStride);
            int t = 0;
            for (; t + 4 <= tokens; t += 4)
            {
                Four4<T>(r, rowStride, x + (t * xStride), xStride, n, o + (t * tokenOutStride), rowOutStride, tokenOutStride);
            }

            for (; t < tokens; t++)
            {
                Four1<T>(r, rowStride, x + (t * xStride), n, o + (t * tokenOutStride), rowOutStride);
            }
        }

        for (; k < rows; k++)
        {
            ushort* r = row + (k * rowStride);
            int t = 0;
            for (; t + 4 <= tokens; t += 4)
            {
                One4<T>(r, x + (t * xStride), xStride, n, output + (k * rowOutStride) + (t * tokenOutStride), tokenOutStride);
            }

            for (; t < tokens; t++)
            {
                output[(k * rowOutStride) + (t * tokenOutStride)] = One<T>(r, x + (t * xStride), n);
            }
        }
    }

    // Four rows by four tokens: 16 accumulators.
    private static void Four4<T>(ushort* row, long rowStride, float* x, long xStride, int n, float* output, long rowOutStride, long tokenOutStride)
        where T : struct, IWidening
    {
        ushort* r0 = row, r1 = row + rowStride, r2 = row + (2 * rowStride), r3 = row + (3 * rowStride);
        float* x0 = x, x1 = x + xStride, x2 = x + (2 * xStride), x3 = x + (3 * xStride);
        Vector512<float> a00 = default, a01 = default, a02 = default, a03 = default;
        Vector512<float> a10 = default, a11 = default, a12 = default, a13 = default;
        Vector512<float> a20 = default, a21 = default, a22 = default, a23 = default;
        Vector512<float> a30 = default, a31 = default, a32 = default, a33 = default;
        int i = 0;
        for (; i + 16 <= n; i += 16)
        {
            var w0 = T.Widen(r0 + i);
            var w1 = T.Widen(r1 + i);
            var w2 = T.Widen(r2 + i);
            var w3 = T.Widen(r3 + i);
            var v = Vector512.Load(x0 + i);
            a00 = Vector512.FusedMultiplyAdd(w0, v, a00);
            a10 = Vector512.FusedMultiplyAdd(w1, v, a10);
            a20 = Vector512.FusedMultiplyAdd(w2, v, a20);
            a30 = Vector512.FusedMultiplyAdd(w3, v, a30);
            v = Vector512.Load(x1 + i);
            a01 = Vector512.FusedMultiplyAdd(w0, v, a01);
            a11 = Vector512.FusedMultiplyAdd(w1, v, a11);
            a21 = Vector512.FusedMultiplyAdd(w2, v, a21);
            a31 = Vector512.FusedMultiplyAdd(w3, v, a31);
            v = Vector512.Load(x2 + i);
            a02 = Vector512.FusedMultiplyAdd(w0, v, a02);
            a12 = Vector512.FusedMultiplyAdd(w1, v, a12);
            a22 = Vector512.FusedMultiplyAdd(w2, v, a22);
            a32 = Vector512.FusedMultiplyAdd(w3, v, a32);
            v = Vector512.Load(x3 + i);
            a03 = Vector512.FusedMultiplyAdd(w0, v, a03);
            a13 = Vector512.FusedMultiplyAdd(w1, v, a13);
            a23 = Vector512.FusedMultiplyAdd(w2, v, a23);
            a33 = Vector512.FusedMultiplyAdd(w3, v, a33);
        }

        float* o1 = output + rowOutStride, o2 = output + (2 * rowOutStride), o3 = output + (3 * rowOutStride);
        long s1 = tokenOutStride, s2 = 2 * tokenOutStride, s3 = 3 * tokenOutStride;
        output[0] = Finish<T>(a00, r0, x0, i, n);
        output[s1] = Finish<T>(a01, r0, x1, i, n);
        output[s2] = Finish<T>(a02, r0, x2, i, n);
        output[s3] = Finish<T>(a03, r0, x3, i, n);
        o1[0] = Finish<T>(a10, r1, x0, i, n);
        o1[s1] = Finish<T>(a11, r1, x1, i, n);
        o1[s2] = Finish<T>(a12, r1, x2, i, n);
        o1[s3] = Finish<T>(a13, r1, x3, i, n);
        o2[0] = Finish<T>(a20, r2, x0, i, n);
        o2[s1] = Finish<T>(a21, r2, x1, i, n);
        o2[s2] = Finish<T>(a22, r2, x2, i, n);
        o2[s3] = Finish<T>(a23, r2, x3, i, n);
        o3[0] = Finish<T>(a30, r3, x0, i, n);
        o3[s1] = Finish<T>(a31, r3, x1, i, n);
        o3[s2] = Finish<T>(a32, r3, x2, i, n);
        o3[s3] = Finish<T>(a33, r3, x3, i, n);
    }

    // Four rows, one token (decode): four chains in flight.
    private static void Four1<T>(ushort* row, long rowStride, float* x, int n, float* output, long rowOutStride)
        where T : struct, IWidening
    {
        ushort* r0 = row, r1 = row + rowStride, r2 = row + (2 * rowStride), r3 = row + (3 * rowStride);
        Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default;
        int i = 0;
        for (; i + 16 <= n; i += 16)
        {
            var v = Vector512.Load(x + i);
            a0 = Vector512.FusedMultiplyAdd(T.Widen(r0 + i), v, a0);
            a1 = Vector512.FusedMultiplyAdd(T.Widen(r1 + i), v, a1);
            a2 = Vector512.FusedMultiplyAdd(T.Widen(r2 + i), v, a2);
            a3 = Vector512.FusedMultiplyAdd(T.Widen(r3 + i), v, a3);
        }

        output[0] = Finish<T>(a0, r0, x, i, n);
        output[rowOutStride] = Finish<T>(a1, r1, x, i, n);
        output[2 * rowOutStride] = Finish<T>(a2, r2, x, i, n);
        output[3 * rowOutStride] = Finish<T>(a3, r3, x, i, n);
    }

    // One row, four tokens: each half widened once for the four.
    private static void One4<T>(ushort* row, float* x, long xStride, int n, float* output, long tokenOutStride)
        where T : struct, IWidening
    {
        float* x0 = x, x1 = x + xStride, x2 = x + (2 * xStride), x3 = x + (3 * xStride);
        Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default;
        int i = 0;
        for (; i + 16 <= n; i += 16)
        {
            var w = T.Widen(row + i);
            a0 = Vector512.FusedMultiplyAdd(w, Vector512.Load(x0 + i), a0);
            a1 = Vector512.FusedMultiplyAdd(w, Vector512.Load(x1 + i), a1);
            a2 = Vector512.FusedMultiplyAdd(w, Vector512.Load(x2 + i), a2);
            a3 = Vector512.FusedMultiplyAdd(w, Vector512.Load(x3 + i), a3);
        }

        output[0] = Finish<T>(a0, row, x0, i, n);
        output[tokenOutStride] = Finish<T>(a1, row, x1, i, n);
        output[2 * tokenOutStride] = Finish<T>(a2, row, x2, i, n);
        output[3 * tokenOutStride] = Finish<T>(a3, row, x3, i, n);
    }

    private static float One<T>(ushort* row, float* x, int n)
        where T : struct, IWidening
    {
        var a = Vector512<float>.Zero;
        int i = 0;
        for (; i + 16 <= n; i += 16)
        {
            a = Vector512.FusedMultiplyAdd(T.Widen(row + i), Vector512.Load(x + i), a);
        }

        return Finish<T>(a, row, x, i, n);
    }

    // The accumulator's lanes summed (Reduce), then the scalar tail from element i.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Finish<T>(Vector512<float> a, ushort* row, float* x, int i, int n)
        where T : struct, IWidening
    {
        float sum = Reduce(a);
        for (; i < n; i++)
        {
            sum = MathF.FusedMultiplyAdd(T.One(row[i]), x[i], sum);
        }

        return sum;
    }

    /// <summary>The 16 lanes' sum in the fixed order of the scalar twin: lanes l + (l + 8), then l + (l + 4), then (0 + 1) + (2 + 3).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Reduce(Vector512<float> a)
    {
        var t8 = a.GetLower() + a.GetUpper();
        var t4 = t8.GetLower() + t8.GetUpper();
        return (t4.GetElement(0) + t4.GetElement(1)) + (t4.GetElement(2) + t4.GetElement(3));
    }

    // How the vector paths widen 16 halves: exactly for every half, or in fewer operations for finite ones.
    // (and one value, for the tails and the scalar twins)
    private interface IWidening
    {
        static abstract Vector512<float> Widen(ushort* src);

        static abstract float One(ushort bits);
    }

    private struct Exact : IWidening
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector512<float> Widen(ushort* src) => HalfBits.ToSingle16(src);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static float One(ushort bits) => HalfBits.ToSingle(bits);
    }

    private struct Finite : IWidening
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector512<float> Widen(ushort* src) => HalfBits.FiniteToSingle16(src);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static float One(ushort bits) => HalfBits.ToSingle(bits);
    }

    // bfloat16: the upper half of a float
    private struct BFloat : IWidening
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector512<float> Widen(ushort* src) => (Avx512F.ConvertToVector512UInt32(Vector256.Load(src)) << 16).AsSingle();

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static float One(ushort bits) => BitConverter.UInt32BitsToSingle((uint)bits << 16);
    }
}
