using System.Numerics.Tensors;

namespace KvAdaQuant.Quantization;

/// <summary>
/// Quantize-then-dequantize of whole K or V matrices, exactly as a cache with a given <see cref="KvSpec"/> would
/// return them: values are first rounded to FP16 (the cache's input precision), the first Sinks tokens and the
/// residual window stay FP16, the rest is quantized per group; a <see cref="KvSpec.Rotate"/> spec rotates the rows first
/// and turns the result back (<see cref="KvRotation"/>). Used by the analysis to measure ||A - Q(A)||.
/// </summary>
public static class KvQuantizer
{
    /// <summary>
    /// Writes Q(A) for a [tokens, headDim] row-major <paramref name="matrix"/> (one head's keys or values) into
    /// <paramref name="result"/> (same shape). Throws <see cref="ArgumentException"/> on a spec that does not fit
    /// headDim, on NaN/Inf, or on magnitudes beyond FP16.
    /// </summary>
    public static void RoundTrip(ReadOnlySpan<float> matrix, int tokens, int headDim, KvSpec spec, Span<float> result)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(tokens);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(headDim);
        int n = tokens * headDim;
        if (matrix.Length < n || result.Length < n)
        {
            throw new ArgumentException($"matrix and result need {tokens} x {headDim} = {n} floats, got {matrix.Length} and {result.Length}");
        }

        if (spec.Problem(headDim) is { } problem)
        {
            throw new ArgumentException($"spec {spec}: {problem}");
        }

        for (int i = 0; i < n; i++)
        {
            if (!float.IsFinite(matrix[i]) || MathF.Abs(matrix[i]) > AffineQuantizer.MaxMagnitude)
            {
                throw new ArgumentException($"element [{i / headDim}, {i % headDim}] = {matrix[i]} is not a finite FP16-range value: refusing to quantize it");
            }
        }

        if (spec.Rotate)
        {
            // As the cache does: the rows rotated, through the spec's quantizer, turned back.
            var rotated = new float[n];
            matrix[..n].CopyTo(rotated);
            KvRotation.Rotate(rotated, headDim);
            RoundTrip(rotated, tokens, headDim, spec with { Rotate = false }, result);
            KvRotation.Unrotate(result[..n], headDim);
            return;
        }

        if (spec.Bits == KvBits.Fp32)
        {
            matrix[..n].CopyTo(result);
            return;
        }

        // Everything enters the cache as FP16.
        for (int i = 0; i < n; i++)
        {
            result[i] = (float)(Half)matrix[i];
        }

        if (spec.Bits == KvBits.Fp16)
        {
            return;
        }

        int first = Math.Min(spec.Sinks, tokens);
        int q = spec.QuantizedTokens(tokens);
        var region = result.Slice(first * headDim, q * headDim);
        Span<byte> codes = stackalloc byte[Math.Max(headDim, spec.Axis == QuantAxis.PerChannel ? Math.Min(spec.TokenGroup, 4096) : 1)];
        if (spec.Axis == QuantAxis.PerToken)
        {
            int g = spec.ChannelGroup(headDim);
            for (int t = 0; t < q; t++)
            {
                for (int c0 = 0; c0 < headDim; c0 += g)
                {
                    var grp = region.Slice((t * headDim) + c0, g);
                    var p = AffineQuantizer.Quantize(grp, 1, g, spec.Bits, spec.Symmetric, codes);
                    AffineQuantizer.Dequantize(codes, p, spec.Bits, spec.Symmetric, grp, 1, g);
                }
            }

            return;
        }

        int chunk = spec.TokenGroup;
        byte[]? big = chunk > codes.Length ? new byte[chunk] : null;
        Span<byte> chunkCodes = big ?? codes;
        for (int t0 = 0; t0 < q; t0 += chunk)
        {
            for (int c = 0; c < headDim; c++)
            {
                var col = region[((t0 * headDim) + c)..];
                var p = AffineQuantizer.Quantize(col, headDim, chunk, spec.Bits, spec.Symmetric, chunkCodes);
                AffineQuantizer.Dequantize(chunkCodes, p, spec.Bits, spec.Symmetric, col, headDim, chunk);
            }
        }
    }

    /// <summary>Frobenius norm ||A - Q(A)|| of a [tokens, headDim] matrix under <paramref name="spec"/>.</summary>
    public static double FrobeniusError(ReadOnlySpan<float> matrix, int tokens, int headDim, KvSpec spec)
    {
        var q = new float[tokens * headDim];
        RoundTrip(matrix, tokens, headDim, spec, q);
        double s = 0;
        for (int i = 0; i < q.Length; i++)
        {
            double d = matrix[i] - q[i];
            s += d * d;
        }

        return Math.Sqrt(s);
    }

    /// <summary>||A - Q(A)|| / ||A|| (0 for an all-zero matrix).</summary>
    public static double RelativeFrobeniusError(ReadOnlySpan<float> matrix, int tokens, int headDim, KvSpec spec)
    {
        double norm = Math.Sqrt(TensorPrimitives.SumOfSquares(matrix[..(tokens * headDim)]));
        double err = FrobeniusError(matrix, tokens, headDim, spec);
        return norm == 0 ? 0 : err / norm;
    }
}
