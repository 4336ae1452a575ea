namespace KvAdaQuant.Gpu;

/// <summary>
/// Quantizes full-precision K/V rows into the packed GPU layout: asymmetric min/max, round to nearest,
/// scale = (max - min) / (levels - 1) and min rounded to FP16 first, codes from the rounded pair, so that
/// |x - (scale * code + min)| &lt;= scale / 2 + |min - FP16(min)|.
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

            float min = float.PositiveInfinity, max = float.NegativeInfinity;
            for (int i = 0; i < f.GroupSize; i++)
            {
                float x = perToken ? rows[(token0 * d) + d0 + i] : rows[((token0 + i) * d) + d0];
                if (!float.IsFinite(x))
                {
                    throw new ArgumentException($"{name}: {x} at batch {b}, head {h} cannot be quantized.", name);
                }

                min = Math.Min(min, x);
                max = Math.Max(max, x);
            }

            Half scaleHalf = (Half)((max - min) / (f.Levels - 1));
            Half minHalf = (Half)min;
            if (!Half.IsFinite(scaleHalf) || !Half.IsFinite(minHalf))
            {
                throw new ArgumentException($"{name}: group range [{min}, {max}] at batch {b}, head {h} exceeds FP16.", name);
            }

            double scale = (double)scaleHalf;
            double mn = (double)minHalf;
            uint pair = BitConverter.HalfToUInt16Bits(scaleHalf) | ((uint)BitConverter.HalfToUInt16Bits(minHalf) << 16);
            for (int i = 0; i < f.GroupSize; i++)
            {
                int token = perToken ? token0 : token0 + i;
                int dim = perToken ? d0 + i : d0;
                float x = rows[(token * d) + dim];
                int code = scale > 0 ? (int)Math.Clamp(Math.Round((x - mn) / scale, MidpointRounding.ToEven), 0, f.Levels - 1) : 0;
                PackedKvCodes.Set(dst.Row(b, h, token), f.BitsCode, dim, code);
                dst.Params[dst.ParamIndex(b, h, token, dim)] = pair;
            }
        }

    }
}
