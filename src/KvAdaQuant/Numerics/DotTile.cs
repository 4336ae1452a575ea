using System.Runtime.Intrinsics;

namespace KvAdaQuant.Numerics;

/// <summary>
/// Four dot products of four F32 weight rows with one activation vector in a single pass, so each
/// activation element is loaded once for four rows (the register tile of the batched matmul).
/// Vector512/256 paths with a scalar twin.
/// </summary>
public static unsafe class DotTile
{
    /// <summary>out[i] = dot(row i, x) for i in 0..3, rows <paramref name="stride"/> floats apart.</summary>
    public static void Dot4(float* rows, long stride, float* x, int n, float* output)
    {
        if (Vector512.IsHardwareAccelerated && n >= 16)
        {
            Dot4Vector512(rows, stride, x, n, output);
        }
        else if (Vector256.IsHardwareAccelerated && n >= 8)
        {
            Dot4Vector256(rows, stride, x, n, output);
        }
        else
        {
            Dot4Scalar(rows, stride, x, n, output);
        }
    }

    /// <summary>Scalar twin.</summary>
    public static void Dot4Scalar(float* rows, long stride, float* x, int n, float* output)
    {
        for (int r = 0; r < 4; r++)
        {
            float* w = rows + (r * stride);
            float s = 0;
            for (int i = 0; i < n; i++)
            {
                s += w[i] * x[i];
            }

            output[r] = s;
        }
    }

    /// <summary>Vector512 path.</summary>
    public static void Dot4Vector512(float* rows, long stride, float* x, int n, float* output)
    {
        var a0 = Vector512<float>.Zero;
        var a1 = Vector512<float>.Zero;
        var a2 = Vector512<float>.Zero;
        var a3 = Vector512<float>.Zero;
        float* w0 = rows, w1 = rows + stride, w2 = rows + (2 * stride), w3 = rows + (3 * stride);
        int i = 0;
        for (; i <= n - 16; i += 16)
        {
            var xv = Vector512.Load(x + i);
            a0 = Vector512.FusedMultiplyAdd(Vector512.Load(w0 + i), xv, a0);
            a1 = Vector512.FusedMultiplyAdd(Vector512.Load(w1 + i), xv, a1);
            a2 = Vector512.FusedMultiplyAdd(Vector512.Load(w2 + i), xv, a2);
            a3 = Vector512.FusedMultiplyAdd(Vector512.Load(w3 + i), xv, a3);
        }

        float s0 = Vector512.Sum(a0), s1 = Vector512.Sum(a1), s2 = Vector512.Sum(a2), s3 = Vector512.Sum(a3);
        for (; i < n; i++)
        {
            s0 += w0[i] * x[i];
            s1 += w1[i] * x[i];
            s2 += w2[i] * x[i];
            s3 += w3[i] * x[i];
        }

        output[0] = s0;
        output[1] = s1;
        output[2] = s2;
        output[3] = s3;
    }

    /// <summary>Vector256 path.</summary>
    public static void Dot4Vector256(float* rows, long stride, float* x, int n, float* output)
    {
        var a0 = Vector256<float>.Zero;
        var a1 = Vector256<float>.Zero;
        var a2 = Vector256<float>.Zero;
        var a3 = Vector256<float>.Zero;
        float* w0 = rows, w1 = rows + stride, w2 = rows + (2 * stride), w3 = rows + (3 * stride);
        int i = 0;
        for (; i <= n - 8; i += 8)
        {
            var xv = Vector256.Load(x + i);
            a0 = Vector256.FusedMultiplyAdd(Vector256.Load(w0 + i), xv, a0);
            a1 = Vector256.FusedMultiplyAdd(Vector256.Load(w1 + i), xv, a1);
            a2 = Vector256.FusedMultiplyAdd(Vector256.Load(w2 + i), xv, a2);
            a3 = Vector256.FusedMultiplyAdd(Vector256.Load(w3 + i), xv, a3);
        }

        float s0 = Vector256.Sum(a0), s1 = Vector256.Sum(a1), s2 = Vector256.Sum(a2), s3 = Vector256.Sum(a3);
        for (; i < n; i++)
        {
            s0 += w0[i] * x[i];
            s1 += w1[i] * x[i];
            s2 += w2[i] * x[i];
            s3 += w3[i] * x[i];
        }

        output[0] = s0;
        output[1] = s1;
        output[2] = s2;
        output[3] = s3;
    }
}
