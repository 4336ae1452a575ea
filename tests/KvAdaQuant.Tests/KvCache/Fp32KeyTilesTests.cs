using KvAdaQuant.KvCache;
using KvAdaQuant.Numerics;

namespace KvAdaQuant.Tests.KvCache;

/// <summary>
/// The keys of FP32 attention lie in <see cref="KeyTiles"/> where <see cref="ColumnScoreKernels"/> scores them, so the
/// kernel loads code columns instead of transposing rows. The layout must not change a bit of what the store returns.
/// </summary>
public sealed class Fp32KeyTilesTests
{
    [SkippableTheory]
    [InlineData("k4v2", 53)]
    [InlineData("k2v2", 100)]
    [InlineData("k4v2:r16:sink4", 77)]
    [InlineData("k4v4:sym", 40)]
    [InlineData("k4v2:g32", 300)]
    public void TiledKeysGiveTheRowLayoutsScoresReadsAndStateBitForBit(string kv, int length)
    {
        Skip.IfNot(ColumnScoreKernels.IsSupported, "AVX-512 not available: the column kernel and its tiles are not used");
        const int Heads = 2, Rep = 4, Hd = 64;
        var layout = new KvLayout(1, Heads, Hd, length + 16);
        var spec = KvPlan.Parse(kv, 1).Layers[0].K;
        using var rows = new QuantizedTensorStore(layout, spec);
        using var tiles = new QuantizedTensorStore(layout, spec, keys: true);
        Assert.True(tiles.IsTiled && tiles.IsFused, $"{kv}: keys for FP32 attention should be tiled and take the fused path");
        Assert.True(!rows.IsTiled && rows.IsFused);

        var rng = new Random(length);
        var k = Enumerable.Range(0, length * Heads * Hd).Select(_ => (float)((rng.NextDouble() * 4) - 2)).ToArray();
        // One token at a time first (flushes into a part-filled tile), then the rest in one batch.
        int single = Math.Min(length, 21);
        for (int t = 0; t < single; t++)
        {
            rows.Append(k.AsSpan(t * Heads * Hd, Heads * Hd), 1);
            tiles.Append(k.AsSpan(t * Heads * Hd, Heads * Hd), 1);
        }

        rows.Append(k.AsSpan(single * Heads * Hd), length - single);
        tiles.Append(k.AsSpan(single * Heads * Hd), length - single);
        Assert.Equal(rows.ByteCount, tiles.ByteCount);

        var q = Enumerable.Range(0, Rep * Hd).Select(_ => (float)((rng.NextDouble() * 2) - 1)).ToArray();
        for (int h = 0; h < Heads; h++)
        {
            foreach (int n in new[] { length, length - 1, Math.Min(length, 17) })
            {
                var sa = new float[Rep * n];
                var sb = new float[Rep * n];
                rows.Scores(h, q, Rep, n, sa);
                tiles.Scores(h, q, Rep, n, sb);
                Assert.Equal(sa, sb);
            }

            var ra = new float[length * Hd];
            var rb = new float[length * Hd];
            rows.Read(h, 0, length, ra);
            tiles.Read(h, 0, length, rb);
            Assert.Equal(ra, rb);
        }

        // A causal batch of the last 9 tokens (the prefill path: columns decoded once a chunk).
        const int Tokens = 9;
        int first = length - Tokens + 1;
        var qs = Enumerable.Range(0, Tokens * Rep * Hd).Select(_ => (float)((rng.NextDouble() * 2) - 1)).ToArray();
        int perToken = Rep * length;
        Assert.True(rows.SharesCausal(Rep) && tiles.SharesCausal(Rep));
        var ca = new float[Tokens * perToken];
        var cb = new float[Tokens * perToken];
        var scratch = new float[IKvTensorStore.CausalRows * Hd];
        var work = new float[Tokens * Rep * Hd];
        ((IKvTensorStore)rows).ScoresCausal(1, qs, Rep, Hd, first, Tokens, ca, perToken, scratch, work);
        ((IKvTensorStore)tiles).ScoresCausal(1, qs, Rep, Hd, first, Tokens, cb, perToken, scratch, work);
        Assert.Equal(ca, cb);

        // The state holds rows whatever the layout, so either store reads the other's.
        var sr = State(rows);
        Assert.Equal(sr, State(tiles));
        using var back = new QuantizedTensorStore(layout, spec, keys: true);
        back.ReadState(new KvStateReader(new MemoryStream(sr), "test"), length);
        var s1 = new float[Rep * length];
        var s2 = new float[Rep * length];
        rows.Scores(0, q, Rep, length, s1);
        back.Scores(0, q, Rep, length, s2);
        Assert.Equal(s1, s2);

        // Truncated to a point inside a tile (where the spec allows it exactly), then appended again: the same as the row layout.
        Assert.Equal(rows.CanTruncate(length - 5), tiles.CanTruncate(length - 5));
        if (!rows.CanTruncate(length - 5))
        {
            return;
        }

        rows.Truncate(length - 5);
        tiles.Truncate(length - 5);
        rows.Append(k.AsSpan(0, 3 * Heads * Hd), 3);
        tiles.Append(k.AsSpan(0, 3 * Heads * Hd), 3);
        rows.Scores(1, q, Rep, length - 2, s1.AsSpan(0, Rep * (length - 2)));
        tiles.Scores(1, q, Rep, length - 2, s2.AsSpan(0, Rep * (length - 2)));
        Assert.Equal(s1, s2);
    }

    [Theory]
    [InlineData("k4v2", 128)]
    [InlineData("k8v8", 64)]
    [InlineData("k4v2:pc", 64)]
    [InlineData("k3v3", 64)]
    public void KeysTheColumnKernelDoesNotScoreKeepTheRowLayout(string kv, int hd)
    {
        using var store = new QuantizedTensorStore(new KvLayout(1, 2, hd, 32), KvPlan.Parse(kv, 1).Layers[0].K, keys: true);
        Assert.False(store.IsTiled, $"{kv} at head dim {hd}");
    }

    [SkippableFact]
    public void ValuesAndDefaultStoresKeepRowsAndTheLayerTilesItsKeys()
    {
        Skip.IfNot(ColumnScoreKernels.IsSupported, "AVX-512 not available");
        var layout = new KvLayout(1, 2, 64, 32);
        using var layer = new QuantizedKvStore(layout, KvPlan.Parse("k4v2", 1).Layers[0], AttentionPrecision.Fp32);
        Assert.True(layer.KeysInTiles && !layer.ValuesInTiles);
        using var noFused = new QuantizedTensorStore(layout, KvPlan.Parse("k4v2", 1).Layers[0].K, allowFused: false, keys: true);
        Assert.False(noFused.IsTiled);
    }

    [Fact]
    public void ThePackedRowKernelsRefuseTiledCodesByName()
    {
        var e = Assert.Throws<ArgumentException>(DequantizeTiledRows);
        Assert.Contains("KeyTiles", e.Message);
        Assert.Contains("ColumnScoreKernels", e.Message);
    }

    private static unsafe void DequantizeTiledRows()
    {
        var codes = new byte[16 * 32];
        var prm = new ushort[16 * 4];
        var x = new float[16 * 64];
        fixed (byte* c = codes)
        fixed (ushort* p = prm)
        fixed (float* d = x)
        {
            FusedAttentionKernels.DequantizePacked(new PackedRows(c, p, 16, 64, 4, 32, false, 1f, 0f, tiled: true), d);
        }
    }

    private static byte[] State(QuantizedTensorStore store)
    {
        using var ms = new MemoryStream();
        store.WriteState(new KvStateWriter(ms));
        return ms.ToArray();
    }
}
