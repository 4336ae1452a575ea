namespace KvAdaQuant.Allocation;

/// <summary>
/// Measured damage of quantizing one tensor alone: for every layer, K or V, and width of <see cref="Range"/>, the mean
/// KL divergence of the next-token distribution from the unquantized model's when only that tensor is quantized; positive
/// infinity where the quantized cache refused the run (non-finite values), so that no plan picks that width.
/// </summary>
public sealed record SensitivityProfile
{
    /// <summary>Creates the profile; <paramref name="keyKl"/>[layer][width index] and likewise <paramref name="valueKl"/>.</summary>
    public SensitivityProfile(BitRange range, IReadOnlyList<IReadOnlyList<double>> keyKl, IReadOnlyList<IReadOnlyList<double>> valueKl, string source)
    {
        if (keyKl.Count == 0 || keyKl.Count != valueKl.Count)
        {
            throw new ArgumentException($"sensitivity profile: {keyKl.Count} K layers and {valueKl.Count} V layers");
        }

        foreach (var row in keyKl.Concat(valueKl))
        {
            if (row.Count != range.Widths.Count || row.Any(x => double.IsNaN(x) || x < 0) || row.All(double.IsPositiveInfinity))
            {
                throw new ArgumentException($"sensitivity profile: every tensor needs {range.Widths.Count} non-negative KL values, one per width of {range}, at least one finite (infinite = the cache failed at that width)");
            }
        }

        Range = range;
        KeyKl = keyKl;
        ValueKl = valueKl;
        Source = source;
    }

    /// <summary>The widths measured.</summary>
    public BitRange Range { get; }

    /// <summary>KL per layer and width, K quantized alone.</summary>
    public IReadOnlyList<IReadOnlyList<double>> KeyKl { get; }

    /// <summary>KL per layer and width, V quantized alone.</summary>
    public IReadOnlyList<IReadOnlyList<double>> ValueKl { get; }

    /// <summary>What was measured on (model, calibration file, tokens).</summary>
    public string Source { get; }

    /// <summary>Layers.</summary>
    public int Layers => KeyKl.Count;

    /// <summary>The measured KL of one tensor at one width of the range.</summary>
    public double Kl(int layer, KvTensorKind kind, double bits)
    {
        int j = Range.Widths.ToList().IndexOf(bits);
        if (j < 0)
        {
            throw new ArgumentException($"sensitivity profile: width {BitAllocation.Format(bits)} was not measured (range {Range})");
        }

        return (kind == KvTensorKind.Key ? KeyKl : ValueKl)[layer][j];
    }

    /// <summary>The additive prediction of an allocation's KL: the sum of its tensors' measured KL.</summary>
    public double PredictedKl(BitAllocation a)
    {
        double sum = 0;
        for (int l = 0; l < Layers; l++)
        {
            sum += Kl(l, KvTensorKind.Key, a.KeyBits[l]) + Kl(l, KvTensorKind.Value, a.ValueBits[l]);
        }

        return sum;
    }
}
