using KvAdaQuant.KvCache;
using KvAdaQuant.Quantization;

namespace KvAdaQuant.Tests.KvCache;

/// <summary>Fused attention on packed data against dequantize-then-attend (float64 reference over ReadKeys/ReadValues).</summary>
public class FusedAttentionTests
{
    private const int HeadDim = 32;
    private const int KvHeads = 2;
    private const int Rep = 3;

    public static TheoryData<string> Specs()
    {
        var data = new TheoryData<string>();
        foreach (var b in new[] { "1", "1.58", "2", "3", "4", "5", "6", "8" })
        {
            data.Add($"k{b}v{b}");
            data.Add($"k{b}v{b}:sym:g8");
            data.Add($"k{b}v{b}:pc:g8:r5:sink3");
            data.Add($"k{b}v{b}:sym:pc:g16:sink2");
            data.Add($"k{b}v{b}:g16:r7:sink4");
        }

        data.Add("k4v2:kpc:kg16:kr16:vr16");
        data.Add("k16v2:r4");
        data.Add("k2v32:sink1");
        data.Add("k1.58v4:vsym:ksink6");

        // Rotated rows (KvRotation): the cache attends with the rotated query and turns the output back; the reference
        // reads the rows turned back, so both sides mean the same attention.
        data.Add("k4v2:rot");
        data.Add("k2v2:pc:g8:r5:sink3:rot");
        data.Add("k4v2:krot:r6");
        data.Add("k3v4:vrot:sym:sink2");
        data.Add("k16v2:rot");
        return data;
    }

    /// <summary>Specs the AVX-512 kernels specialize (2/4/8 bits per token, head dims 64 and 128), with sinks and residual windows.</summary>
    public static TheoryData<string, int> FusedSpecs()
    {
        var data = new TheoryData<string, int>();
        foreach (int hd in new[] { 64, 128 })
        {
            foreach (var spec in new[] { "k4v2", "k4v4", "k8v8", "k2v2", "k2v4", "k4v2:g64", $"k4v2:g{hd}", "k8v8:sym:g16", "k4v2:sym", "k4v2:r5:sink3", "k2v8:g8:r7:sink4", "k4v2:kpc:vr3", "k16v2:r4", "k4v32:ksink2", "fp16", "fp32", "k4v2:rot", "k2v4:rot:r5:sink3" }.Distinct())
            {
                data.Add(spec, hd);
            }
        }

        return data;
    }

    [Theory]
    [MemberData(nameof(FusedSpecs))]
    public void SpecializedKernelsEqualDequantizeThenAttend(string text, int headDim) => CheckAgainstReference(text, headDim, headDim == 64 ? 5 : 4, 2);

    [Theory]
    [MemberData(nameof(Specs))]
    public void FusedEqualsDequantizeThenAttendAcrossFlushesAndSinks(string text) => CheckAgainstReference(text, HeadDim, Rep, 2);

    private static void CheckAgainstReference(string text, int headDim, int rep, int kvHeads)
    {
        var plan = KvPlan.Parse(text, 1);
        var layout = new KvLayout(1, kvHeads, headDim, 80);
        using var cache = KvCacheFactory.Create(plan, layout);
        var layer = cache.Layers[0];
        var rng = new Random(text.Aggregate(17, (h, ch) => (h * 31) + ch) + headDim); // stable across runs (string.GetHashCode differs per process)
        int[] chunks = [1, 2, 7, 1, 13, 1, 1, 19, 3, 1, 24];
        var q = new float[rep * headDim];
        var output = new float[rep * headDim];
        var scores = new float[rep * layout.Capacity];
        var keys = new float[layout.Capacity * headDim];
        var values = new float[layout.Capacity * headDim];
        foreach (int n in chunks)
        {
            var k = Random(rng, n * layout.KvDim, 2);
            var v = Random(rng, n * layout.KvDim, 1);
            layer.Append(k, v, n);
            foreach (int length in new[] { layer.Length, Math.Max(1, layer.Length - 5) })
            {
                for (int g = 0; g < kvHeads; g++)
                {
                    Random(rng, q.Length, 1).CopyTo(q, 0);
                    layer.Attend(g, q, rep, length, output, scores);
                    layer.ReadKeys(g, 0, length, keys);
                    layer.ReadValues(g, 0, length, values);
                    var want = Reference(q, keys, values, length, layout.Scale, rep, headDim);
                    double scale = want.Max(Math.Abs);
                    for (int i = 0; i < want.Length; i++)
                    {
                        Assert.True(Math.Abs(output[i] - want[i]) <= 1e-5 * scale, $"{text}: length {length}, head {g}, element {i}: fused {output[i]} vs reference {want[i]}");
                    }
                }
            }
        }
    }

    [Theory]
    [InlineData("k4v2:r5:sink3", 64)]
    [InlineData("k8v8:sym", 128)]
    [InlineData("fp16", 128)]
    [InlineData("k4v2:rot", 64)]
    public void FusedAttendAllocatesNothing(string text, int headDim) =>
        Assert.Equal(0, AttendAllocation.OfTwentyAttends(text, headDim, AttentionPrecision.Fp32));

    [Theory]
    [InlineData("k4v2:pc:g8:r5:sink3")]
    [InlineData("k3v5:g16:r7:sink4")]
    [InlineData("k1.58v6:sym")]
    [InlineData("k4v2:pc:g8:r5:sink3:rot")]
    [InlineData("k3v5:g16:r7:sink4:krot")]
    public void CachedRowsEqualKvQuantizerRoundTrip(string text)
    {
        var plan = KvPlan.Parse(text, 1);
        var layout = new KvLayout(1, 1, HeadDim, 64);
        using var cache = new QuantizedKvCache(plan, layout);
        var rng = new Random(5);
        var k = Random(rng, 50 * HeadDim, 3);
        var v = Random(rng, 50 * HeadDim, 1);
        for (int t = 0; t < 50; t += 10)
        {
            cache.Layers[0].Append(k.AsSpan(t * HeadDim), v.AsSpan(t * HeadDim), 10);
        }

        var got = new float[50 * HeadDim];
        var want = new float[50 * HeadDim];
        cache.Layers[0].ReadKeys(0, 0, 50, got);
        KvQuantizer.RoundTrip(k, 50, HeadDim, plan.Layers[0].K, want);
        Assert.Equal(want, got);
        cache.Layers[0].ReadValues(0, 0, 50, got);
        KvQuantizer.RoundTrip(v, 50, HeadDim, plan.Layers[0].V, want);
        Assert.Equal(want, got);
    }

    [Theory]
    [InlineData(float.NaN, "non-finite V value NaN at position 3 + element 37")]
    [InlineData(float.PositiveInfinity, "non-finite V value")]
    [InlineData(1e6f, "beyond the FP16 range")]
    public void NonFiniteOrOutOfRangeValuesAreRejected(float bad, string message)
    {
        var layout = new KvLayout(1, KvHeads, HeadDim, 16);
        using var cache = new QuantizedKvCache(KvPlan.Parse("k4v2", 1), layout);
        var k = new float[2 * layout.KvDim];
        var v = new float[2 * layout.KvDim];
        cache.Layers[0].Append(k, v, 2);
        cache.Layers[0].Append(k, v, 1);
        v[37] = bad;
        var e = Assert.Throws<KvValueException>(() => cache.Layers[0].Append(k, v, 2));
        Assert.Contains(message, e.Message);
        Assert.Equal(3, cache.Layers[0].Length);
    }

    private static float[] Random(Random rng, int n, double scale) =>
        Enumerable.Range(0, n).Select(_ => (float)(scale * ((rng.NextDouble() * 2) - 1 + (rng.NextDouble() < 0.05 ? 3 : 0)))).ToArray();

    private static double[] Reference(float[] q, float[] keys, float[] values, int length, float scale, int rep, int headDim)
    {
        var o = new double[rep * headDim];
        var s = new double[length];
        for (int r = 0; r < rep; r++)
        {
            for (int j = 0; j < length; j++)
            {
                double d = 0;
                for (int c = 0; c < headDim; c++)
                {
                    d += (double)q[(r * headDim) + c] * keys[(j * headDim) + c];
                }

                s[j] = d * scale;
            }

            double max = s.Max(), sum = 0;
            for (int j = 0; j < length; j++)
            {
                s[j] = Math.Exp(s[j] - max);
                sum += s[j];
            }

            for (int j = 0; j < length; j++)
            {
                for (int c = 0; c < headDim; c++)
                {
                    o[(r * headDim) + c] += s[j] / sum * values[(j * headDim) + c];
                }
            }
        }

        return o;
    }
}
