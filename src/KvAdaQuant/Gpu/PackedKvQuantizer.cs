using KvAdaQuant.Quantization;

namespace KvAdaQuant.Gpu;

/// <summary>
/// Quantizes full-precision K/V rows into the packed GPU layout with the CPU cache's own asymmetric quantizer
/// (<see cref="AffineQuantizer"/>: zero = min rounded down to FP16, scale rounded up, round to nearest code),
/// so the bytes equal what QuantizedTensorStore holds for each head and |x - (scale * code + zero)| &lt;= scale / 2.
/// </summary>
public static class PackedKvQuantizer
{
    /// <summary>
    /// Builds a batch from <paramref name="keys"/> and <paramref name="values"/>, each [batch][kvHeads][positions][headDim]:
    /// the first positions - <paramref name="residualTokens"/> are quantized, the rest kept as FP16.
    /// </summary>
    /// <exception cref="ArgumentException">NaN or infinity in the input, a group range beyond FP16, or shapes that disagree.</exception>
    public static PackedKvBatch Quantize(
        ReadOnlySpan<float> keys, ReadOnlySpan<float> values, int batch, int kvHeads, int queryHeads, int positions, int residualTokens,
        PackedKvFormat keyFormat, PackedKvFormat valueFormat)
    {
        ArgumentNullException.ThrowIfNull(keyFormat);
        ArgumentNullException.ThrowIfNull(valueFormat);
        int headDim = keyFormat.HeadDim;
        if (valueFormat.HeadDim != headDim)
        {
            throw new ArgumentException("valueFormat: head dimension differs from keyFormat's.", nameof(valueFormat));
        }

        if (residualTokens < 0 || residualTokens > positions)
        {
            throw new ArgumentException($"residualTokens: {residualTokens} is outside 0..{positions}.", nameof(residualTokens));
        }

        long expected = (long)batch * kvHeads * positions * headDim;
        if (keys.Length != expected || values.Length != expected)
        {
            throw new ArgumentException($"keys: expected {expected} values for [{batch}][{kvHeads}][{positions}][{headDim}].", nameof(keys));
        }

        int quantized = positions - residualTokens;
        var k = new PackedKvTensor(keyFormat, batch, kvHeads, quantized);
        var v = new PackedKvTensor(valueFormat, batch, kvHeads, quantized);
        var rk = new ushort[(long)batch * kvHeads * residualTokens * headDim];
        var rv = new ushort[rk.LongLength];
        for (int b = 0; b < batch; b++)
        {
            for (int h = 0; h < kvHeads; h++)
            {
                int headStart = ((b * kvHeads) + h) * positions * headDim;
                QuantizeHead(keys.Slice(headStart, quantized * headDim), k, b, h, "keys");
                QuantizeHead(values.Slice(headStart, quantized * headDim), v, b, h, "values");
                int residualStart = ((b * kvHeads) + h) * residualTokens * headDim;
                for (int i = 0; i < residualTokens * headDim; i++)
                {
                    rk[residualStart + i] = ToHalfBits(keys[headStart + (quantized * headDim) + i], "keys");
                    rv[residualStart + i] = ToHalfBits(values[headStart + (quantized * headDim) + i], "values");
                }
            }
        }

        return new PackedKvBatch(k, v, rk, rv, residualTokens, queryHeads);
    }

    private static ushort ToHalfBits(float x, string name)
    {
        if (!float.IsFinite(x) || Math.Abs(x) > 65504f)
        {
            throw new ArgumentException($"{name}: value {x} is not finite in FP16.", name);
        }

        return BitConverter.HalfToUInt16Bits((Half)x);
    }

    private static void QuantizeHead(ReadOnlySpan<float> rows, PackedKvTensor dst, int b, int h, string name)
    {
        PackedKvFormat f = dst.Format;
        int d = f.HeadDim;
        int tokens = dst.Tokens;
        bool perToken = f.Axis == PackedKvAxis.PerToken;
        int groupsAcross = perToken ? tokens * (d / f.GroupSize) : (tokens / f.GroupSize) * d;
        KvBits bits = f.BitsCode switch
        {
            1 => KvBits.One,
            PackedKvFormat.TernaryCode => KvBits.Ternary,
            2 => KvBits.Two,
            3 => KvBits.Three,
            4 => KvBits.Four,
            5 => KvBits.Five,
            6 => KvBits.Six,
            _ => KvBits.Eight,
        };
        Span<byte> codes = stackalloc byte[f.GroupSize];
        for (int grp = 0; grp < groupsAcross; grp++)
        {
            // Element i of group grp: per token (token, d0 + i); per channel (t0 + i, channel).
            int token0, d0;
            if (perToken)
            {
                token0 = grp / (d / f.GroupSize);
                d0 = grp % (d / f.GroupSize) * f.GroupSize;
            }
            else
            {
                token0 = grp / d * f.GroupSize;
                d0 = grp % d;
            }

            int start = (token0 * d) + d0;
            int stride = perToken ? 1 : d;
            QuantParams qp;
            try
            {
                qp = AffineQuantizer.Quantize(rows[start..], stride, f.GroupSize, bits, symmetric: false, codes);
            }
            catch (ArgumentException e)
            {
                throw new ArgumentException($"{name}: batch {b}, head {h}: {e.Message}", name, e);
            }

            uint pair = BitConverter.HalfToUInt16Bits(qp.Scale) | ((uint)BitConverter.HalfToUInt16Bits(qp.Zero) << 16);
            for (int i = 0; i < f.GroupSize; i++)
            {
                int token = perToken ? token0 : token0 + i;
                int dim = perToken ? d0 + i : d0;
                PackedKvCodes.Set(dst.Row(b, h, token), f.BitsCode, dim, codes[i]);
                dst.Params[dst.ParamIndex(b, h, token, dim)] = pair;
            }
        }
    }
}
