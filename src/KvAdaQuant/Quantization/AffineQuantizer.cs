namespace KvAdaQuant.Quantization;

/// <summary>
/// Round-to-nearest affine quantization of one group with FP16 parameters.
/// Asymmetric (L = levels - 1): zero = min rounded down to FP16, scale = (max - zero) / L rounded up to FP16,
/// code = clamp(round((x - zero) / scale), 0, L), x' = scale * code + zero. Rounding zero down and scale up keeps
/// [min, max] inside the representable range, so |x - x'| &lt;= scale / 2 (plus float rounding of the product).
/// Symmetric, 3 or more levels (qmax = (levels - 1) / 2, e.g. 127 for 8 bits, 7 for 4, 1 for 2 bits and ternary):
/// scale = max|x| / qmax rounded up, code = round(x / scale) + qmax, x' = scale * (code - qmax).
/// Symmetric 1 bit: scale = max|x| rounded up, x' = -scale or +scale (the sign), error &lt;= scale.
/// In every case the error bound is half the effective step (<see cref="Effective"/>).
/// </summary>
public static class AffineQuantizer
{
    /// <summary>The largest magnitude a cached value may have: the FP16 maximum.</summary>
    public const float MaxMagnitude = 65504f;

    /// <summary>
    /// Quantizes <paramref name="count"/> values <c>src[i * stride]</c> into <paramref name="codes"/> (unpacked, one byte each).
    /// Throws <see cref="ArgumentException"/> on NaN, infinity, a magnitude above <see cref="MaxMagnitude"/>, or a range whose scale overflows FP16.
    /// </summary>
    public static QuantParams Quantize(ReadOnlySpan<float> src, int stride, int count, KvBits bits, bool symmetric, Span<byte> codes)
    {
        float min = float.PositiveInfinity, max = float.NegativeInfinity;
        for (int i = 0; i < count; i++)
        {
            float x = src[i * stride];
            if (!float.IsFinite(x) || MathF.Abs(x) > MaxMagnitude)
            {
                throw new ArgumentException($"value {x} at group element {i} is {(float.IsFinite(x) ? "beyond the FP16 range" : "not finite")}: refusing to quantize it");
            }

            min = MathF.Min(min, x);
            max = MathF.Max(max, x);
        }

        int levels = bits.Levels();
        if (!symmetric)
        {
            int top = levels - 1;
            Half zero = RoundDown(min);
            double z = (double)zero;
            Half scale = RoundUp((max - z) / top);
            double s = (double)scale;
            for (int i = 0; i < count; i++)
            {
                double c = s == 0 ? 0 : Math.Round((src[i * stride] - z) / s, MidpointRounding.AwayFromZero);
                codes[i] = (byte)Math.Clamp(c, 0, top);
            }

            return new QuantParams(scale, zero);
        }

        double amax = Math.Max(-min, max);
        if (levels == 2)
        {
            Half scale1 = RoundUp(amax);
            for (int i = 0; i < count; i++)
            {
                codes[i] = (byte)(src[i * stride] >= 0 ? 1 : 0);
            }

            return new QuantParams(scale1, default);
        }

        int qmax = (levels - 1) / 2;
        Half scaleS = RoundUp(amax / qmax);
        double ss = (double)scaleS;
        for (int i = 0; i < count; i++)
        {
            double c = ss == 0 ? 0 : Math.Round(src[i * stride] / ss, MidpointRounding.AwayFromZero);
            codes[i] = (byte)(Math.Clamp(c, -qmax, qmax) + qmax);
        }

        return new QuantParams(scaleS, default);
    }

    /// <summary>The step a and offset b with which a code c dequantizes to a * c + b.</summary>
    public static (float Step, float Offset) Effective(QuantParams p, KvBits bits, bool symmetric)
    {
        float scale = (float)p.Scale;
        if (!symmetric)
        {
            return (scale, (float)p.Zero);
        }

        int levels = bits.Levels();
        return levels == 2 ? (2 * scale, -scale) : (scale, -((levels - 1) / 2) * scale);
    }

    /// <summary>Dequantizes <paramref name="count"/> codes into <c>dst[i * stride]</c>.</summary>
    public static void Dequantize(ReadOnlySpan<byte> codes, QuantParams p, KvBits bits, bool symmetric, Span<float> dst, int stride, int count)
    {
        var (a, b) = Effective(p, bits, symmetric);
        for (int i = 0; i < count; i++)
        {
            dst[i * stride] = (a * codes[i]) + b;
        }
    }

    private static Half RoundDown(double x)
    {
        var h = (Half)x;
        return (double)h > x ? Half.BitDecrement(h) : h;
    }

    private static Half RoundUp(double x)
    {
        var h = (Half)x;
        if ((double)h < x)
        {
            h = Half.BitIncrement(h);
        }

        if (!Half.IsFinite(h))
        {
            throw new ArgumentException($"group range needs a scale of {x:G6}, beyond FP16 (max 65504): the values are too spread for this bit width");
        }

        return h;
    }
}
