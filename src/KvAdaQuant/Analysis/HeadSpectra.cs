namespace KvAdaQuant.Analysis;

/// <summary>
/// Spectra of one tensor kind (K, K before RoPE, V) in one layer, one entry per KV head, with the
/// per-layer mean, min and max across heads.
/// </summary>
public sealed class HeadSpectra
{
    /// <summary>Builds the summary of <paramref name="heads"/>.</summary>
    public HeadSpectra(IReadOnlyList<MatrixSpectrum> heads)
    {
        if (heads.Count == 0)
        {
            throw new ArgumentException("at least one head is needed");
        }

        Frobenius = heads.Select(h => h.Frobenius).ToArray();
        Spectral = heads.Select(h => h.Spectral).ToArray();
        SingularValues = heads.Select(h => h.SingularValues).ToArray();
        FrobeniusStats = SpreadStatistics.Of(Frobenius);
        SpectralStats = SpreadStatistics.Of(Spectral);
        ChannelPeak = heads.Select(h => h.ChannelPeak).ToArray();
        ChannelPeakStats = SpreadStatistics.Of(ChannelPeak);
    }

    /// <summary>Per head, <see cref="MatrixSpectrum.ChannelPeak"/>: the largest channel norm over the root mean square channel norm.</summary>
    public double[] ChannelPeak { get; }

    /// <summary>Mean, min and max of <see cref="ChannelPeak"/> across heads.</summary>
    public SpreadStatistics ChannelPeakStats { get; }

    /// <summary>Frobenius norm per head.</summary>
    public double[] Frobenius { get; }

    /// <summary>Spectral norm (largest singular value) per head.</summary>
    public double[] Spectral { get; }

    /// <summary>All singular values per head, descending.</summary>
    public double[][] SingularValues { get; }

    /// <summary>Mean, min and max of <see cref="Frobenius"/> across heads.</summary>
    public SpreadStatistics FrobeniusStats { get; }

    /// <summary>Mean, min and max of <see cref="Spectral"/> across heads.</summary>
    public SpreadStatistics SpectralStats { get; }

    /// <summary>
    /// Singular value index i (0-based) across heads: mean, min and max of the i-th largest singular value.
    /// </summary>
    public SpreadStatistics[] SingularValueBand()
    {
        int n = SingularValues.Min(s => s.Length);
        return Enumerable.Range(0, n).Select(i => SpreadStatistics.Of(SingularValues.Select(s => s[i]).ToArray())).ToArray();
    }
}
