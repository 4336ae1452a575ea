using KvAdaQuant.Engine;
using KvAdaQuant.Evaluation;
using KvAdaQuant.Formats;
using KvAdaQuant.KvCache;
using KvAdaQuant.Numerics;
using KvAdaQuant.Quantization;

namespace KvAdaQuant.Tests.KvCache;

/// <summary>
/// <see cref="AttentionPrecision.Int8"/> through the cache and the real engine: attention outputs close to the FP32
/// path, the same greedy tokens and nearly the same perplexity on stories3M, and clear errors where it cannot apply.
/// </summary>
public class Int8AttentionTests
{
    [Theory]
    [InlineData("k4v2", 64)]
    [InlineData("k4v2", 128)]
    [InlineData("k8v8", 64)]
    [InlineData("k2v2", 64)]
    [InlineData("k4v2:sym:r16:sink4", 64)]
    [InlineData("k4v2:rot", 64)]
    public void AttentionOutputIsCloseToTheFp32Path(string kv, int hd)
    {
        // Outputs are convex combinations of values in [-1, 1]; the int8 scores move each logit by far less than 0.05.
        foreach (var (length, worst) in WorstDifferences(kv, hd, 300, 1, AttentionPrecision.Fp32, AttentionPrecision.Int8, hd + kv.Length, [1, 9, 150, 300]))
        {
            Assert.True(worst < 0.02, $"{kv} hd {hd} length {length}: max |int8 - fp32| = {worst}");
            Assert.True(worst > 0 || length == 1, "the int8 path should not be the FP32 path");
        }
    }

    [SkippableTheory]
    [InlineData("k4v2", 64)]
    [InlineData("k4v2", 128)]
    [InlineData("k2v2", 64)]
    [InlineData("k4v2:sym:r16:sink4", 64)]
    [InlineData("k4v2:g64", 128)]
    [InlineData("k4v4", 64)]
    [InlineData("k4v4", 128)]
    [InlineData("k8v4:r16:sink4", 64)]
    [InlineData("k4v2:rot", 64)]
    [InlineData("k4v2:rot", 128)]
    [InlineData("k4v4:rot", 128)]
    [InlineData("k4v4:vrot", 128)]
    public void ByteValueSumsAreCloseToTheInt8Path(string kv, int hd)
    {
        // The byte-weight value sum against the FP32 one after the same int8 scores. Values in [-1, 1] with 2-bit steps
        // of about 0.67 (rounding up to 0.33 per value). Each token's byte weight is off by up to half a step of its
        // block's largest weight, whatever its own size, so with a peaky softmax (sum of weights near 1) the outputs move
        // by up to about 0.02 here (measured 0.013-0.018): an order below the codes' rounding. 4-bit values: steps of about
        // 0.13 and byte weights up to 127, so half a weight step times the largest code is 7.5 / 127 of the block's
        // largest weight.
        // The codes are unsigned (0..3, 0..15), so a token's byte-weight rounding error would add a part common to all of a
        // group's channels (its mean code times the error); the kernel carries each residual at the middle code in the
        // FP32 offsets, which leaves errors of residual x (code - middle), with no common part. Rotated values (`rot`,
        // `vrot`) are summed as R v and turned back by R^T, which would gather a common part into a few channels: before
        // that change k4v4:rot at head dim 128 erred 0.10-0.27 (max) against k4v4's 0.013-0.034, with the same RMS; after
        // it both 0.005-0.011 (RMS 0.0014-0.0026), k4v2 and k4v2:rot 0.003-0.008 (four seeds). Held to 0.02 max and 0.005 RMS.
        Skip.IfNot(KvAdaQuant.Numerics.Int8ValueKernels.IsSupported, "AVX-512 VBMI not available");
        foreach (var (length, worst, rms) in Differences(kv, hd, 301, 0, AttentionPrecision.Int8, AttentionPrecision.Int8Values, hd + (3 * kv.Length), [1, 9, 150, 299, 301]))
        {
            Assert.True(worst < 0.02, $"{kv} hd {hd} length {length}: max |bytes - int8| = {worst}");
            Assert.True(rms < 0.005, $"{kv} hd {hd} length {length}: RMS of bytes - int8 = {rms}");
            Assert.True(worst > 0 || length < 150, "the byte path should not be the FP32 value sum");
        }
    }

    [SkippableTheory]
    [InlineData("k4v2")]
    [InlineData("k4v2:rot")]
    [InlineData("k4v4")]
    [InlineData("k4v4:rot")]
    public void ByteValueErrorsOverSeedsAtHeadDim128(string kv)
    {
        // The figures the README quotes for the residuals at the middle code (head dim 128, seeds 1-3 and the other test's):
        // run with --logger "console;verbosity=detailed" to see them; the same bounds as ByteValueSumsAreCloseToTheInt8Path.
        Skip.IfNot(KvAdaQuant.Numerics.Int8ValueKernels.IsSupported, "AVX-512 VBMI not available");
        foreach (int seed in new[] { 1, 2, 3, 128 + (3 * kv.Length) })
        {
            var d = Differences(kv, 128, 301, 0, AttentionPrecision.Int8, AttentionPrecision.Int8Values, seed, [9, 150, 299, 301]).ToList();
            Console.WriteLine($"{kv} hd 128 seed {seed}: max {string.Join(" ", d.Select(x => x.Worst.ToString("F4")))} | RMS {string.Join(" ", d.Select(x => x.Rms.ToString("F4")))}");
            Assert.All(d, x => Assert.True(x.Worst < 0.02 && x.Rms < 0.005, $"{kv} seed {seed} length {x.Length}: max {x.Worst}, RMS {x.Rms}"));
        }
    }

    // Two stores of one spec with attention precisions a and b (b's special path checked to be in use), filled alike:
    // keys ~ U(-2, 2), values ~ U(-1, 1), queries ~ U(-1, 1) x 3 (peaky softmax), capacity positions (sinks, quantized
    // rows, residual window); per length, the largest |output_a - output_b| of KV head kvHead.
    private static IEnumerable<(int Length, double Worst)> WorstDifferences(string kv, int hd, int capacity, int kvHead, AttentionPrecision a, AttentionPrecision b, int seed, int[] lengths)
        => Differences(kv, hd, capacity, kvHead, a, b, seed, lengths).Select(d => (d.Length, d.Worst));

    // As WorstDifferences, with the root-mean-square difference over the outputs beside the largest.
    private static IEnumerable<(int Length, double Worst, double Rms)> Differences(string kv, int hd, int capacity, int kvHead, AttentionPrecision a, AttentionPrecision b, int seed, int[] lengths)
    {
        const int Heads = 2, Rep = 4;
        var layout = new KvLayout(1, Heads, hd, capacity);
        var spec = KvPlan.Parse(kv, 1).Layers[0];
        using var sa = new QuantizedKvStore(layout, spec, a);
        using var sb = new QuantizedKvStore(layout, spec, b);
        Assert.True(b == AttentionPrecision.Int8Values ? sb.UsesInt8Values && !sa.UsesInt8Values : sb.UsesInt8 && !sa.UsesInt8);
        var rng = new Random(seed);
        var k = Enumerable.Range(0, capacity * Heads * hd).Select(_ => (float)((rng.NextDouble() * 4) - 2)).ToArray();
        var v = Enumerable.Range(0, capacity * Heads * hd).Select(_ => (float)((rng.NextDouble() * 2) - 1)).ToArray();
        sa.Append(k, v, capacity);
        sb.Append(k, v, capacity);
        var q = Enumerable.Range(0, Rep * hd).Select(_ => (float)((rng.NextDouble() * 2) - 1) * 3).ToArray();
        var scores = new float[Rep * capacity];
        var result = new List<(int, double, double)>();
        foreach (int length in lengths)
        {
            var oa = new float[Rep * hd];
            var ob = new float[Rep * hd];
            sa.Attend(kvHead, q, Rep, length, oa, scores);
            sb.Attend(kvHead, q, Rep, length, ob, scores);
            result.Add((length, oa.Zip(ob).Max(p => Math.Abs(p.First - p.Second)), Math.Sqrt(oa.Zip(ob).Average(p => (double)(p.First - p.Second) * (p.First - p.Second)))));
        }

        return result;
    }

    [Theory]
    [InlineData("fp16", "--attn-int8-values: the int8 attention path reads quantized keys")]
    [InlineData("k4v8", "--attn-int8-values: no layer of the KV plan 'k4v8' has values the byte-weight kernel reads")]
    [InlineData("k3v2", "--attn-int8-values: no layer of the KV plan 'k3v2' has keys")]
    public void PlansWithoutByteValuesAreRejectedByName(string kv, string message)
    {
        var layout = new KvLayout(2, 2, 64, 32);
        var e = Assert.Throws<ArgumentException>(() => KvCacheFactory.Create(KvPlan.Parse(kv, 2), layout, AttentionPrecision.Int8Values));
        Assert.StartsWith(message, e.Message);
    }

    [Theory]
    [InlineData("k4v2:r8:sink2", 64)]
    [InlineData("k8v8:sym", 128)]
    [InlineData("k4v4", 32)]
    public void Int8AttendAllocatesNothing(string kv, int hd)
    {
        Assert.Equal(0, AttendAllocation.OfTwentyAttends(kv, hd, AttentionPrecision.Int8));
        if (!kv.StartsWith("k8v8", StringComparison.Ordinal) && KvAdaQuant.Numerics.Int8ValueKernels.IsSupported)
        {
            Assert.Equal(0, AttendAllocation.OfTwentyAttends(kv, hd, AttentionPrecision.Int8Values));
        }
    }

    [Fact]
    public void GreedyTokensOfStories3MAreUnchangedFor32Tokens()
    {
        var (a, b) = GreedyTokensOfStories3M("k4v4", AttentionPrecision.Fp32, AttentionPrecision.Int8, 32, c => c.Int8Layers);
        Assert.Equal(a, b);
    }

    [Theory]
    [InlineData("k4v2", 0.015)]
    [InlineData("k8v8", 0.005)]
    public void PerplexityOfStories3MMovesByLessThanAStatedShare(string kv, double share)
    {
        // WikiText-2, first 20,000 characters, chunks of 256 (3,810 tokens scored). Measured: k4v2 494.58 (fp32) vs
        // 491.69 (int8), -0.6 %; k8v8 380.39 vs 380.02, -0.1 %. For scale: the FP32 cache gives 379.93.
        var p = PerplexitiesOfStories3M(kv, AttentionPrecision.Fp32, AttentionPrecision.Int8);
        double rel = Math.Abs(p[1] - p[0]) / p[0];
        Assert.True(rel < share, $"{kv}: perplexity fp32 attention {p[0]}, int8 {p[1]}: {rel:P2} apart");
        Assert.NotEqual(p[0], p[1]);
    }

    [SkippableTheory]
    [InlineData("k4v2", 0.015)]
    [InlineData("k8v2", 0.01)]
    [InlineData("k4v4", 0.015)]
    [InlineData("k8v4", 0.01)]
    public void ByteValuesMovePerplexityOfStories3MByLessThanAStatedShare(string kv, double share)
    {
        // Same text and chunks as above. Measured: k4v2 494.59 (FP32 attention), 491.69 (int8), 497.91 (int8 + byte
        // values with the fused SoftExp, +0.67 %); k8v2 468.82, 464.15, 466.81 (-0.43 %); 4-bit values (weights up to
        // 127): k4v4 398.55, 397.78, 395.80 (-0.69 %); k8v4 382.18, 383.70, 383.95 (+0.46 %).
        Skip.IfNot(KvAdaQuant.Numerics.Int8ValueKernels.IsSupported, "AVX-512 VBMI not available");
        var p = PerplexitiesOfStories3M(kv, AttentionPrecision.Fp32, AttentionPrecision.Int8, AttentionPrecision.Int8Values);
        double rel = Math.Abs(p[2] - p[0]) / p[0];
        Assert.True(rel < share, $"{kv}: perplexity fp32 attention {p[0]}, int8 + byte values {p[2]}: {rel:P2} apart");
        Assert.NotEqual(p[1], p[2]);
    }

    [SkippableTheory]
    [InlineData("k4v2", 16)]
    [InlineData("k4v4", 24)]
    public void ByteValuesKeepTheInt8GreedyTokensOfStories3M(string kv, int tokens)
    {
        // Measured: the first 18 tokens from BOS agree with the int8 path (k4v2; FP32 and int8 attention agree on 15), the
        // first 44 with k4v4. (Before the byte weights' residuals were carried at the middle code: 25 and 26; where a
        // greedy path leaves another at a near tie is not a measure of the error, which that change cut 3-5x.)
        Skip.IfNot(KvAdaQuant.Numerics.Int8ValueKernels.IsSupported, "AVX-512 VBMI not available");
        var (a, b) = GreedyTokensOfStories3M(kv, AttentionPrecision.Int8, AttentionPrecision.Int8Values, tokens, c => c.Int8ValueLayers);
        Assert.Equal(a, b);
    }

    // Greedy tokens from BOS on stories3M with the plan under attention precisions a and b; layersUsing(b's cache) must
    // count every layer (the special path is in use).
    private static (IReadOnlyList<int> A, IReadOnlyList<int> B) GreedyTokensOfStories3M(string kv, AttentionPrecision a, AttentionPrecision b, int n, Func<QuantizedKvCache, int> layersUsing)
    {
        using var model = ModelLoader.Load(Fixtures.Stories3M);
        using var transformer = new Transformer(model, 2);
        var layout = transformer.CacheLayout(64);
        var plan = KvPlan.Parse(kv, model.Config.Layers);
        using var sa = new InferenceSession(transformer, KvCacheFactory.Create(plan, layout, a));
        using var sb = new InferenceSession(transformer, KvCacheFactory.Create(plan, layout, b));
        Assert.Equal(model.Config.Layers, layersUsing((QuantizedKvCache)sb.Cache));
        var ta = new Generator(sa, model.Tokenizer!).Generate([1], n, new Sampler()).Tokens;
        var tb = new Generator(sb, model.Tokenizer!).Generate([1], n, new Sampler()).Tokens;
        return (ta, tb);
    }

    // Perplexity of stories3M on the first 20,000 characters of WikiText-2 in chunks of 256, per attention precision.
    private static double[] PerplexitiesOfStories3M(string kv, params AttentionPrecision[] precisions)
    {
        using var model = ModelLoader.Load(Fixtures.Stories3M);
        using var transformer = new Transformer(model, 2);
        var text = File.ReadAllText(Fixtures.Path("data", "wikitext-2", "wiki.test.raw"))[..20000];
        var tokens = model.Tokenizer!.Encode(text, addBos: true);
        var plan = KvPlan.Parse(kv, model.Config.Layers);
        var results = precisions.Select(p => PerplexityEvaluator.Evaluate(transformer, tokens, 256, l => KvCacheFactory.Create(plan, l, p), model.Tokenizer.BosToken)).ToArray();
        Assert.All(results, r => Assert.Equal(results[0].TokensScored, r.TokensScored));
        return results.Select(r => r.Perplexity).ToArray();
    }

    [Theory]
    [InlineData("fp16", "stores them as full-precision floats")]
    [InlineData("fp32", "stores them as full-precision floats")]
    [InlineData("k3v2", "no layer of the KV plan 'k3v2'")]
    [InlineData("k4v2:kpc", "no layer of the KV plan")]
    public void PlansWithoutInt8KeysAreRejectedByName(string kv, string message)
    {
        var layout = new KvLayout(2, 2, 64, 32);
        var e = Assert.Throws<ArgumentException>(() => KvCacheFactory.Create(KvPlan.Parse(kv, 2), layout, AttentionPrecision.Int8));
        Assert.StartsWith("--attn-int8: ", e.Message);
        Assert.Contains(message, e.Message);
    }

    [Theory]
    [InlineData("k4v2", 64, AttentionPrecision.Int8)]
    [InlineData("k4v2:r16:sink4", 128, AttentionPrecision.Int8Values)]
    [InlineData("k8v8:sym", 128, AttentionPrecision.Int8)]
    [InlineData("k4v4", 32, AttentionPrecision.Int8Values)]
    [InlineData("k2v2", 64, AttentionPrecision.Int8)]
    public void Int8KeysLieInTilesAndReadBackAsTheFp32PathsRows(string kv, int hd, AttentionPrecision precision)
    {
        // 53 positions: the last tile of each head partly filled; keys written one flush at a time into their tiles.
        const int Heads = 2, Length = 53, Rep = 4;
        var layout = new KvLayout(1, Heads, hd, Length);
        var spec = KvPlan.Parse(kv, 1).Layers[0];
        using var rows = new QuantizedKvStore(layout, spec, AttentionPrecision.Fp32);
        using var tiled = new QuantizedKvStore(layout, spec, precision);
        Assert.True(tiled.UsesInt8 && tiled.KeysInTiles && !tiled.ValuesInTiles);
        // FP32 attention tiles its keys only where the column kernel scores them (2-/4-bit keys at head dim 64).
        Assert.Equal(ColumnScoreKernels.IsSupported && hd == 64 && kv.StartsWith('k') && kv[1] is '2' or '4', rows.KeysInTiles);
        var rng = new Random(hd + kv.Length);
        var k = Enumerable.Range(0, Length * Heads * hd).Select(_ => (float)((rng.NextDouble() * 4) - 2)).ToArray();
        var v = Enumerable.Range(0, Length * Heads * hd).Select(_ => (float)((rng.NextDouble() * 2) - 1)).ToArray();
        for (int t = 0; t < Length; t++)
        {
            rows.Append(k.AsSpan(t * Heads * hd), v.AsSpan(t * Heads * hd), 1);
            tiled.Append(k.AsSpan(t * Heads * hd), v.AsSpan(t * Heads * hd), 1);
        }

        Assert.Equal(rows.ByteCount, tiled.ByteCount);
        for (int h = 0; h < Heads; h++)
        {
            var a = new float[Length * hd];
            var b = new float[Length * hd];
            rows.ReadKeys(h, 0, Length, a);
            tiled.ReadKeys(h, 0, Length, b);
            Assert.Equal(a, b);
        }

        // The tiled keys' FP32 scores (the row-at-a-time path) against the row layout's fused ones.
        var spec1 = spec.K;
        using var plain = new QuantizedTensorStore(layout, spec1);
        using var tiles = new QuantizedTensorStore(layout, spec1, int8Keys: true);
        Assert.True(tiles.IsTiled && !tiles.IsFused && !plain.IsTiled);
        plain.Append(k, Length);
        tiles.Append(k, Length);
        var q = Enumerable.Range(0, Rep * hd).Select(_ => (float)((rng.NextDouble() * 2) - 1)).ToArray();
        var sa = new float[Rep * Length];
        var sb = new float[Rep * Length];
        plain.Scores(1, q, Rep, Length, sa);
        tiles.Scores(1, q, Rep, Length, sb);
        for (int i = 0; i < sa.Length; i++)
        {
            Assert.True(Math.Abs(sa[i] - sb[i]) <= 1e-4 * (1 + Math.Abs(sa[i])), $"{kv}: score {i}: tiled {sb[i]} vs rows {sa[i]}");
        }
    }

    [Fact]
    public void Int8ScoresOnAKeyStoreWithoutTilesAreRefusedByName()
    {
        var layout = new KvLayout(1, 2, 64, 32);
        using var store = new QuantizedTensorStore(layout, KvPlan.Parse("k4v2", 1).Layers[0].K);
        Assert.True(store.SupportsInt8 && !store.IsTiled);
        store.Append(new float[32 * 2 * 64], 32);
        var e = Assert.Throws<InvalidOperationException>(() => store.ScoresInt8(0, new float[4 * 64], 4, 32, new float[4 * 32], new float[4]));
        Assert.Contains("KeyTiles", e.Message);
        Assert.Contains("int8Keys: true", e.Message);
    }

    [Fact]
    public void MixedPlanKeepsFp32AttentionInLayersWithoutInt8Keys()
    {
        var plan = new KvPlan([new KvLayerSpec(KvSpec.Fp16, KvSpec.Fp16), new KvLayerSpec(new KvSpec(KvBits.Four), new KvSpec(KvBits.Two))], "mixed", "test");
        using var cache = (QuantizedKvCache)KvCacheFactory.Create(plan, new KvLayout(2, 2, 64, 32), AttentionPrecision.Int8);
        Assert.Equal(1, cache.Int8Layers);
        Assert.False(((QuantizedKvStore)cache.Layers[0]).UsesInt8);
        Assert.True(((QuantizedKvStore)cache.Layers[1]).UsesInt8);
    }

    [SkippableFact]
    public void MixedPlanTakesByteValuesWhereTheValueWidthAllows()
    {
        // 2- and 4-bit values take the byte path, 8-bit values keep the FP32 value sum after int8 scores, FP16 layers
        // keep FP32 attention; every layer's output stays close to the int8 path's.
        Skip.IfNot(KvAdaQuant.Numerics.Int8ValueKernels.IsSupported, "AVX-512 VBMI not available");
        KvSpec k4 = new(KvBits.Four), v2 = new(KvBits.Two), v4 = new(KvBits.Four), v8 = new(KvBits.Eight);
        var plan = new KvPlan([new KvLayerSpec(k4, v2), new KvLayerSpec(k4, v4), new KvLayerSpec(k4, v8), new KvLayerSpec(KvSpec.Fp16, KvSpec.Fp16)], "mixed", "test");
        const int Heads = 2, Rep = 4, Hd = 64, Length = 200;
        var layout = new KvLayout(4, Heads, Hd, Length);
        using var bytes = (QuantizedKvCache)KvCacheFactory.Create(plan, layout, AttentionPrecision.Int8Values);
        using var int8 = (QuantizedKvCache)KvCacheFactory.Create(plan, layout, AttentionPrecision.Int8);
        Assert.Equal(3, bytes.Int8Layers);
        Assert.Equal(2, bytes.Int8ValueLayers);
        Assert.Equal([true, true, false, false], bytes.Layers.Select(l => l is QuantizedKvStore q && q.UsesInt8Values));
        Assert.Equal([true, true, true, false], bytes.Layers.Select(l => l is QuantizedKvStore q && q.UsesInt8));
        var rng = new Random(11);
        var k = Enumerable.Range(0, Length * Heads * Hd).Select(_ => (float)((rng.NextDouble() * 4) - 2)).ToArray();
        var v = Enumerable.Range(0, Length * Heads * Hd).Select(_ => (float)((rng.NextDouble() * 2) - 1)).ToArray();
        var q = Enumerable.Range(0, Rep * Hd).Select(_ => (float)((rng.NextDouble() * 2) - 1) * 3).ToArray();
        var scores = new float[Rep * Length];
        for (int l = 0; l < 4; l++)
        {
            bytes.Layers[l].Append(k, v, Length);
            int8.Layers[l].Append(k, v, Length);
            var a = new float[Rep * Hd];
            var b = new float[Rep * Hd];
            bytes.Layers[l].Attend(1, q, Rep, Length, a, scores);
            int8.Layers[l].Attend(1, q, Rep, Length, b, scores);
            double worst = a.Zip(b).Max(p => Math.Abs(p.First - p.Second));
            Assert.True(worst < 0.05, $"layer {l}: max |bytes - int8| = {worst}");
            Assert.True(l < 2 ? worst > 0 : worst == 0, $"layer {l}: {worst}");
        }
    }
}
