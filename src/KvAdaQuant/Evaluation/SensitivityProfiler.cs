using KvAdaQuant.Allocation;
using KvAdaQuant.KvCache;

namespace KvAdaQuant.Evaluation;

/// <summary>
/// Measures a <see cref="SensitivityProfile"/>: for every layer, K or V, and width of the range, the mean KL divergence from
/// the FP32 reference (over the reference's calibration positions) when only that tensor is quantized and every other
/// tensor stays FP32. Costs layers x 2 x widths passes over the calibration text.
/// </summary>
public static class SensitivityProfiler
{
    /// <summary>Width that keeps a tensor unquantized during profiling (FP32, like the reference).</summary>
    public const double Unquantized = 32;

    /// <summary>Measures; <paramref name="cacheFor"/> builds a cache for an allocation.</summary>
    public static SensitivityProfile Measure(KlReference calibration, BitRange range, Func<BitAllocation, Func<KvLayout, IKvCache>> cacheFor, string source, Action<int, int>? progress = null)
    {
        int layers = calibration.Transformer.Config.Layers;
        var baseline = BitAllocation.Uniform(layers, Unquantized, Unquantized);
        var k = new double[layers][];
        var v = new double[layers][];
        int total = layers * 2 * range.Widths.Count;
        int done = 0;
        for (int l = 0; l < layers; l++)
        {
            k[l] = new double[range.Widths.Count];
            v[l] = new double[range.Widths.Count];
            for (int j = 0; j < range.Widths.Count; j++)
            {
                k[l][j] = Kl(calibration, cacheFor(baseline.With(l, KvTensorKind.Key, range.Widths[j])));
                progress?.Invoke(++done, total);
                v[l][j] = Kl(calibration, cacheFor(baseline.With(l, KvTensorKind.Value, range.Widths[j])));
                progress?.Invoke(++done, total);
            }
        }

        return new SensitivityProfile(range, k, v, source);
    }

    /// <summary>Mean KL, or positive infinity when the cache refuses the run (non-finite values in the forward pass).</summary>
    private static double Kl(KlReference calibration, Func<KvLayout, IKvCache> cache)
    {
        try
        {
            return calibration.Compare(cache).MeanKl;
        }
        catch (KvCacheException)
        {
            return double.PositiveInfinity;
        }
    }
}
