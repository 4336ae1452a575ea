using KvAdaQuant.KvCache;
using KvAdaQuant.Numerics;

namespace KvAdaQuant.Tests.KvCache;

/// <summary>The attention step runner of <c>kvaq bench --attention</c> and the bench project's attention benchmarks.</summary>
public class AttentionStepRunnerTests
{
    public static TheoryData<string, AttentionPrecision> Caches => new()
    {
        { "fp16", AttentionPrecision.Fp32 },
        { "fp32", AttentionPrecision.Fp32 },
        { "k4v2", AttentionPrecision.Fp32 },
        { "k8v8:r32:sink4", AttentionPrecision.Fp32 },
        { "k4v2", AttentionPrecision.Int8 },
        { "k4v2", AttentionPrecision.Int8Values },
        { "k4v4", AttentionPrecision.Int8Values },
    };

    [Theory]
    [MemberData(nameof(Caches))]
    public void StepOutputEqualsAttendOfTheCacheForEveryHead(string kv, AttentionPrecision attention)
    {
        // 3 layers x 2 KV heads x 4 query heads, head dim 64, 300 positions (past the 256-position fill batches).
        const int Layers = 3, KvHeads = 2, Rep = 4, Hd = 64, Ctx = 300;
        var layout = new KvLayout(Layers, KvHeads, Hd, Ctx);
        using var cache = KvCacheFactory.Create(KvPlan.Parse(kv, Layers), layout, attention);
        AttentionStepRunner.Fill(cache.Layers, layout.KvDim, Ctx);
        using var pool = new WorkerPool(2);
        var runner = new AttentionStepRunner(cache.Layers, KvHeads, Rep, Hd, Ctx, threads: 2);
        var scores = new float[Rep * Ctx];
        var expected = new float[Rep * Hd];
        foreach (var p in new WorkerPool?[] { pool, null })
        {
            for (int l = 0; l < Layers; l++)
            {
                runner.Step(l, p);
                for (int g = 0; g < KvHeads; g++)
                {
                    cache.Layers[l].Attend(g, runner.Queries.Slice(g * Rep * Hd, Rep * Hd), Rep, Ctx, expected, scores);
                    Assert.Equal(
                        expected.Select(BitConverter.SingleToInt32Bits),
                        runner.Output.Slice(g * Rep * Hd, Rep * Hd).ToArray().Select(BitConverter.SingleToInt32Bits));
                }
            }
        }
    }

    [Theory]
    [InlineData("fp16")]
    [InlineData("k4v2")]
    public void StepOutputIsAttentionOverTheCachedRows(string kv)
    {
        // Softmax(q k^T / sqrt(hd)) V in float64 over the rows the cache returns: the runner attends the real data.
        const int KvHeads = 2, Rep = 2, Hd = 64, Ctx = 200;
        var layout = new KvLayout(2, KvHeads, Hd, Ctx);
        using var cache = KvCacheFactory.Create(KvPlan.Parse(kv, 2), layout, AttentionPrecision.Fp32);
        AttentionStepRunner.Fill(cache.Layers, layout.KvDim, Ctx);
        var runner = new AttentionStepRunner(cache.Layers, KvHeads, Rep, Hd, Ctx, threads: 1);
        runner.Step(1, null);
        var keys = new float[Ctx * Hd];
        var values = new float[Ctx * Hd];
        for (int g = 0; g < KvHeads; g++)
        {
            cache.Layers[1].ReadKeys(g, 0, Ctx, keys);
            cache.Layers[1].ReadValues(g, 0, Ctx, values);
            for (int r = 0; r < Rep; r++)
            {
                var q = runner.Queries.Slice(((g * Rep) + r) * Hd, Hd).ToArray();
                var s = new double[Ctx];
                for (int t = 0; t < Ctx; t++)
                {
                    for (int c = 0; c < Hd; c++)
                    {
                        s[t] += (double)q[c] * keys[(t * Hd) + c];
                    }

                    s[t] /= Math.Sqrt(Hd);
                }

                double max = s.Max(), sum = s.Sum(x => Math.Exp(x - max));
                for (int c = 0; c < Hd; c++)
                {
                    double o = 0;
                    for (int t = 0; t < Ctx; t++)
                    {
                        o += Math.Exp(s[t] - max) / sum * values[(t * Hd) + c];
                    }

                    Assert.Equal(o, runner.Output[(((g * Rep) + r) * Hd) + c], 1e-4);
                }
            }
        }
    }

    [Theory]
    [InlineData("k4v2", 64)]
    [InlineData("fp16", 64)]
    [InlineData("k4v2:r32:sink4", 128)]
    public void BytesOfTheCycledLayersAreThePlansAccountingAndTheCachesByteCount(string kv, int hd)
    {
        const int KvHeads = 2, Ctx = 300;
        var plan = KvPlan.Parse(kv, 4);
        var picked = AttentionStepRunner.StreamedLayers(plan, KvHeads, hd, Ctx);
        Assert.Equal([0, 1, 2, 3], picked); // 4 small layers: far under 256 MiB, so all of them
        var sub = AttentionStepRunner.Subplan(plan, picked);
        using var cache = KvCacheFactory.Create(sub, new KvLayout(picked.Length, KvHeads, hd, Ctx), AttentionPrecision.Fp32);
        AttentionStepRunner.Fill(cache.Layers, KvHeads * hd, Ctx);
        long perLayer = sub.BytesAt(KvHeads, hd, Ctx) / picked.Length;
        foreach (var layer in cache.Layers)
        {
            Assert.Equal(perLayer, layer.ByteCount);
        }

        // By hand: FP16 is 2 bytes per element; k4v2 packs 4-bit keys (hd / 2 bytes a row) and 2-bit values (hd / 4), each
        // with an FP16 scale and zero point per group of 32 channels; r32:sink4 keeps 36 positions in FP16 (r32 and sink4).
        long expected = kv switch
        {
            "fp16" => 2L * KvHeads * Ctx * hd * 2,
            "k4v2" => (long)KvHeads * Ctx * ((hd / 2) + (hd / 4) + (2 * (hd / 32) * 4)),
            _ => (KvHeads * (Ctx - 36L) * ((hd / 2) + (hd / 4) + (2 * (hd / 32) * 4))) + (2L * KvHeads * 36 * hd * 2),
        };
        Assert.Equal(expected, perLayer);
    }

    [Fact]
    public void StreamedLayersAreTheFewestThatMake256MiBSpreadOverTheModel()
    {
        // llama-3.2-1b shape (8 KV heads, head dim 64, 16 layers): k4v2 at 32k is 16.78 MB a layer, so 16 layers
        // (capped at the model's); FP16 is 67.1 MB, so 4; at 4k k4v2 all 16 layers are only 33.6 MB.
        Assert.Equal(16, AttentionStepRunner.StreamedLayers(KvPlan.Parse("k4v2", 16), 8, 64, 32768).Length);
        Assert.Equal([2, 6, 10, 14], AttentionStepRunner.StreamedLayers(KvPlan.Parse("fp16", 16), 8, 64, 32768));
        Assert.Equal(16, AttentionStepRunner.StreamedLayers(KvPlan.Parse("k4v2", 16), 8, 64, 4096).Length);
        Assert.Equal([16], AttentionStepRunner.StreamedLayers(KvPlan.Parse("fp32", 32), 8, 128, 32768)); // 268 MB: one layer

        // A plan whose layers differ: FP16 in layers 0-3 (67.1 MB each at 32k), k2v2 in 4-7 (12.6 MB each). With a
        // 150 MB target: one layer (4) 12.6 MB, two (2, 6) 79.7 MB, three (1, 4, 6) 92.3 MB, four (1, 3, 5, 7) 159.4 MB.
        var mixed = KvPlan.Parse("fp16", 8).Layers.Take(4).Concat(KvPlan.Parse("k2v2", 8).Layers.Take(4)).ToArray();
        var plan = new KvPlan(mixed, "mixed", "test");
        var picked = AttentionStepRunner.StreamedLayers(plan, 8, 64, 32768, targetBytes: 150_000_000);
        Assert.Equal([1, 3, 5, 7], picked);
        Assert.Equal((2 * 67_108_864L) + (2 * 12_582_912L), AttentionStepRunner.Subplan(plan, picked).BytesAt(8, 64, 32768));
        Assert.Equal(8, AttentionStepRunner.StreamedLayers(plan, 8, 64, 32768, targetBytes: 1L << 40).Length);
    }

    [Fact]
    public void FillIsSeededAndDiffersAcrossLayers()
    {
        var layout = new KvLayout(2, 2, 32, 600);
        using var a = KvCacheFactory.Create("fp32", layout);
        using var b = KvCacheFactory.Create("fp32", layout);
        AttentionStepRunner.Fill(a.Layers, layout.KvDim, 600);
        AttentionStepRunner.Fill(b.Layers, layout.KvDim, 600);
        var ka = new float[600 * 32];
        var kb = new float[600 * 32];
        var k1 = new float[600 * 32];
        a.Layers[0].ReadKeys(1, 0, 600, ka);
        b.Layers[0].ReadKeys(1, 0, 600, kb);
        a.Layers[1].ReadKeys(1, 0, 600, k1);
        Assert.Equal(ka, kb);
        Assert.NotEqual(ka, k1);
        Assert.All(ka, x => Assert.InRange(x, -2f, 2f));
        var va = new float[600 * 32];
        a.Layers[0].ReadValues(0, 0, 600, va);
        Assert.All(va, x => Assert.InRange(x, -1f, 1f));
        Assert.Equal(600, a.Layers[1].Length);
    }

    [Fact]
    public void APoolWiderThanTheScratchIsRefused()
    {
        var layout = new KvLayout(1, 2, 64, 16);
        using var cache = KvCacheFactory.Create("fp32", layout);
        using var pool = new WorkerPool(3);
        var runner = new AttentionStepRunner(cache.Layers, 2, 1, 64, 16, threads: 2);
        Assert.Throws<ArgumentException>(() => runner.Step(0, pool));
    }
}

/// <summary>The runner's allocation check, in the collection of tests that measure allocation and run alone.</summary>
[Collection(NonParallelCollection.Name)]
public class AttentionStepAllocationTests
{
    [Theory]
    [InlineData("fp16", AttentionPrecision.Fp32)]
    [InlineData("k4v2", AttentionPrecision.Fp32)]
    [InlineData("k4v2", AttentionPrecision.Int8Values)]
    public void AStepAllocatesNothing(string kv, AttentionPrecision attention)
    {
        var layout = new KvLayout(2, 2, 64, 300);
        using var cache = KvCacheFactory.Create(KvPlan.Parse(kv, 2), layout, attention);
        AttentionStepRunner.Fill(cache.Layers, layout.KvDim, 300);
        using var pool = new WorkerPool(2);
        var runner = new AttentionStepRunner(cache.Layers, 2, 4, 64, 300, threads: 2);
        runner.Step(0, pool);
        runner.Step(1, null);
        // 20 steps a window (AllocationCheck: the fp16 case once saw a one-off runtime allocation in a full parallel run).
        Assert.Equal(0, AllocationCheck.OfFirstCleanWindow(() =>
        {
            for (int i = 0; i < 10; i++)
            {
                runner.Step(i % 2, pool);
                runner.Step(i % 2, null);
            }
        }));
    }
}
