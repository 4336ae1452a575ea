namespace KvAdaQuant.Quantization;

/// <summary>
/// The orthogonal rotation a <see cref="KvSpec.Rotate"/> spec applies to each head's row before it is quantized:
/// R = H D / √d, with H the d x d Sylvester Hadamard matrix (entries ±1; d a power of two) and D a fixed diagonal of ±1
/// signs. Rotating spreads an outlier channel's energy over all channels (QuaRot's and QuIP#'s incoherence processing),
/// so a per-token group's range no longer follows its largest channel; being orthogonal it changes no dot product:
/// q·k = (Rq)·(Rk), and Σ p (R v) = R Σ p v, so the cache stores R k and R v, rotates the query, and turns the attention
/// output back with Rᵀ = D H / √d. Applied by the fast Walsh-Hadamard transform, d log2 d additions per row.
/// The signs are part of the stored format (state files): D_ii = −1 where bit 63 of splitmix64(i) is set.
/// </summary>
public static class KvRotation
{
    /// <summary>Whether <paramref name="headDim"/> can be rotated: a power of two, at least 2.</summary>
    public static bool Supports(int headDim) => headDim >= 2 && (headDim & (headDim - 1)) == 0;

    /// <summary>The sign D_ii of channel <paramref name="i"/>: −1 where bit 63 of splitmix64(i) is set, else +1.</summary>
    public static float Sign(int i)
    {
        ulong z = unchecked(((ulong)i + 1) * 0x9E3779B97F4A7C15UL);
        z = unchecked((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL);
        z = unchecked((z ^ (z >> 27)) * 0x94D049BB133111EBUL);
        z ^= z >> 31;
        return (z >> 63) != 0 ? -1f : 1f;
    }

    /// <summary>Rotates every row of <paramref name="rows"/> (rows of <paramref name="headDim"/> floats) in place: x ← R x.</summary>
    public static void Rotate(Span<float> rows, int headDim)
    {
        Check(rows.Length, headDim);
        float scale = 1f / MathF.Sqrt(headDim);
        for (int r = 0; r < rows.Length; r += headDim)
        {
            var x = rows.Slice(r, headDim);
            for (int i = 0; i < headDim; i++)
            {
                x[i] *= Sign(i);
            }

            Transform(x, scale);
        }
    }

    /// <summary>Turns every row back in place: x ← Rᵀ x (the inverse of <see cref="Rotate"/>).</summary>
    public static void Unrotate(Span<float> rows, int headDim)
    {
        Check(rows.Length, headDim);
        float scale = 1f / MathF.Sqrt(headDim);
        for (int r = 0; r < rows.Length; r += headDim)
        {
            var x = rows.Slice(r, headDim);
            Transform(x, scale);
            for (int i = 0; i < headDim; i++)
            {
                x[i] *= Sign(i);
            }
        }
    }

    // x ← H x · scale by the in-place fast Walsh-Hadamard transform (butterflies of stride 1, 2, 4, ...).
    private static void Transform(Span<float> x, float scale)
    {
        int n = x.Length;
        for (int h = 1; h < n; h <<= 1)
        {
            for (int i = 0; i < n; i += h << 1)
            {
                for (int j = i; j < i + h; j++)
                {
                    float a = x[j], b = x[j + h];
                    x[j] = a + b;
                    x[j + h] = a - b;
                }
            }
        }

        for (int i = 0; i < n; i++)
        {
            x[i] *= scale;
        }
    }

    private static void Check(int length, int headDim)
    {
        if (!Supports(headDim))
        {
            throw new ArgumentException($"rotation needs a head dimension that is a power of two, got {headDim}");
        }

        if (length % headDim != 0)
        {
            throw new ArgumentException($"{length} floats are not whole rows of {headDim}");
        }
    }
}
