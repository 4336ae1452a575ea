using KvAdaQuant.Gpu;

namespace KvAdaQuant.Tests.Gpu;

public class PackedKvAttentionReferenceTests
{
    private static (float[] K, float[] V, float[] Q) Data(int seed, int b, int kvHeads, int qHeads, int positions)
    {
        var rng = new Random(seed);
        float Next() => (float)((rng.NextDouble() * 4) - 2);
        var k = Enumerable.Range(0, b * kvHeads * positions * 128).Select(_ => Next()).ToArray();
        var v = Enumerable.Range(0, k.Length).Select(_ => Next()).ToArray();
        var q = Enumerable.Range(0, b * qHeads * 128).Select(_ => Next()).ToArray();
        return (k, v, q);
    }

    // Independent formulation: dequantize whole tensors first, then plain softmax attention with GQA.
    private static double[] DequantizeThenAttend(PackedKvBatch cache, float[] q)
    {
        int n = cache.Length, ratio = cache.QueryHeads / cache.KvHeads;
        var result = new double[q.Length];
        for (int b = 0; b < cache.Batch; b++)
        {
            for (int h = 0; h < cache.KvHeads; h++)
            {
                var k = new double[n, 128];
                var v = new double[n, 128];
                for (int t = 0; t < n; t++)
                {
                    for (int d = 0; d < 128; d++)
                    {
                        k[t, d] = cache.Key(b, h, t, d);
                        v[t, d] = cache.Value(b, h, t, d);
                    }
                }

                for (int r = 0; r < ratio; r++)
                {
                    int qOff = ((b * cache.QueryHeads) + (h * ratio) + r) * 128;
                    var w = new double[n];
                    for (int t = 0; t < n; t++)
                    {
                        for (int d = 0; d < 128; d++)
                        {
                            w[t] += q[qOff + d] * k[t, d] / Math.Sqrt(128);
                        }
                    }

                    double max = w.Max();
                    double sum = w.Sum(s => Math.Exp(s - max));
                    for (int t = 0; t < n; t++)
                    {
                        for (int d = 0; d < 128; d++)
                        {
                            result[qOff + d] += Math.Exp(w[t] - max) / sum * v[t, d];
                        }
                    }
                }
            }
        }

        return result;
    }

    [Theory]
    [InlineData("4:g64:tok", "2:g64:tok", 70, 6)]
    [InlineData("3:g32:chan", "1.58:g64:tok", 96, 32)]
    [InlineData("8:g128:tok", "5:g32:chan", 64, 0)]
    public void ReferenceEqualsDequantizeThenAttend(string kText, string vText, int positions, int residual)
    {
        var (k, v, q) = Data(5, 2, 2, 8, positions);
        PackedKvBatch cache = PackedKvQuantizer.Quantize(k, v, 2, 2, 8, positions, residual, PackedKvFormat.Parse(kText, 128), PackedKvFormat.Parse(vText, 128));
        float[] got = PackedKvAttentionReference.Attend(cache, q);
        double[] want = DequantizeThenAttend(cache, q);
        for (int i = 0; i < got.Length; i++)
        {
            Assert.True(Math.Abs(got[i] - want[i]) <= 1e-6 * (1 + Math.Abs(want[i])), $"element {i}: {got[i]} vs {want[i]}");
        }
    }

    [Fact]
    public void MoreBitsGiveSmallerErrorAgainstUnquantizedAttention()
    {
        var (k, v, q) = Data(9, 1, 2, 4, 128);
        double Error(string spec)
        {
            var f = PackedKvFormat.Parse(spec, 128);
            PackedKvBatch quantized = PackedKvQuantizer.Quantize(k, v, 1, 2, 4, 128, 0, f, f);
            PackedKvBatch exact = PackedKvQuantizer.Quantize(k, v, 1, 2, 4, 128, 128, f, f);
            float[] a = PackedKvAttentionReference.Attend(quantized, q), b = PackedKvAttentionReference.Attend(exact, q);
            return Math.Sqrt(a.Zip(b, (x, y) => (double)(x - y) * (x - y)).Sum() / b.Sum(y => (double)y * y));
        }

        double e2 = Error("2"), e4 = Error("4"), e8 = Error("8");
        Assert.True(e8 < e4 && e4 < e2, $"{e8} {e4} {e2}");
        Assert.True(e8 < 0.01, $"k8v8 error {e8}");
    }
}
