using System.Numerics.Tensors;

namespace KvAdaQuant.Numerics;

/// <summary>Element-wise building blocks of the forward pass, over spans.</summary>
public static class Kernels
{
    /// <summary>o = x / sqrt(mean(x^2) + eps) * w; the sum of squares is accumulated in double, as ggml does.</summary>
    public static void RmsNorm(ReadOnlySpan<float> x, ReadOnlySpan<float> w, float eps, Span<float> o)
    {
        double sum = 0;
        foreach (float v in x)
        {
            sum += v * v;
        }

        float mean = (float)(sum / x.Length);
        float inv = 1f / MathF.Sqrt(mean + eps);
        TensorPrimitives.Multiply(x, inv, o);
        TensorPrimitives.Multiply(o, w, o);
    }

    /// <summary>
    /// Softmax in place, numerically stable: the maximum is subtracted first, because
    /// <see cref="TensorPrimitives.SoftMax(ReadOnlySpan{float}, Span{float})"/> does not and exp overflows above ~88.
    /// </summary>
    public static void SoftMax(Span<float> x)
    {
        TensorPrimitives.Subtract(x, TensorPrimitives.Max(x), x);
        TensorPrimitives.SoftMax(x, x);
    }

    /// <summary>g = silu(g) * u, in place on <paramref name="gate"/>.</summary>
    public static void SwiGlu(Span<float> gate, ReadOnlySpan<float> up)
    {
        // silu(x) = x * sigmoid(x)
        for (int i = 0; i < gate.Length; i++)
        {
            float g = gate[i];
            gate[i] = g / (1f + MathF.Exp(-g)) * up[i];
        }
    }

    /// <summary>Rotates each head of <paramref name="v"/> (heads x headDim) by the angles in cos/sin (headDim/2 each).</summary>
    public static void Rope(Span<float> v, int headDim, ReadOnlySpan<float> cos, ReadOnlySpan<float> sin, bool interleaved)
    {
        int half = headDim / 2;
        for (int h = 0; h < v.Length; h += headDim)
        {
            var x = v.Slice(h, headDim);
            for (int i = 0; i < half; i++)
            {
                int a = interleaved ? 2 * i : i;
                int b = interleaved ? (2 * i) + 1 : i + half;
                float x0 = x[a], x1 = x[b];
                x[a] = (x0 * cos[i]) - (x1 * sin[i]);
                x[b] = (x0 * sin[i]) + (x1 * cos[i]);
            }
        }
    }
}
