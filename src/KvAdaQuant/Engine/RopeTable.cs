using KvAdaQuant.Model;

namespace KvAdaQuant.Engine;

/// <summary>
/// RoPE angles per position, computed as ggml's CPU rope does (so that positions rotate to the same bits as in
/// llama.cpp): theta starts at the position (a float) and is multiplied, pair by pair, by theta_scale =
/// base^(-2/headDim) in float; each pair's angle is theta divided by its frequency factor; cos and sin are the C
/// library's cosf/sinf. Llama 3 rope scaling becomes per-pair frequency factors, as llama.cpp's converter writes them
/// into <c>rope_freqs</c> when the file does not carry them.
/// </summary>
public sealed class RopeTable
{
    private readonly float _thetaScale;
    private readonly float[]? _factors;

    /// <summary>Builds the table for <paramref name="config"/>; <paramref name="freqFactors"/> divides each frequency (GGUF rope_freqs).</summary>
    public RopeTable(ModelConfig config, float[]? freqFactors = null)
    {
        Half = config.HeadDim / 2;
        _thetaScale = MathF.Pow(config.RopeTheta, -2.0f / config.HeadDim);
        if (freqFactors is not null)
        {
            if (freqFactors.Length < Half)
            {
                throw new ArgumentException($"rope frequency factors: {freqFactors.Length} values, the head needs {Half}", nameof(freqFactors));
            }

            _factors = freqFactors;
        }
        else if (config.RopeScaling is { } s)
        {
            _factors = Llama3Factors(config, s);
        }
    }

    /// <summary>Pairs per head.</summary>
    public int Half { get; }

    /// <summary>Fills cos/sin (Half each) for position <paramref name="pos"/>.</summary>
    public void Angles(int pos, Span<float> cos, Span<float> sin)
    {
        float theta = pos;
        for (int i = 0; i < Half; i++)
        {
            float a = _factors is null ? theta : theta / _factors[i];
            cos[i] = MathF.Cos(a);
            sin[i] = MathF.Sin(a);
            theta *= _thetaScale;
        }
    }

    // Llama 3.1 scaling as frequency factors: 1 for short wavelengths, `factor` for long ones, a smooth blend between.
    private static float[] Llama3Factors(ModelConfig config, RopeScaling s)
    {
        var f = new float[config.HeadDim / 2];
        double lowWavelen = s.OriginalContextLength / s.LowFreqFactor;
        double highWavelen = s.OriginalContextLength / s.HighFreqFactor;
        for (int i = 0; i < f.Length; i++)
        {
            double freq = 1.0 / Math.Pow(config.RopeTheta, 2.0 * i / config.HeadDim);
            double wavelen = 2 * Math.PI / freq;
            if (wavelen < highWavelen)
            {
                f[i] = 1f;
            }
            else if (wavelen > lowWavelen)
            {
                f[i] = s.Factor;
            }
            else
            {
                double smooth = ((s.OriginalContextLength / wavelen) - s.LowFreqFactor) / (s.HighFreqFactor - s.LowFreqFactor);
                f[i] = (float)(1.0 / (((1 - smooth) / s.Factor) + smooth));
            }
        }

        return f;
    }
}
