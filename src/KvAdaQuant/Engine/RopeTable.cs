using KvAdaQuant.Model;

namespace KvAdaQuant.Engine;

/// <summary>RoPE inverse frequencies of a model (with Llama 3 scaling or per-dimension factors applied) and angles per position.</summary>
public sealed class RopeTable
{
    private readonly double[] _invFreq;

    /// <summary>Builds the table for <paramref name="config"/>; <paramref name="freqFactors"/> divides each frequency (GGUF rope_freqs).</summary>
    public RopeTable(ModelConfig config, float[]? freqFactors = null)
    {
        int half = config.HeadDim / 2;
        _invFreq = new double[half];
        for (int i = 0; i < half; i++)
        {
            double f = 1.0 / Math.Pow(config.RopeTheta, 2.0 * i / config.HeadDim);
            if (freqFactors is not null)
            {
                f /= freqFactors[i];
            }
            else if (config.RopeScaling is { } s)
            {
                double lowWavelen = s.OriginalContextLength / s.LowFreqFactor;
                double highWavelen = s.OriginalContextLength / s.HighFreqFactor;
                double wavelen = 2 * Math.PI / f;
                if (wavelen > lowWavelen)
                {
                    f /= s.Factor;
                }
                else if (wavelen >= highWavelen)
                {
                    double smooth = ((s.OriginalContextLength / wavelen) - s.LowFreqFactor) / (s.HighFreqFactor - s.LowFreqFactor);
                    f = ((1 - smooth) * f / s.Factor) + (smooth * f);
                }
            }

            _invFreq[i] = f;
        }
    }

    /// <summary>Pairs per head.</summary>
    public int Half => _invFreq.Length;

    /// <summary>Fills cos/sin (Half each) for position <paramref name="pos"/>.</summary>
    public void Angles(int pos, Span<float> cos, Span<float> sin)
    {
        for (int i = 0; i < _invFreq.Length; i++)
        {
            double a = pos * _invFreq[i];
            cos[i] = (float)Math.Cos(a);
            sin[i] = (float)Math.Sin(a);
        }
    }
}
