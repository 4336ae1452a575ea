using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace KvAdaQuant.Numerics;

/// <summary>
/// The float arithmetic of ggml's CPU backend as built for x86 with AVX-512 (llama.cpp through LLamaSharp.Backend.Cpu),
/// reproduced operation by operation so that our engine and llama.cpp round the same way: its vectorized exp (a
/// polynomial adapted from Arm's optimized routines, with <c>vscalefps</c> for the exponent), the order in which
/// <c>_mm512_reduce_add_ps</c> and <c>hsum_float_8</c> add their lanes, and the accumulation order of
/// <c>ggml_vec_dot_f32</c> (four 16-lane accumulators over chunks of 64, then a plain float tail). Written from the
/// algorithm, not copied. Each vector path has a scalar twin that gives the same bits.
/// </summary>
public static class GgmlArithmetic
{
    // Constants of the exp polynomial, as float bit patterns (0x1.8p23, 0x1.715476p+0, ...).
    private static readonly float Shift = BitConverter.Int32BitsToSingle(0x4B400000);      // 1.5 * 2^23: rounds to an integer
    private static readonly float Log2E = BitConverter.Int32BitsToSingle(0x3FB8AA3B);      // 1/ln 2
    private static readonly float Ln2Hi = BitConverter.Int32BitsToSingle(0x3F317200);      // ln 2, high part
    private static readonly float Ln2Lo = BitConverter.Int32BitsToSingle(0x35BFBE8E);      // ln 2, low part
    private static readonly float C0 = BitConverter.Int32BitsToSingle(0x3C072010);
    private static readonly float C1 = BitConverter.Int32BitsToSingle(0x3D2B9F17);
    private static readonly float C2 = BitConverter.Int32BitsToSingle(0x3E2AAF33);
    private static readonly float C3 = BitConverter.Int32BitsToSingle(0x3EFFFEDB);
    private static readonly float C4 = BitConverter.Int32BitsToSingle(0x3F7FFFF6);

    /// <summary>
    /// e^x as one lane of ggml's AVX-512 <c>ggml_v_expf</c>: n = round(x / ln 2), b = x - n ln 2 (in two fused steps),
    /// a degree-5 polynomial j(b) evaluated with fused multiply-adds, then j * 2^n rounded once. |n| &gt; 192 gives 0 or
    /// infinity; NaN stays NaN. Within about 2 ulp of the true value (the source states 1.95); what matters here is that the bits are ggml's.
    /// </summary>
    public static float Exp(float x)
    {
        float z = MathF.FusedMultiplyAdd(x, Log2E, Shift);
        float n = z - Shift;
        float b = MathF.FusedMultiplyAdd(-n, Ln2Lo, MathF.FusedMultiplyAdd(-n, Ln2Hi, x));
        if (MathF.Abs(n) > 192f)
        {
            return n <= 0 ? 0f : float.PositiveInfinity;
        }

        float u = b * b;
        float j = MathF.FusedMultiplyAdd(
            MathF.FusedMultiplyAdd(MathF.FusedMultiplyAdd(C0, b, C1), u, MathF.FusedMultiplyAdd(C2, b, C3)),
            u,
            MathF.FusedMultiplyAdd(C4, b, 1f));
        if (float.IsNaN(n))
        {
            return float.NaN;
        }

        int e = (int)n;
        if (e is >= -126 and <= 127)
        {
            // 2^e is a normal float: one rounding, as vscalefps does.
            return j * BitConverter.Int32BitsToSingle((e + 127) << 23);
        }

        // j * 2^e is exact in double; the conversion rounds once (to a subnormal, zero or infinity).
        return (float)Math.ScaleB((double)j, e);
    }

    /// <summary>
    /// <see cref="Exp"/> of 8 lanes at once: the same operations lane by lane, so the same bits (the scalar twin's
    /// single rounding of j * 2^n included, for subnormal, zero and infinite results too).
    /// </summary>
    public static Vector256<float> Exp(Vector256<float> x)
    {
        var shift = Vector256.Create(Shift);
        var z = Vector256.FusedMultiplyAdd(x, Vector256.Create(Log2E), shift);
        var n = z - shift;
        var b = Vector256.FusedMultiplyAdd(-n, Vector256.Create(Ln2Lo), Vector256.FusedMultiplyAdd(-n, Vector256.Create(Ln2Hi), x));
        var u = b * b;
        var j = Vector256.FusedMultiplyAdd(
            Vector256.FusedMultiplyAdd(Vector256.FusedMultiplyAdd(Vector256.Create(C0), b, Vector256.Create(C1)), u, Vector256.FusedMultiplyAdd(Vector256.Create(C2), b, Vector256.Create(C3))),
            u,
            Vector256.FusedMultiplyAdd(Vector256.Create(C4), b, Vector256<float>.One));
        if (Vector256.LessThanOrEqualAll(Vector256.Abs(n), Vector256.Create(126f)))
        {
            // Every lane's 2^n is a normal float (the usual case, a softmax's exponents near its maximum): k = 0, the
            // second factor is 1 and no lane is beyond 192, so j * 2^n is the general route's bits with fewer steps. NaN
            // lanes fail the comparison and take the general route.
            return j * ((Vector256.ConvertToInt32(n) + Vector256.Create(127)) << 23).AsSingle();
        }


        // j * 2^n rounded once, without a scalar route: 2^n is split into two normal powers of two, k = 0 when 2^n is
        // normal, -96 below (the first product stays exact and normal, the second rounds once into the subnormals or to
        // zero), +96 above (the second product overflows to infinity as vscalefps does). |n| > 192: 0 or infinity.
        var nc = Vector256.Min(Vector256.Max(n, Vector256.Create(-192f)), Vector256.Create(192f));
        var e = Vector256.ConvertToInt32(nc);
        var k = Vector256.ConditionalSelect(Vector256.LessThan(e, Vector256.Create(-126)), Vector256.Create(-96),
            Vector256.ConditionalSelect(Vector256.GreaterThan(e, Vector256.Create(127)), Vector256.Create(96), Vector256<int>.Zero));
        var s1 = ((e - k + Vector256.Create(127)) << 23).AsSingle();
        var s2 = ((k + Vector256.Create(127)) << 23).AsSingle();
        var result = (j * s1) * s2;
        var beyond = Vector256.GreaterThan(Vector256.Abs(n), Vector256.Create(192f));
        var alt = Vector256.ConditionalSelect(Vector256.LessThanOrEqual(n, Vector256<float>.Zero), Vector256<float>.Zero, Vector256.Create(float.PositiveInfinity));
        return Vector256.ConditionalSelect(beyond, alt, result);
    }

    /// <summary><see cref="Exp(Vector256{float})"/> of 16 lanes at once: the same operations lane by lane, so the same bits.</summary>
    public static Vector512<float> Exp(Vector512<float> x)
    {
        var shift = Vector512.Create(Shift);
        var z = Vector512.FusedMultiplyAdd(x, Vector512.Create(Log2E), shift);
        var n = z - shift;
        var b = Vector512.FusedMultiplyAdd(-n, Vector512.Create(Ln2Lo), Vector512.FusedMultiplyAdd(-n, Vector512.Create(Ln2Hi), x));
        var u = b * b;
        var j = Vector512.FusedMultiplyAdd(
            Vector512.FusedMultiplyAdd(Vector512.FusedMultiplyAdd(Vector512.Create(C0), b, Vector512.Create(C1)), u, Vector512.FusedMultiplyAdd(Vector512.Create(C2), b, Vector512.Create(C3))),
            u,
            Vector512.FusedMultiplyAdd(Vector512.Create(C4), b, Vector512<float>.One));
        if (Vector512.LessThanOrEqualAll(Vector512.Abs(n), Vector512.Create(126f)))
        {
            // Every lane's 2^n is a normal float (the usual case, a softmax's exponents near its maximum): k = 0, the
            // second factor is 1 and no lane is beyond 192, so j * 2^n is the general route's bits with fewer steps. NaN
            // lanes fail the comparison and take the general route.
            return j * ((Vector512.ConvertToInt32(n) + Vector512.Create(127)) << 23).AsSingle();
        }

        var nc = Vector512.Min(Vector512.Max(n, Vector512.Create(-192f)), Vector512.Create(192f));
        var e = Vector512.ConvertToInt32(nc);
        var k = Vector512.ConditionalSelect(Vector512.LessThan(e, Vector512.Create(-126)), Vector512.Create(-96),
            Vector512.ConditionalSelect(Vector512.GreaterThan(e, Vector512.Create(127)), Vector512.Create(96), Vector512<int>.Zero));
        var s1 = ((e - k + Vector512.Create(127)) << 23).AsSingle();
        var s2 = ((k + Vector512.Create(127)) << 23).AsSingle();
        var result = (j * s1) * s2;
        var beyond = Vector512.GreaterThan(Vector512.Abs(n), Vector512.Create(192f));
        var alt = Vector512.ConditionalSelect(Vector512.LessThanOrEqual(n, Vector512<float>.Zero), Vector512<float>.Zero, Vector512.Create(float.PositiveInfinity));
        return Vector512.ConditionalSelect(beyond, alt, result);
    }

    /// <summary>silu(x) = x / (1 + e^-x) with <see cref="Exp"/>, as ggml's vectorized <c>ggml_v_silu</c>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Silu(float x) => x / (1f + Exp(0f - x));

    /// <summary><see cref="Silu(float)"/> of 8 lanes (same bits).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Silu(Vector256<float> x) => x / (Vector256<float>.One + Exp(Vector256<float>.Zero - x));

    /// <summary>
    /// Sum of 16 lanes in the order of GCC's <c>_mm512_reduce_add_ps</c>: upper 8 + lower 8, then upper 4 + lower 4,
    /// then (l0 + l2) + (l1 + l3).
    /// </summary>
    public static float Sum16(ReadOnlySpan<float> lanes)
    {
        if (lanes.Length != 16)
        {
            throw new ArgumentException($"expected 16 lanes, got {lanes.Length}", nameof(lanes));
        }

        Span<float> t8 = stackalloc float[8];
        for (int i = 0; i < 8; i++)
        {
            t8[i] = lanes[i + 8] + lanes[i];
        }

        Span<float> t4 = stackalloc float[4];
        for (int i = 0; i < 4; i++)
        {
            t4[i] = t8[i + 4] + t8[i];
        }

        return (t4[0] + t4[2]) + (t4[1] + t4[3]);
    }

    /// <summary><see cref="Sum16"/> of a 16-lane vector held as two 8-lane halves (lanes 0-7, lanes 8-15).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Sum16(Vector256<float> low, Vector256<float> high)
    {
        var t8 = high + low;
        var t4 = t8.GetUpper() + t8.GetLower();
        return (t4.GetElement(0) + t4.GetElement(2)) + (t4.GetElement(1) + t4.GetElement(3));
    }

    /// <summary>
    /// For each d in 0..n-1, <see cref="Sum16(ReadOnlySpan{float})"/> of lanes[l * n + d] over l = 0..15 (16 rows of
    /// n partial sums, reduced as one 16-lane register per d), written to <paramref name="output"/>.
    /// </summary>
    public static void ReduceLanes16(Span<float> lanes, int n, Span<float> output)
    {
        if (lanes.Length < 16 * n || output.Length < n)
        {
            throw new ArgumentException($"need 16 x {n} lanes and {n} outputs, got {lanes.Length} and {output.Length}");
        }

        // element-wise adds in the tree order of Sum16 (rows l + 8 onto l, then l + 4 onto l, then (0 + 2) + (1 + 3)),
        // eight columns at a time in registers; the same adds one column at a time for the rest.
        ref float lr = ref MemoryMarshal.GetReference(lanes);
        int d = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            for (; d + 8 <= n; d += 8)
            {
                ref float c = ref Unsafe.Add(ref lr, d);
                var t0 = (Vector256.LoadUnsafe(ref c, (nuint)(12 * n)) + Vector256.LoadUnsafe(ref c, (nuint)(4 * n))) + (Vector256.LoadUnsafe(ref c, (nuint)(8 * n)) + Vector256.LoadUnsafe(ref c));
                var t1 = (Vector256.LoadUnsafe(ref c, (nuint)(13 * n)) + Vector256.LoadUnsafe(ref c, (nuint)(5 * n))) + (Vector256.LoadUnsafe(ref c, (nuint)(9 * n)) + Vector256.LoadUnsafe(ref c, (nuint)n));
                var t2 = (Vector256.LoadUnsafe(ref c, (nuint)(14 * n)) + Vector256.LoadUnsafe(ref c, (nuint)(6 * n))) + (Vector256.LoadUnsafe(ref c, (nuint)(10 * n)) + Vector256.LoadUnsafe(ref c, (nuint)(2 * n)));
                var t3 = (Vector256.LoadUnsafe(ref c, (nuint)(15 * n)) + Vector256.LoadUnsafe(ref c, (nuint)(7 * n))) + (Vector256.LoadUnsafe(ref c, (nuint)(11 * n)) + Vector256.LoadUnsafe(ref c, (nuint)(3 * n)));
                ((t0 + t2) + (t1 + t3)).StoreUnsafe(ref MemoryMarshal.GetReference(output), (nuint)d);
            }
        }

        for (; d < n; d++)
        {
            float t0 = (lanes[(12 * n) + d] + lanes[(4 * n) + d]) + (lanes[(8 * n) + d] + lanes[d]);
            float t1 = (lanes[(13 * n) + d] + lanes[(5 * n) + d]) + (lanes[(9 * n) + d] + lanes[n + d]);
            float t2 = (lanes[(14 * n) + d] + lanes[(6 * n) + d]) + (lanes[(10 * n) + d] + lanes[(2 * n) + d]);
            float t3 = (lanes[(15 * n) + d] + lanes[(7 * n) + d]) + (lanes[(11 * n) + d] + lanes[(3 * n) + d]);
            output[d] = (t0 + t2) + (t1 + t3);
        }
    }

    /// <summary>acc[i] = fma(x[i], p, acc[i]) for every i (one rounding each, as vfmadd does).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void FusedMultiplyAddInPlace(ReadOnlySpan<float> x, float p, Span<float> acc)
    {
        int n = x.Length;
        if (acc.Length < n)
        {
            throw new ArgumentException($"accumulator of {acc.Length} floats for {n} values");
        }

        ref float xr = ref MemoryMarshal.GetReference(x);
        ref float ar = ref MemoryMarshal.GetReference(acc);
        int i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            var pv = Vector256.Create(p);
            for (; i + 8 <= n; i += 8)
            {
                Vector256.FusedMultiplyAdd(Vector256.LoadUnsafe(ref xr, (nuint)i), pv, Vector256.LoadUnsafe(ref ar, (nuint)i)).StoreUnsafe(ref ar, (nuint)i);
            }
        }

        for (; i < n; i++)
        {
            Unsafe.Add(ref ar, i) = MathF.FusedMultiplyAdd(Unsafe.Add(ref xr, i), p, Unsafe.Add(ref ar, i));
        }
    }

    /// <summary>
    /// Sum of 8 lanes in the order of ggml's <c>hsum_float_8</c> (and llamafile's hsum of a __m256): upper 4 + lower 4,
    /// then (l0 + l2) + (l1 + l3). .NET's <c>Vector256.Sum</c> adds in another order.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Sum8(Vector256<float> v)
    {
        var t4 = v.GetUpper() + v.GetLower();
        return (t4.GetElement(0) + t4.GetElement(2)) + (t4.GetElement(1) + t4.GetElement(3));
    }

    /// <summary>Scalar twin of <see cref="Sum8(Vector256{float})"/>.</summary>
    public static float Sum8Scalar(ReadOnlySpan<float> lanes)
    {
        if (lanes.Length != 8)
        {
            throw new ArgumentException($"expected 8 lanes, got {lanes.Length}", nameof(lanes));
        }

        float t0 = lanes[4] + lanes[0], t1 = lanes[5] + lanes[1], t2 = lanes[6] + lanes[2], t3 = lanes[7] + lanes[3];
        return (t0 + t2) + (t1 + t3);
    }

    /// <summary>
    /// x · y in the order of ggml's <c>ggml_vec_dot_f32</c> on AVX-512: four 16-lane fused accumulators over chunks of
    /// 64, combined (a0 + a2) + (a1 + a3), reduced by <see cref="Sum16(ReadOnlySpan{float})"/>, then the remaining
    /// elements added one by one in float: as the shipped binary's compiled loop does (read from its disassembly), the
    /// products of whole groups of 8 are rounded before the add, the last n % 8 are fused multiply-adds.
    /// </summary>
    public static float Dot(ReadOnlySpan<float> x, ReadOnlySpan<float> y)
        => Vector256.IsHardwareAccelerated ? DotVector(x, y) : DotScalar(x, y);

    /// <summary>Scalar twin of <see cref="Dot"/>.</summary>
    public static float DotScalar(ReadOnlySpan<float> x, ReadOnlySpan<float> y)
    {
        CheckLengths(x, y);
        int n = x.Length;
        int np = n & ~63;
        float sum = 0f;
        if (np > 0)
        {
            Span<float> acc = stackalloc float[64];
            acc.Clear();
            for (int i = 0; i < np; i += 64)
            {
                for (int l = 0; l < 64; l++)
                {
                    acc[l] = MathF.FusedMultiplyAdd(x[i + l], y[i + l], acc[l]);
                }
            }

            Span<float> v = stackalloc float[16];
            for (int l = 0; l < 16; l++)
            {
                v[l] = (acc[l] + acc[32 + l]) + (acc[16 + l] + acc[48 + l]);
            }

            sum = Sum16(v);
        }

        return Tail(x, y, np, sum);
    }

    /// <summary>Vector path of <see cref="Dot"/> (each 16-lane accumulator as two Vector256 halves); same bits as the scalar twin.</summary>
    public static float DotVector(ReadOnlySpan<float> x, ReadOnlySpan<float> y)
    {
        CheckLengths(x, y);
        int n = x.Length;
        int np = n & ~63;
        float sum = 0f;
        if (np > 0)
        {
            ref float xr = ref MemoryMarshal.GetReference(x);
            ref float yr = ref MemoryMarshal.GetReference(y);
            Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default, a4 = default, a5 = default, a6 = default, a7 = default;
            for (int i = 0; i < np; i += 64)
            {
                nuint o = (nuint)i;
                a0 = Vector256.FusedMultiplyAdd(Vector256.LoadUnsafe(ref xr, o), Vector256.LoadUnsafe(ref yr, o), a0);
                a1 = Vector256.FusedMultiplyAdd(Vector256.LoadUnsafe(ref xr, o + 8), Vector256.LoadUnsafe(ref yr, o + 8), a1);
                a2 = Vector256.FusedMultiplyAdd(Vector256.LoadUnsafe(ref xr, o + 16), Vector256.LoadUnsafe(ref yr, o + 16), a2);
                a3 = Vector256.FusedMultiplyAdd(Vector256.LoadUnsafe(ref xr, o + 24), Vector256.LoadUnsafe(ref yr, o + 24), a3);
                a4 = Vector256.FusedMultiplyAdd(Vector256.LoadUnsafe(ref xr, o + 32), Vector256.LoadUnsafe(ref yr, o + 32), a4);
                a5 = Vector256.FusedMultiplyAdd(Vector256.LoadUnsafe(ref xr, o + 40), Vector256.LoadUnsafe(ref yr, o + 40), a5);
                a6 = Vector256.FusedMultiplyAdd(Vector256.LoadUnsafe(ref xr, o + 48), Vector256.LoadUnsafe(ref yr, o + 48), a6);
                a7 = Vector256.FusedMultiplyAdd(Vector256.LoadUnsafe(ref xr, o + 56), Vector256.LoadUnsafe(ref yr, o + 56), a7);
            }

            // accumulators 0..3 are 16 lanes each: (a0,a1), (a2,a3), (a4,a5), (a6,a7).
            sum = Sum16((a0 + a4) + (a2 + a6), (a1 + a5) + (a3 + a7));
        }

        return Tail(x, y, np, sum);
    }

    /// <summary>
    /// dst[j] = <see cref="Dot"/>(x, rows[j]) for <paramref name="count"/> rows of x.Length floats stored one after
    /// another: the same bits as one call per row, with the sequential tails of eight rows interleaved so that their
    /// dependency chains overlap.
    /// </summary>
    public static unsafe void DotRows(ReadOnlySpan<float> x, ReadOnlySpan<float> rows, int count, Span<float> dst)
    {
        int n = x.Length;
        if (rows.Length < count * n || dst.Length < count)
        {
            throw new ArgumentException($"{count} rows of {n} need {count * n} floats and {count} outputs, got {rows.Length} and {dst.Length}");
        }

        int np = n & ~63;
        int unfused = np + ((n - np) & ~7);
        int j = 0;
        fixed (float* px = x)
        fixed (float* pr = rows)
        {
            for (; j + 8 <= count; j += 8)
            {
                float* r0 = pr + ((long)j * n);
                float s0 = 0f, s1 = 0f, s2 = 0f, s3 = 0f, s4 = 0f, s5 = 0f, s6 = 0f, s7 = 0f;
                if (np > 0)
                {
                    s0 = DotVector(x[..np], new ReadOnlySpan<float>(r0, np));
                    s1 = DotVector(x[..np], new ReadOnlySpan<float>(r0 + n, np));
                    s2 = DotVector(x[..np], new ReadOnlySpan<float>(r0 + (2 * n), np));
                    s3 = DotVector(x[..np], new ReadOnlySpan<float>(r0 + (3 * n), np));
                    s4 = DotVector(x[..np], new ReadOnlySpan<float>(r0 + (4 * n), np));
                    s5 = DotVector(x[..np], new ReadOnlySpan<float>(r0 + (5 * n), np));
                    s6 = DotVector(x[..np], new ReadOnlySpan<float>(r0 + (6 * n), np));
                    s7 = DotVector(x[..np], new ReadOnlySpan<float>(r0 + (7 * n), np));
                }

                for (int i = np; i < unfused; i++)
                {
                    float xi = px[i];
                    float* c = r0 + i;
                    s0 += xi * c[0];
                    s1 += xi * c[n];
                    s2 += xi * c[2 * n];
                    s3 += xi * c[3 * n];
                    s4 += xi * c[4 * n];
                    s5 += xi * c[5 * n];
                    s6 += xi * c[6 * n];
                    s7 += xi * c[7 * n];
                }

                for (int i = unfused; i < n; i++)
                {
                    float xi = px[i];
                    float* c = r0 + i;
                    s0 = MathF.FusedMultiplyAdd(xi, c[0], s0);
                    s1 = MathF.FusedMultiplyAdd(xi, c[n], s1);
                    s2 = MathF.FusedMultiplyAdd(xi, c[2 * n], s2);
                    s3 = MathF.FusedMultiplyAdd(xi, c[3 * n], s3);
                    s4 = MathF.FusedMultiplyAdd(xi, c[4 * n], s4);
                    s5 = MathF.FusedMultiplyAdd(xi, c[5 * n], s5);
                    s6 = MathF.FusedMultiplyAdd(xi, c[6 * n], s6);
                    s7 = MathF.FusedMultiplyAdd(xi, c[7 * n], s7);
                }

                dst[j] = s0;
                dst[j + 1] = s1;
                dst[j + 2] = s2;
                dst[j + 3] = s3;
                dst[j + 4] = s4;
                dst[j + 5] = s5;
                dst[j + 6] = s6;
                dst[j + 7] = s7;
            }
        }

        for (; j < count; j++)
        {
            dst[j] = Dot(x, rows.Slice(j * n, n));
        }
    }

    // The tail after the chunks of 64, as the compiled loop does it (GCC vectorized `sum += x[i] * y[i]` without
    // reassociating): products rounded then added one by one for the elements in whole groups of 8, the last n % 8
    // elements fused (vfmadd231ss).
    private static float Tail(ReadOnlySpan<float> x, ReadOnlySpan<float> y, int from, float sum)
    {
        int n = x.Length;
        int unfused = from + ((n - from) & ~7);
        for (int i = from; i < unfused; i++)
        {
            sum += x[i] * y[i];
        }

        for (int i = unfused; i < n; i++)
        {
            sum = MathF.FusedMultiplyAdd(x[i], y[i], sum);
        }

        return sum;
    }

    private static void CheckLengths(ReadOnlySpan<float> x, ReadOnlySpan<float> y)
    {
        if (x.Length != y.Length)
        {
            throw new ArgumentException($"vectors of {x.Length} and {y.Length} floats");
        }
    }
}
