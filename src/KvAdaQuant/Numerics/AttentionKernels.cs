using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace KvAdaQuant.Numerics;

/// <summary>
/// Row kernels of attention over one KV head shared by several query heads (GQA): one pass over a cached row
/// serves every query head. Vector512 and Vector256 paths, a scalar twin, chosen at run time.
/// </summary>
public static class AttentionKernels
{
    /// <summary>scores[r * stride + j] = queries[r] · x for r in 0..rep-1 (queries are rep rows of x.Length).</summary>
    public static void MultiDot(ReadOnlySpan<float> queries, int rep, ReadOnlySpan<float> x, Span<float> scores, int stride, int j)
    {
        if (Vector512.IsHardwareAccelerated && x.Length % 16 == 0)
        {
            MultiDotVector512(queries, rep, x, scores, stride, j);
        }
        else if (Vector256.IsHardwareAccelerated && x.Length % 8 == 0)
        {
            MultiDotVector256(queries, rep, x, scores, stride, j);
        }
        else
        {
            MultiDotScalar(queries, rep, x, scores, stride, j);
        }
    }

    /// <summary>output[r] += probs[r * stride + j] * x for r in 0..rep-1.</summary>
    public static void MultiAxpy(ReadOnlySpan<float> probs, int rep, ReadOnlySpan<float> x, Span<float> output, int stride, int j)
    {
        if (Vector512.IsHardwareAccelerated && x.Length % 16 == 0)
        {
            MultiAxpyVector512(probs, rep, x, output, stride, j);
        }
        else if (Vector256.IsHardwareAccelerated && x.Length % 8 == 0)
        {
            MultiAxpyVector256(probs, rep, x, output, stride, j);
        }
        else
        {
            MultiAxpyScalar(probs, rep, x, output, stride, j);
        }
    }

    /// <summary>
    /// <see cref="MultiDot"/> for <paramref name="count"/> rows of n = <paramref name="n"/> floats stored one after another:
    /// scores[r * stride + j0 + j] = queries[r] · rows[j], the same bits as one <see cref="MultiDot"/> per row (at 512
    /// bits the same fused chain and <c>Vector512.Sum</c> per row, without the call per row; other widths call it).
    /// </summary>
    public static unsafe void MultiDotRows(ReadOnlySpan<float> queries, int rep, int n, ReadOnlySpan<float> rows, int count, Span<float> scores, int stride, int j0)
    {
        if (count <= 0)
        {
            return;
        }

        if (rows.Length < count * n || queries.Length < rep * n || scores.Length < ((rep - 1) * stride) + j0 + count)
        {
            throw new ArgumentException($"{count} rows of {n} for {rep} heads at stride {stride} from {j0}: got {rows.Length} row, {queries.Length} query and {scores.Length} score floats");
        }

        if (!(Vector512.IsHardwareAccelerated && n % 16 == 0))
        {
            for (int j = 0; j < count; j++)
            {
                MultiDot(queries, rep, rows.Slice(j * n, n), scores, stride, j0 + j);
            }

            return;
        }

        fixed (float* qp = queries)
        fixed (float* xp = rows)
        fixed (float* sp = scores)
        {
            for (int r = 0; r < rep; r++)
            {
                float* q = qp + (r * n);
                float* s = sp + ((long)r * stride) + j0;
                int j = 0;
                for (; j + 2 <= count; j += 2)
                {
                    float* x0 = xp + ((long)j * n);
                    float* x1 = x0 + n;
                    var a0 = Vector512<float>.Zero;
                    var a1 = Vector512<float>.Zero;
                    for (int i = 0; i < n; i += 16)
                    {
                        var qv = Vector512.Load(q + i);
                        a0 = Vector512.FusedMultiplyAdd(qv, Vector512.Load(x0 + i), a0);
                        a1 = Vector512.FusedMultiplyAdd(qv, Vector512.Load(x1 + i), a1);
                    }

                    s[j] = Vector512.Sum(a0);
                    s[j + 1] = Vector512.Sum(a1);
                }

                if (j < count)
                {
                    float* x0 = xp + ((long)j * n);
                    var a0 = Vector512<float>.Zero;
                    for (int i = 0; i < n; i += 16)
                    {
                        a0 = Vector512.FusedMultiplyAdd(Vector512.Load(q + i), Vector512.Load(x0 + i), a0);
                    }

                    s[j] = Vector512.Sum(a0);
                }
            }
        }
    }

    /// <summary>
    /// <see cref="MultiAxpy"/> for <paramref name="count"/> rows of n = <paramref name="n"/> floats stored one after another,
    /// in row order: output[r] += probs[r * stride + j0 + j] * rows[j], the same bits as one <see cref="MultiAxpy"/> per
    /// row (at 512 bits the same fused multiply-add per element in the same order, each 16-float piece of the output held
    /// in a register over the rows; other widths call it).
    /// </summary>
    public static unsafe void MultiAxpyRows(ReadOnlySpan<float> probs, int rep, int n, ReadOnlySpan<float> rows, int count, Span<float> output, int stride, int j0)
    {
        if (count <= 0)
        {
            return;
        }

        if (rows.Length < count * n || output.Length < rep * n || probs.Length < ((rep - 1) * stride) + j0 + count)
        {
            throw new ArgumentException($"{count} rows of {n} for {rep} heads at stride {stride} from {j0}: got {rows.Length} row, {output.Length} output and {probs.Length} weight floats");
        }

        if (!(Vector512.IsHardwareAccelerated && n % 16 == 0))
        {
            for (int j = 0; j < count; j++)
            {
                MultiAxpy(probs, rep, rows.Slice(j * n, n), output, stride, j0 + j);
            }

            return;
        }

        fixed (float* pp = probs)
        fixed (float* xp = rows)
        fixed (float* op = output)
        {
            for (int r = 0; r < rep; r++)
            {
                float* p = pp + ((long)r * stride) + j0;
                float* o = op + (r * n);
                int i = 0;
                for (; i + 32 <= n; i += 32)
                {
                    var o0 = Vector512.Load(o + i);
                    var o1 = Vector512.Load(o + i + 16);
                    for (int j = 0; j < count; j++)
                    {
                        var pv = Vector512.Create(p[j]);
                        float* x = xp + ((long)j * n) + i;
                        o0 = Vector512.FusedMultiplyAdd(Vector512.Load(x), pv, o0);
                        o1 = Vector512.FusedMultiplyAdd(Vector512.Load(x + 16), pv, o1);
                    }

                    o0.Store(o + i);
                    o1.Store(o + i + 16);
                }

                if (i < n)
                {
                    var o0 = Vector512.Load(o + i);
                    for (int j = 0; j < count; j++)
                    {
                        o0 = Vector512.FusedMultiplyAdd(Vector512.Load(xp + ((long)j * n) + i), Vector512.Create(p[j]), o0);
                    }

                    o0.Store(o + i);
                }
            }
        }
    }

    /// <summary>x = a * x + b in place.</summary>
    public static void Affine(Span<float> x, float a, float b)
    {
        if (Vector256.IsHardwareAccelerated && x.Length % 8 == 0)
        {
            AffineVector256(x, a, b);
        }
        else
        {
            AffineScalar(x, a, b);
        }
    }

    /// <summary>Scalar twin of <see cref="MultiDot"/>.</summary>
    public static void MultiDotScalar(ReadOnlySpan<float> queries, int rep, ReadOnlySpan<float> x, Span<float> scores, int stride, int j)
    {
        int n = x.Length;
        for (int r = 0; r < rep; r++)
        {
            var q = queries.Slice(r * n, n);
            float s = 0;
            for (int i = 0; i < n; i++)
            {
                s += q[i] * x[i];
            }

            scores[(r * stride) + j] = s;
        }
    }

    /// <summary>Vector256 path of <see cref="MultiDot"/> (x.Length a multiple of 8).</summary>
    public static void MultiDotVector256(ReadOnlySpan<float> queries, int rep, ReadOnlySpan<float> x, Span<float> scores, int stride, int j)
    {
        int n = x.Length;
        CheckMultiple(n, 8);
        ref float xr = ref MemoryMarshal.GetReference(x);
        ref float qr = ref MemoryMarshal.GetReference(queries[..(rep * n)]);
        int r = 0;
        for (; r + 2 <= rep; r += 2)
        {
            ref float q0 = ref Unsafe.Add(ref qr, r * n);
            ref float q1 = ref Unsafe.Add(ref q0, n);
            var a0 = Vector256<float>.Zero;
            var a1 = Vector256<float>.Zero;
            for (int i = 0; i < n; i += 8)
            {
                var xv = Vector256.LoadUnsafe(ref xr, (nuint)i);
                a0 = Vector256.FusedMultiplyAdd(Vector256.LoadUnsafe(ref q0, (nuint)i), xv, a0);
                a1 = Vector256.FusedMultiplyAdd(Vector256.LoadUnsafe(ref q1, (nuint)i), xv, a1);
            }

            scores[(r * stride) + j] = Vector256.Sum(a0);
            scores[((r + 1) * stride) + j] = Vector256.Sum(a1);
        }

        for (; r < rep; r++)
        {
            ref float q0 = ref Unsafe.Add(ref qr, r * n);
            var a0 = Vector256<float>.Zero;
            for (int i = 0; i < n; i += 8)
            {
                a0 = Vector256.FusedMultiplyAdd(Vector256.LoadUnsafe(ref q0, (nuint)i), Vector256.LoadUnsafe(ref xr, (nuint)i), a0);
            }

            scores[(r * stride) + j] = Vector256.Sum(a0);
        }
    }

    /// <summary>Vector512 path of <see cref="MultiDot"/> (x.Length a multiple of 16).</summary>
    public static void MultiDotVector512(ReadOnlySpan<float> queries, int rep, ReadOnlySpan<float> x, Span<float> scores, int stride, int j)
    {
        int n = x.Length;
        CheckMultiple(n, 16);
        ref float xr = ref MemoryMarshal.GetReference(x);
        ref float qr = ref MemoryMarshal.GetReference(queries[..(rep * n)]);
        int r = 0;
        for (; r + 2 <= rep; r += 2)
        {
            ref float q0 = ref Unsafe.Add(ref qr, r * n);
            ref float q1 = ref Unsafe.Add(ref q0, n);
            var a0 = Vector512<float>.Zero;
            var a1 = Vector512<float>.Zero;
            for (int i = 0; i < n; i += 16)
            {
                var xv = Vector512.LoadUnsafe(ref xr, (nuint)i);
                a0 = Vector512.FusedMultiplyAdd(Vector512.LoadUnsafe(ref q0, (nuint)i), xv, a0);
                a1 = Vector512.FusedMultiplyAdd(Vector512.LoadUnsafe(ref q1, (nuint)i), xv, a1);
            }

            scores[(r * stride) + j] = Vector512.Sum(a0);
            scores[((r + 1) * stride) + j] = Vector512.Sum(a1);
        }

        for (; r < rep; r++)
        {
            ref float q0 = ref Unsafe.Add(ref qr, r * n);
            var a0 = Vector512<float>.Zero;
            for (int i = 0; i < n; i += 16)
            {
                a0 = Vector512.FusedMultiplyAdd(Vector512.LoadUnsafe(ref q0, (nuint)i), Vector512.LoadUnsafe(ref xr, (nuint)i), a0);
            }

            scores[(r * stride) + j] = Vector512.Sum(a0);
        }
    }

    /// <summary>Scalar twin of <see cref="MultiAxpy"/>.</summary>
    public static void MultiAxpyScalar(ReadOnlySpan<float> probs, int rep, ReadOnlySpan<float> x, Span<float> output, int stride, int j)
    {
        int n = x.Length;
        for (int r = 0; r < rep; r++)
        {
            float p = probs[(r * stride) + j];
            var o = output.Slice(r * n, n);
            for (int i = 0; i < n; i++)
            {
                o[i] += p * x[i];
            }
        }
    }

    /// <summary>Vector256 path of <see cref="MultiAxpy"/> (x.Length a multiple of 8).</summary>
    public static void MultiAxpyVector256(ReadOnlySpan<float> probs, int rep, ReadOnlySpan<float> x, Span<float> output, int stride, int j)
    {
        int n = x.Length;
        CheckMultiple(n, 8);
        ref float xr = ref MemoryMarshal.GetReference(x);
        ref float or = ref MemoryMarshal.GetReference(output[..(rep * n)]);
        for (int r = 0; r < rep; r++)
        {
            var p = Vector256.Create(probs[(r * stride) + j]);
            ref float o = ref Unsafe.Add(ref or, r * n);
            for (int i = 0; i < n; i += 8)
            {
                Vector256.FusedMultiplyAdd(Vector256.LoadUnsafe(ref xr, (nuint)i), p, Vector256.LoadUnsafe(ref o, (nuint)i)).StoreUnsafe(ref o, (nuint)i);
            }
        }
    }

    /// <summary>Vector512 path of <see cref="MultiAxpy"/> (x.Length a multiple of 16).</summary>
    public static void MultiAxpyVector512(ReadOnlySpan<float> probs, int rep, ReadOnlySpan<float> x, Span<float> output, int stride, int j)
    {
        int n = x.Length;
        CheckMultiple(n, 16);
        ref float xr = ref MemoryMarshal.GetReference(x);
        ref float or = ref MemoryMarshal.GetReference(output[..(rep * n)]);
        for (int r = 0; r < rep; r++)
        {
            var p = Vector512.Create(probs[(r * stride) + j]);
            ref float o = ref Unsafe.Add(ref or, r * n);
            for (int i = 0; i < n; i += 16)
            {
                Vector512.FusedMultiplyAdd(Vector512.LoadUnsafe(ref xr, (nuint)i), p, Vector512.LoadUnsafe(ref o, (nuint)i)).StoreUnsafe(ref o, (nuint)i);
            }
        }
    }

    /// <summary>Scalar twin of <see cref="Affine"/>.</summary>
    public static void AffineScalar(Span<float> x, float a, float b)
    {
        for (int i = 0; i < x.Length; i++)
        {
            x[i] = (a * x[i]) + b;
        }
    }

    /// <summary>Vector256 path of <see cref="Affine"/> (x.Length a multiple of 8).</summary>
    public static void AffineVector256(Span<float> x, float a, float b)
    {
        CheckMultiple(x.Length, 8);
        ref float xr = ref MemoryMarshal.GetReference(x);
        var av = Vector256.Create(a);
        var bv = Vector256.Create(b);
        for (int i = 0; i < x.Length; i += 8)
        {
            ((Vector256.LoadUnsafe(ref xr, (nuint)i) * av) + bv).StoreUnsafe(ref xr, (nuint)i);
        }
    }

    private static void CheckMultiple(int n, int m)
    {
        if (n % m != 0)
        {
            throw new ArgumentException($"row length {n} is not a multiple of {m}");
        }
    }
}
