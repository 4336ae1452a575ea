using KvAdaQuant.Quantization;

namespace KvAdaQuant.Tests.Quantization;

/// <summary>The whole-matrix quantize/dequantize API used by the analysis.</summary>
public class KvQuantizerTests
{
    private static float[] Matrix(int tokens, int headDim, int seed)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, tokens * headDim).Select(i => (float)((rng.NextDouble() - 0.5) * (1 + (i % headDim)))).ToArray();
    }

    [Fact]
    public void SinksAndResidualStayFp16AndTheMiddleIsQuantized()
    {
        const int T = 40, D = 32;
        var a = Matrix(T, D, 1);
        var q = new float[T * D];
        KvQuantizer.RoundTrip(a, T, D, new KvSpec(KvBits.Two, 32, Residual: 8, Sinks: 4), q);
        for (int i = 0; i < T * D; i++)
        {
            int t = i / D;
            if (t < 4 || t >= T - 8)
            {
                Assert.Equal((float)(Half)a[i], q[i]);
            }
        }

        Assert.Contains(Enumerable.Range(4 * D, 28 * D), i => q[i] != (float)(Half)a[i]);
    }

    [Fact]
    public void PerChannelQuantizesWholeChunksOnly()
    {
        const int T = 50, D = 16;
        var a = Matrix(T, D, 2);
        var q = new float[T * D];
        var spec = new KvSpec(KvBits.Four, 16, QuantAxis.PerChannel);
        Assert.Equal(48, spec.QuantizedTokens(T));
        KvQuantizer.RoundTrip(a, T, D, spec, q);
        for (int i = 48 * D; i < T * D; i++)
        {
            Assert.Equal((float)(Half)a[i], q[i]);
        }

        // each channel of each 16-token chunk is one group: its error is within half its step
        var col = new float[16];
        var codes = new byte[16];
        for (int c = 0; c < D; c++)
        {
            for (int t = 0; t < 16; t++)
            {
                col[t] = (float)(Half)a[(t * D) + c];
            }

            var p = AffineQuantizer.Quantize(col, 1, 16, KvBits.Four, false, codes);
            var (step, _) = AffineQuantizer.Effective(p, KvBits.Four, false);
            for (int t = 0; t < 16; t++)
            {
                Assert.True(MathF.Abs(col[t] - q[(t * D) + c]) <= (step / 2) + 1e-6f);
            }
        }
    }

    [Fact]
    public void ErrorFallsAsBitsRise()
    {
        var a = Matrix(64, 64, 3);
        double last = double.MaxValue;
        foreach (var bits in new[] { KvBits.One, KvBits.Ternary, KvBits.Two, KvBits.Three, KvBits.Four, KvBits.Five, KvBits.Six, KvBits.Eight })
        {
            double e = KvQuantizer.RelativeFrobeniusError(a, 64, 64, new KvSpec(bits, 64));
            Assert.True(e < last, $"{bits}: {e} not below {last}");
            last = e;
        }

        Assert.True(last < 0.01);
        Assert.Equal(0, KvQuantizer.FrobeniusError(a, 64, 64, KvSpec.Fp32));
    }

    [Fact]
    public void BadInputIsRejected()
    {
        var a = Matrix(4, 32, 4);
        var q = new float[a.Length];
        Assert.Contains("does not divide", Assert.Throws<ArgumentException>(() => KvQuantizer.RoundTrip(a, 4, 32, new KvSpec(KvBits.Four, 24), q)).Message);
        a[37] = float.NaN;
        Assert.Contains("element [1, 5]", Assert.Throws<ArgumentException>(() => KvQuantizer.RoundTrip(a, 4, 32, new KvSpec(KvBits.Four), q)).Message);
    }
}
