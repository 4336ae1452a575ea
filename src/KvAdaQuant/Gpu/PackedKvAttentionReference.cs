namespace KvAdaQuant.Gpu;

/// <summary>
/// CPU reference of decode attention on the packed GPU layout, in double: every key and value is
/// dequantized from the same bytes the GPU reads, scores q·k / sqrt(D), softmax, weighted sum.
/// </summary>
public static class PackedKvAttentionReference
{
    /// <summary>
    /// Attention of one query per (batch, query head) over all positions of <paramref name="cache"/>.
    /// <paramref name="queries"/> and the result are [batch][queryHeads][headDim].
    /// </summary>
    public static float[] Attend(PackedKvBatch cache, ReadOnlySpan<float> queries)
    {
        ArgumentNullException.ThrowIfNull(cache);
        int d = cache.HeadDim;
        int n = cache.Length;
        int ratio = cache.QueryHeads / cache.KvHeads;
        if (queries.Length != cache.Batch * cache.QueryHeads * d)
        {
            throw new ArgumentException($"queries: expected {cache.Batch * cache.QueryHeads * d} values.", nameof(queries));
        }

        var output = new float[queries.Length];
        var scores = new double[n];
        var acc = new double[d];
        double scale = 1.0 / Math.Sqrt(d);
        for (int b = 0; b < cache.Batch; b++)
        {
            for (int hq = 0; hq < cache.QueryHeads; hq++)
            {
                int h = hq / ratio;
                ReadOnlySpan<float> q = queries.Slice(((b * cache.QueryHeads) + hq) * d, d);
                double max = double.NegativeInfinity;
                for (int t = 0; t < n; t++)
                {
                    double s = 0;
                    for (int i = 0; i < d; i++)
                    {
                        s += q[i] * cache.Key(b, h, t, i);
                    }

                    scores[t] = s * scale;
                    max = Math.Max(max, scores[t]);
                }

                double sum = 0;
                Array.Clear(acc);
                for (int t = 0; t < n; t++)
                {
                    double p = Math.Exp(scores[t] - max);
                    sum += p;
                    for (int i = 0; i < d; i++)
                    {
                        acc[i] += p * cache.Value(b, h, t, i);
                    }
                }

                for (int i = 0; i < d; i++)
                {
                    output[(((b * cache.QueryHeads) + hq) * d) + i] = (float)(acc[i] / sum);
                }
            }
        }

        return output;
    }
}
