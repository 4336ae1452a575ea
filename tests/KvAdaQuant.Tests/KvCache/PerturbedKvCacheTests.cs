using KvAdaQuant.Engine;
using KvAdaQuant.Formats;
using KvAdaQuant.Gpu.Decode;
using KvAdaQuant.KvCache;

namespace KvAdaQuant.Tests.KvCache;

public class PerturbedKvCacheTests
{
    [Fact]
    public void StoredElementsMoveByAtMostTheRelativeBoundAndRepeatPerSeed()
    {
        var layout = new KvLayout(2, 2, 8, 16);
        var rng = new Random(5);
        var keys = Enumerable.Range(0, 3 * 16).Select(_ => (float)((rng.NextDouble() * 4) - 2)).ToArray();
        var values = Enumerable.Range(0, 3 * 16).Select(_ => (float)((rng.NextDouble() * 4) - 2)).ToArray();
        float[] Stored(int seed, bool readValues)
        {
            using var cache = new PerturbedKvCache(new FullPrecisionKvCache(layout, half: false), 1e-3, seed);
            cache.Layers[1].Append(keys, values, 3);
            var dst = new float[3 * 8];
            var all = new List<float>();
            for (int h = 0; h < 2; h++)
            {
                if (readValues)
                {
                    cache.Layers[1].ReadValues(h, 0, 3, dst);
                }
                else
                {
                    cache.Layers[1].ReadKeys(h, 0, 3, dst);
                }

                all.AddRange(dst);
            }

            return [.. all];
        }

        foreach (bool v in new[] { false, true })
        {
            float[] a = Stored(1, v), again = Stored(1, v), other = Stored(2, v);
            float[] original = v ? values : keys;
            Assert.Equal(a, again);
            Assert.NotEqual(a, other);

            // Read back per head: [head][token][8] from rows [token][head*8 + d].
            int changed = 0;
            for (int h = 0; h < 2; h++)
            {
                for (int t = 0; t < 3; t++)
                {
                    for (int d = 0; d < 8; d++)
                    {
                        float o = original[(t * 16) + (h * 8) + d], s = a[(h * 24) + (t * 8) + d];
                        Assert.True(Math.Abs(s - o) <= (1e-3 * Math.Abs(o)) + 1e-7, $"element {t},{h},{d}: {s} vs {o}");
                        changed += s != o ? 1 : 0;
                    }
                }
            }

            Assert.True(changed > 40, $"only {changed} of 48 elements changed");
        }
    }

    [Fact]
    public void ZeroNoiseKeepsLogitsBitIdentical()
    {
        using var model = ModelLoader.Load(Fixtures.Stories260K);
        using var transformer = new Transformer(model, 1);
        int[][] streams = [[1, 300, 301, 302, 303, 304, 305, 306, 307, 308]];
        var plan = KvPlan.Parse("k4v2", model.Config.Layers);
        float[][] plain = DecodeVerification.CpuLogits(transformer, plan, streams, 16, 0, 0);
        using var cache = new PerturbedKvCache(KvCacheFactory.Create(plan, transformer.CacheLayout(16)), 0, 3);
        using var session = new InferenceSession(transformer, cache);
        var wrapped = new List<float>(session.Prefill(streams[0].AsSpan(0, 1)).ToArray());
        for (int i = 1; i < streams[0].Length; i++)
        {
            wrapped.AddRange(session.Decode(streams[0][i]).ToArray());
        }

        Assert.Equal(plain[0], wrapped.ToArray());
    }

    [Fact]
    public void QuantizedCachesAmplifyInputNoiseMoreThanFp16()
    {
        // The property verify-decode's bound rests on: FP16-level noise on K and V barely moves the logits with an FP16
        // cache, and moves them far more once codes cross rounding boundaries in a 1.58-bit cache.
        using var model = ModelLoader.Load(Fixtures.Stories260K);
        using var transformer = new Transformer(model, 2);
        var rng = new Random(9);
        int[][] streams = [.. Enumerable.Range(0, 2).Select(_ => new[] { 1 }.Concat(Enumerable.Range(0, 95).Select(_ => rng.Next(3, 512))).ToArray())];
        double Sensitivity(string kv)
        {
            var plan = KvPlan.Parse(kv, model.Config.Layers);
            float[][] reference = DecodeVerification.CpuLogits(transformer, plan, streams, 96, 0, 0);
            return DecodeVerification.MaxRelativeDifference(DecodeVerification.CpuLogits(transformer, plan, streams, 96, 1.0 / 2048, 1), reference);
        }

        double fp16 = Sensitivity("fp16"), ternary = Sensitivity("k1.58v3");
        Assert.True(fp16 > 0 && fp16 < 1e-2, $"fp16 sensitivity {fp16}");
        Assert.True(ternary > 3 * fp16, $"k1.58v3 sensitivity {ternary} vs fp16 {fp16}");
    }

    [Fact]
    public void EffectiveToleranceIsTwiceTheSensitivityWhenLarger()
    {
        Assert.Equal(1e-2, DecodeVerification.EffectiveTolerance(1e-2, double.NaN));
        Assert.Equal(1e-2, DecodeVerification.EffectiveTolerance(1e-2, 4e-3));
        Assert.Equal(0.2, DecodeVerification.EffectiveTolerance(1e-2, 0.1));
    }

    [Fact]
    public void RejectsNoiseOutsideTheUnitInterval()
    {
        var layout = new KvLayout(1, 1, 8, 4);
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => new PerturbedKvCache(new FullPrecisionKvCache(layout, half: false), 1.5, 0));
        Assert.Contains("relative perturbation", e.Message);
    }
}
