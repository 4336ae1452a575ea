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
