using KvAdaQuant.Analysis;
using KvAdaQuant.KvCache;
using KvAdaQuant.Quantization;

namespace KvAdaQuant.Tests.Analysis;

/// <summary>The analysis cache: exact attention at full precision, no overflow on large logits, refuses specs it cannot emulate.</summary>
public class RoundTripKvCacheTests
{
    [Fact]
    public void FullPrecisionSpecsAttendLikeTheFp32Store()
    {
        var layout = new KvLayout(1, 2, 8, 16);
        var rng = new Random(7);
        float[] Rand(int n) => Enumerable.Range(0, n).Select(_ => (float)((rng.NextDouble() * 4) - 2)).ToArray();
        var k = Rand(10 * layout.KvDim);
        var v = Rand(10 * layout.KvDim);
        using var reference = new FullPrecisionKvCache(layout, half: false);
        using var cache = new RoundTripKvCache(layout, KvSpec.Fp32, KvSpec.Fp32);
        reference.Layers[0].Append(k, v, 10);
        cache.Layers[0].Append(k, v, 10);
        var q = Rand(3 * 8);
        var want = new float[24];
        var got = new float[24];
        for (int g = 0; g < 2; g++)
        {
            reference.Layers[0].Attend(g, q, 3, 9, want, new float[3 * 9]);
            cache.Layers[0].Attend(g, q, 3, 9, got, new float[3 * 9]);
            for (int i = 0; i < 24; i++)
            {
                Assert.True(Math.Abs(want[i] - got[i]) < 1e-5, $"head {g} element {i}: {got[i]} vs {want[i]}");
            }
        }
    }

    [Fact]
    public void LargeLogitsDoNotOverflowTheSoftmax()
    {
        var layout = new KvLayout(1, 1, 8, 4);
        using var cache = new RoundTripKvCache(layout, KvSpec.Fp32, KvSpec.Fp32);
        float[] k = [.. Enumerable.Repeat(50f, 8), .. Enumerable.Repeat(-50f, 8)];
        float[] v = [.. Enumerable.Repeat(1f, 8), .. Enumerable.Repeat(3f, 8)];
        cache.Layers[0].Append(k, v, 2);
        var output = new float[8];
        cache.Layers[0].Attend(0, Enumerable.Repeat(40f, 8).ToArray(), 1, 2, output, new float[2]);

        // Scores 16000*sqrt(8)/... far beyond exp's range: the first key takes all the weight.
        Assert.All(output, x => Assert.Equal(1f, x));
    }

    [Fact]
    public void SpecsItCannotEmulateAreRefused()
    {
        var layout = new KvLayout(1, 1, 32, 4);
        Assert.Throws<NotSupportedException>(() => new RoundTripKvCache(layout, new KvSpec(KvBits.Four, 32, QuantAxis.PerChannel), KvSpec.Fp32));
        Assert.Throws<NotSupportedException>(() => new RoundTripKvCache(layout, KvSpec.Fp32, new KvSpec(KvBits.Four, 32, Residual: 16)));
        var e = Assert.Throws<ArgumentException>(() => new RoundTripKvCache(layout, new KvSpec(KvBits.Four, 12), KvSpec.Fp32));
        Assert.Contains("12", e.Message);
    }
}
