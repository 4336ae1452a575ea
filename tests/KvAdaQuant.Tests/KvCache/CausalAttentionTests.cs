using KvAdaQuant.Engine;
using KvAdaQuant.KvCache;
using KvAdaQuant.Quantization;

namespace KvAdaQuant.Tests.KvCache;

/// <summary>
/// <see cref="IKvLayerCache.AttendCausal"/> (a prefill batch's tokens sharing the widened rows) against one
/// <see cref="IKvLayerCache.Attend"/> per token: the same bits, on FP16 and FP32 caches, at head dims that take the
/// tiled path (below 64), the fused kernels' (FP16 rows widened once a chunk) and others.
/// </summary>
public class CausalAttentionTests
{
    [Theory]
    [InlineData(true, 32, 3, 1, 5)]
    [InlineData(true, 32, 3, 17, 16)]
    [InlineData(false, 32, 3, 200, 16)]
    [InlineData(true, 8, 2, 250, 9)]
    [InlineData(false, 8, 1, 1, 16)]
    [InlineData(true, 24, 4, 300, 7)]
    [InlineData(true, 40, 2, 513, 3)]
    [InlineData(false, 60, 2, 255, 2)]
    [InlineData(true, 64, 2, 40, 6)]
    [InlineData(false, 96, 2, 33, 4)]
    [InlineData(true, 64, 4, 700, 16)]
    [InlineData(true, 128, 5, 300, 9)]
    [InlineData(false, 64, 4, 300, 16)]
    [InlineData(true, 64, 32, 1085, 16)] // scores past MaxSharedScoreFloats: attended in parts of 14 and 2 tokens
    [InlineData(false, 32, 32, 1085, 16)] // the tiled path in parts
    public void CausalBatchEqualsOneAttendPerToken(bool half, int headDim, int rep, int firstLength, int tokens)
    {
        const int kvHeads = 2;
        int positions = firstLength + tokens - 1;
        var layout = new KvLayout(1, kvHeads, headDim, positions + 8);
        using var store = new FullPrecisionKvStore(layout, half);
        var rng = new Random((headDim * 131) + firstLength);
        var k = new float[positions * layout.KvDim];
        var v = new float[positions * layout.KvDim];
        AttentionStepRunner.RandomKeysAndValues(rng, k, v);
        store.Append(k, v, positions);

        AssertBatchEqualsOneAttendPerToken(store, kvHeads, headDim, rep, firstLength, tokens, rng, half ? "fp16" : "fp32");
    }

    [Theory]
    [InlineData("k4v2", 32, 3, 1, 16)]
    [InlineData("k4v2", 32, 3, 300, 16)]
    [InlineData("k8v8", 32, 2, 17, 5)]
    [InlineData("k2v4:sym:g8", 32, 4, 40, 9)]
    [InlineData("k4v2:g16:r7:sink4", 32, 3, 250, 16)]
    [InlineData("k3v4:vrot:sym:sink2", 32, 2, 60, 7)]
    [InlineData("k4v2:rot", 16, 2, 30, 4)]
    [InlineData("k4v2", 8, 2, 100, 16)]
    [InlineData("k4v2", 24, 2, 100, 3)]
    [InlineData("k4v2:kpc:kg16:kr16:vr16", 32, 3, 70, 16)]
    [InlineData("k4v2:kpc", 32, 3, 300, 16)]
    [InlineData("k2v2:pc:g8:r5:sink3", 32, 2, 90, 13)]
    [InlineData("k4v4:vpc:vg16", 32, 4, 45, 16)]
    [InlineData("k4v2:kpc:ksym:krot", 64, 4, 120, 9)]
    [InlineData("k8v2:kpc:kg64:ksink2", 128, 2, 200, 16)]
    [InlineData("k4v2:pc:r8", 64, 4, 150, 16)]
    [InlineData("k2v4:pc:g16:sink2:rot", 128, 2, 100, 7)]
    [InlineData("k16v2:r4", 32, 2, 50, 6)]
    [InlineData("k4v2", 64, 2, 90, 5)]
    [InlineData("k4v2:int8", 64, 4, 90, 5)]
    [InlineData("k4v2", 64, 4, 700, 16)]
    [InlineData("k4v2", 128, 4, 257, 16)]
    [InlineData("k2v4:g16:r7:sink4", 128, 4, 300, 16)]
    [InlineData("k8v8:sym", 64, 4, 513, 9)]
    [InlineData("k4v4:rot:sink2", 64, 3, 260, 11)]
    [InlineData("k2v2:g8", 64, 5, 330, 13)]
    [InlineData("k4v2:r64:sink1", 64, 4, 200, 16)]
    [InlineData("k4v16", 64, 4, 300, 8)]
    [InlineData("k16v2:vsink2", 64, 4, 300, 16)]
    [InlineData("k4v32", 128, 4, 200, 9)]
    [InlineData("k4v16:int8", 64, 4, 300, 16)]
    [InlineData("k4v2:int8", 32, 3, 300, 16)]
    [InlineData("k4v2:g16:r7:sink4:int8", 32, 3, 250, 16)]
    [InlineData("k4v2:rot:int8", 32, 2, 90, 9)]
    [InlineData("k8v4:vpc:int8", 32, 3, 120, 16)]
    [InlineData("k4v2:int8", 64, 4, 700, 16)]
    [InlineData("k8v2:vrot:sink2:int8", 128, 4, 300, 7)]
    [InlineData("k4v2:int8v", 64, 4, 300, 16)]
    [InlineData("k4v2:r7:sink2", 64, 32, 1085, 16)] // in parts of 14 and 2 tokens
    [InlineData("k4v2:int8", 64, 32, 1085, 16)]
    [InlineData("k4v2", 32, 32, 1085, 16)]
    public void QuantizedCausalBatchEqualsOneAttendPerToken(string spec, int headDim, int rep, int firstLength, int tokens)
    {
        const int kvHeads = 2;
        int positions = firstLength + tokens - 1;
        var layout = new KvLayout(1, kvHeads, headDim, positions + 8);
        // ":int8" / ":int8v": int8 scores, and byte-weight value sums too (the test's suffixes, not spec options).
        var precision = spec.EndsWith(":int8", StringComparison.Ordinal) ? AttentionPrecision.Int8
            : spec.EndsWith(":int8v", StringComparison.Ordinal) ? AttentionPrecision.Int8Values : AttentionPrecision.Fp32;
        var plan = KvPlan.Parse(precision == AttentionPrecision.Fp32 ? spec : spec[..spec.LastIndexOf(':')], 1);
        using var cache = KvCacheFactory.Create(plan, layout, precision);
        var store = cache.Layers[0];
        var rng = new Random((headDim * 31) + firstLength);
        var k = new float[positions * layout.KvDim];
        var v = new float[positions * layout.KvDim];
        AttentionStepRunner.RandomKeysAndValues(rng, k, v);
        for (int p = 0; p < positions; p += 37)
        {
            int count = Math.Min(37, positions - p);
            store.Append(k.AsSpan(p * layout.KvDim, count * layout.KvDim), v.AsSpan(p * layout.KvDim, count * layout.KvDim), count);
        }

        AssertBatchEqualsOneAttendPerToken(store, kvHeads, headDim, rep, firstLength, tokens, rng, spec);
    }

    [Theory]
    [InlineData("k4v2", 32, true)]
    [InlineData("k4v2:rot:r5:sink3", 32, true)]
    [InlineData("k4v2:kpc", 32, true)]
    [InlineData("k4v2:kpc:kg512", 32, false)]
    [InlineData("k4v2", 64, true)]
    [InlineData("k2v4:g16:r7:sink4", 128, true)]
    [InlineData("k16v2", 32, false)]
    [InlineData("k4v16", 64, true)] // FP16 sides share at the fused kernels' head dims (widened once a chunk)
    [InlineData("k16v2", 64, true)]
    [InlineData("k4v16", 32, false)] // ... and not below them
    [InlineData("k4v2:int8", 32, true)]
    [InlineData("k4v2:int8", 64, true)]
    [InlineData("k4v16:int8", 64, true)]
    public void QuantizedStoresShareRowsBetweenABatchsTokens(string spec, int headDim, bool shares)
    {
        var layout = new KvLayout(1, 1, headDim, 64);
        bool int8 = spec.EndsWith(":int8", StringComparison.Ordinal);
        using var cache = KvCacheFactory.Create(KvPlan.Parse(int8 ? spec[..^5] : spec, 1), layout, int8 ? AttentionPrecision.Int8 : AttentionPrecision.Fp32);
        var store = Assert.IsType<QuantizedKvStore>(cache.Layers[0]);
        // At head dims 64 and 128 the fused kernels take the store where AVX-512 runs (their rows decoded once a chunk
        // for the batch); elsewhere it attends row by row (rows read once a chunk): shared either way. Under int8
        // scores only the value rows are shared (where the CPU runs the int8 kernels at all).
        // FP16/FP32 sides share only through the fused kernels (AVX-512).
        bool fullSide = System.Text.RegularExpressions.Regex.IsMatch(spec, "^k(16|32)v|v(16|32)(:|$)");
        shares &= !fullSide || KvAdaQuant.Numerics.FusedAttentionKernels.IsSupported;
        Assert.Equal(shares && !int8, store.SharesRows(4));
        Assert.Equal(shares && int8 && store.UsesInt8, store.SharesValueRows(4));
        if (KvAdaQuant.Numerics.Int8AttentionKernels.IsSupported)
        {
            Assert.Equal(int8, store.UsesInt8); // so the int8 rows above are not vacuous here
        }
    }

    [Fact]
    public void TiledPathIsTakenBelowHeadDim64()
    {
        Assert.True(FullPrecisionKvStore.UsesCausalTiles(32) == System.Runtime.Intrinsics.Vector512.IsHardwareAccelerated);
        Assert.False(FullPrecisionKvStore.UsesCausalTiles(64));
        Assert.False(FullPrecisionKvStore.UsesCausalTiles(96));
    }

    [Fact]
    public void TooFewPositionsOrTooLittleScratchAreRefused()
    {
        var layout = new KvLayout(1, 1, 32, 64);
        using var store = new FullPrecisionKvStore(layout, half: true);
        var k = new float[10 * 32];
        store.Append(k, k, 10);
        var q = new float[4 * 32];
        var o = new float[4 * 32];
        var ex = Assert.Throws<ArgumentOutOfRangeException>(() => store.AttendCausal(0, q, 32, 1, 8, 4, o, 32, new float[4096]));
        Assert.Contains("attends 11 positions but the cache holds 10", ex.Message);
        if (FullPrecisionKvStore.UsesCausalTiles(32))
        {
            var small = Assert.Throws<ArgumentException>(() => store.AttendCausal(0, q, 32, 1, 5, 4, o, 32, new float[16]));
            Assert.Contains("scratch of 16 floats", small.Message);
            var shortQueries = Assert.Throws<ArgumentException>(() => store.AttendCausal(0, q.AsSpan(0, 100), 32, 1, 5, 4, o, 32, new float[32768]));
            Assert.Contains("4 tokens of 32 floats at strides 32 / 32 need more than 100 query and 128 output floats", shortQueries.Message);
        }

        using var quantized = KvCacheFactory.Create("k4v2", layout);
        quantized.Layers[0].Append(k, k, 10);
        var noScratch = Assert.Throws<ArgumentException>(() => quantized.Layers[0].AttendCausal(0, q, 32, 1, 5, 4, o, 32, new float[8]));
        Assert.Contains("scratch of 8 floats", noScratch.Message);
        var tooLong = Assert.Throws<ArgumentOutOfRangeException>(() => quantized.Layers[0].AttendCausal(0, q, 32, 1, 9, 4, o, 32, new float[4096]));
        Assert.Contains("attends 12 positions but the cache holds 10", tooLong.Message);
    }

    // Queries [token][kvHead][rep][headDim] with a wider stride (as the engine's Q rows hold all groups); each KV head's
    // AttendCausal against one Attend per token, bit for bit.
    private static void AssertBatchEqualsOneAttendPerToken(IKvLayerCache store, int kvHeads, int headDim, int rep, int firstLength, int tokens, Random rng, string what)
    {
        int positions = firstLength + tokens - 1;
        int stride = kvHeads * rep * headDim;
        var queries = new float[tokens * stride];
        for (int i = 0; i < queries.Length; i++)
        {
            queries[i] = (float)((rng.NextDouble() * 6) - 3);
        }

        for (int g = 0; g < kvHeads; g++)
        {
            var expected = new float[tokens * stride];
            var scores = new float[rep * positions];
            for (int t = 0; t < tokens; t++)
            {
                store.Attend(g, queries.AsSpan((t * stride) + (g * rep * headDim), rep * headDim), rep, firstLength + t, expected.AsSpan((t * stride) + (g * rep * headDim), rep * headDim), scores);
            }

            var actual = new float[tokens * stride];
            var scratch = new float[store.CausalScratchFloats(rep, firstLength, tokens)];
            int span = ((tokens - 1) * stride) + (rep * headDim);
            store.AttendCausal(g, queries.AsSpan(g * rep * headDim, span), stride, rep, firstLength, tokens, actual.AsSpan(g * rep * headDim, span), stride, scratch);
            for (int t = 0; t < tokens; t++)
            {
                for (int e = 0; e < rep * headDim; e++)
                {
                    int i = (t * stride) + (g * rep * headDim) + e;
                    Assert.True(
                        BitConverter.SingleToInt32Bits(expected[i]) == BitConverter.SingleToInt32Bits(actual[i]),
                        $"{what} head {g} token {t} element {e}: {actual[i]:R} vs one Attend per token {expected[i]:R}");
                }
            }
        }
    }

    [Theory]
    [InlineData(4, 8192, 16, 16)]
    [InlineData(4, 8193, 16, 15)]
    [InlineData(4, 32768, 16, 4)]
    [InlineData(32, 1100, 16, 14)]
    [InlineData(64, 1 << 20, 16, 1)]
    public void SharedBatchesKeepTheirScoresWithinTheCap(int queryHeads, int last, int tokens, int expected)
    {
        int part = IKvLayerCache.SharedTokens(queryHeads, last, tokens);
        Assert.Equal(expected, part);
        Assert.True(part == 1 || (long)part * queryHeads * last <= IKvLayerCache.MaxSharedScoreFloats);
    }

    [Theory]
    [InlineData(416, 2, 2, 16)]
    [InlineData(32, 2, 2, 8)]
    [InlineData(1, 8, 2, 1)]
    [InlineData(3, 1, 4, 1)]
    [InlineData(4096, 8, 16, 16)]
    public void CausalBlockGivesEveryThreadFourItems(int tokens, int kvHeads, int threads, int expected) =>
        Assert.Equal(expected, Transformer.CausalBlock(tokens, kvHeads, threads));
}
