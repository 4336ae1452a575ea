using KvAdaQuant.Numerics;

namespace KvAdaQuant.Tests.Numerics;

/// <summary>
/// The column score kernel (one token per lane, codes never dequantized) against its scalar twin bit for bit, against
/// the dequantize-then-dot reference within float rounding, and its transposition tables.
/// </summary>
public unsafe class ColumnScoreKernelsTests
{
    public static TheoryData<int, int, int, bool> Shapes()
    {
        var data = new TheoryData<int, int, int, bool>();
        foreach (int bits in new[] { 2, 4 })
        {
            foreach (int hd in new[] { 32, 64, 128 })
            {
                foreach (int g in new[] { 8, 16, 32, 64, 128 })
                {
                    foreach (bool symmetric in new[] { false, true })
                    {
                        if (g <= hd && ColumnScoreKernels.Supports(bits, hd, g, symmetric))
                        {
                            data.Add(bits, hd, g, symmetric);
                        }
                    }
                }
            }
        }

        return data;
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(4)]
    [InlineData(8)]
    public void TranspositionTablesPutTokenIOfColumnKInLaneIOfVectorK(int columns)
    {
        // Simulate the stages on labels: dword k of token i is the label 100 i + k.
        int w = int.TrailingZeroCount(columns);
        var idx = ColumnScoreKernels.BuildStages(w);
        var v = new int[columns][];
        for (int j = 0; j < columns; j++)
        {
            v[j] = Enumerable.Range(0, 16).Select(l => (16 * j) + l).Select(f => (100 * (f / columns)) + (f % columns)).ToArray();
        }

        for (int s = 0; s < w; s++)
        {
            int bit = 1 << s;
            var next = new int[columns][];
            for (int o = 0; o < columns; o++)
            {
                int lo = o & ~bit;
                next[o] = Enumerable.Range(0, 16).Select(l => idx[(((s * columns) + o) * 16) + l]).Select(i => i < 16 ? v[lo][i] : v[lo | bit][i - 16]).ToArray();
            }

            v = next;
        }

        for (int k = 0; k < columns; k++)
        {
            Assert.Equal(Enumerable.Range(0, 16).Select(i => (100 * i) + k), v[k]);
        }
    }

    [Fact]
    public void SupportedLayoutsAreTheDocumentedOnes()
    {
        Assert.True(ColumnScoreKernels.Supports(4, 64, 32, false));
        Assert.True(ColumnScoreKernels.Supports(2, 64, 32, false));
        Assert.False(ColumnScoreKernels.Supports(2, 128, 32, false));  // head dims above 64: the per-row kernels are as fast
        Assert.False(ColumnScoreKernels.Supports(4, 128, 128, true));
        Assert.False(ColumnScoreKernels.Supports(8, 64, 32, false));   // 8-bit codes: no 16-entry table
        Assert.False(ColumnScoreKernels.Supports(3, 64, 32, false));
        Assert.False(ColumnScoreKernels.Supports(4, 64, 4, false));    // groups split a dword
        Assert.False(ColumnScoreKernels.Supports(4, 96, 32, false));   // 12 dwords a row
        Assert.False(ColumnScoreKernels.Supports(2, 64, 8, true) || ColumnScoreKernels.Supports(4, 64, 4, true));  // groups split a dword
        Assert.False(ColumnScoreKernels.Supports(2, 64, 8, false));    // a 2-bit dword holds 16 channels
        Assert.True(ColumnScoreKernels.Supports(2, 64, 16, false));
    }

    [SkippableTheory]
    [MemberData(nameof(Shapes))]
    public void VectorScoresEqualTheScalarTwinBitForBitAndTheDequantizedDotWithinRounding(int bits, int hd, int g, bool symmetric)
    {
        Skip.IfNot(ColumnScoreKernels.IsSupported, "AVX-512 not available");
        var rng = new Random((bits * 1000) + (hd * 10) + g + (symmetric ? 7 : 0));
        foreach (int count in new[] { 1, 7, 15, 16, 17, 31, 32, 48, 65, 130 })
        {
            foreach (int rep in new[] { 1, 3, 4, 5, 8 })
            {
                var (codes, prm) = RandomPackedRows(rng, bits, hd, g, symmetric, count);
                var q = Random(rng, rep * hd);
                int stride = count + 3;
                float step = 1, offset = symmetric ? -((1 << bits) / 2 - 1) : 0;
                var want = new float[rep * stride];
                var got = new float[rep * stride];
                var reference = new float[rep * stride];
                fixed (byte* c = codes)
                fixed (ushort* p = prm)
                fixed (float* qp = q, w = want, gp = got, rp = reference)
                {
                    var rows = new PackedRows(c, p, count, hd, bits, g, symmetric, step, offset);
                    ColumnScoreKernels.ScoresScalar(rows, qp, rep, w, stride);
                    ColumnScoreKernels.Scores(rows, qp, rep, gp, stride);
                    FusedAttentionKernels.ScoresPackedScalar(rows, qp, rep, rp, stride);
                    string what = $"bits {bits} hd {hd} g {g} sym {symmetric} count {count} rep {rep}";
                    Assert.True(want.AsSpan().SequenceEqual(got), $"vector scores differ from the scalar twin's, {what}");
                    float tol = ScoreBound(rows, q, rep);
                    for (int i = 0; i < got.Length; i++)
                    {
                        Assert.True(MathF.Abs(got[i] - reference[i]) <= tol, $"{what}: element {i}: {got[i]} vs dequantized dot {reference[i]} (tolerance {tol})");
                    }
                }
            }
        }
    }

    [SkippableTheory]
    [InlineData(4, 64, 32, false)]
    [InlineData(4, 64, 64, true)]
    [InlineData(2, 64, 16, false)]
    [InlineData(4, 32, 16, false)]
    public void CausalChunksOverDecodedColumnsGiveEachTokensDecodeBits(int bits, int hd, int g, bool symmetric)
    {
        Skip.IfNot(ColumnScoreKernels.IsSupported, "AVX-512 not available");
        var rng = new Random(bits + hd + g);
        const int rep = 5, chunk = 64, firstLength = 37, tokens = 70, limit = 100;
        int positions = firstLength + tokens - 1;
        var (codes, prm) = RandomPackedRows(rng, bits, hd, g, symmetric, positions);
        var q = Random(rng, tokens * rep * hd);
        int perToken = rep * positions;
        var batch = new float[tokens * perToken];
        float offset = symmetric ? -((1 << bits) / 2 - 1) : 0;
        var x = new float[chunk * hd];
        var planes = new float[chunk * 8];
        fixed (byte* c = codes)
        fixed (ushort* p = prm)
        fixed (float* qp = q, b = batch, xp = x, pp = planes)
        {
            // Positions below the limit in chunks of 64 (the last part-filled), as the store's prefill takes them.
            for (int first = 0; first < Math.Min(limit, positions); first += chunk)
            {
                int count = Math.Min(chunk, Math.Min(limit, positions) - first);
                int rowBytes = hd * bits / 8, np = ColumnScoreKernels.Parameters(new PackedRows(c, p, 1, hd, bits, g, symmetric, 1, offset));
                var rows = new PackedRows(c + (first * rowBytes), p + (first * np), count, hd, bits, g, symmetric, 1, offset);
                ColumnScoreKernels.DecodeColumns(rows, xp, pp);
                ColumnScoreKernels.ScoresCausalChunk(rows, xp, pp, first, count, limit, qp, rep * hd, rep, firstLength, tokens, b, perToken);
            }

            for (int t = 0; t < tokens; t++)
            {
                int length = firstLength + t, scored = Math.Min(length, limit);
                var alone = new float[rep * length];
                fixed (float* a = alone)
                {
                    ColumnScoreKernels.Scores(new PackedRows(c, p, scored, hd, bits, g, symmetric, 1, offset), qp + (t * rep * hd), rep, a, length);
                }

                for (int r = 0; r < rep; r++)
                {
                    for (int j = 0; j < scored; j++)
                    {
                        Assert.True(alone[(r * length) + j] == batch[(t * perToken) + (r * length) + j], $"token {t} head {r} position {j}: batch {batch[(t * perToken) + (r * length) + j]} vs alone {alone[(r * length) + j]}");
                    }
                }
            }
        }
    }

    [SkippableFact]
    public void TiledRowsGiveTheRowLayoutsBits()
    {
        Skip.IfNot(ColumnScoreKernels.IsSupported, "AVX-512 not available");
        var rng = new Random(11);
        const int bits = 4, hd = 64, g = 32, rep = 4;
        foreach (int count in new[] { 5, 16, 40 })
        {
            var (codes, prm) = RandomPackedRows(rng, bits, hd, g, false, count);
            int rowBytes = hd * bits / 8;
            var tiles = new byte[KeyTiles.Bytes(count, rowBytes)];
            fixed (byte* t = tiles)
            {
                for (int i = 0; i < count; i++)
                {
                    KeyTiles.WriteRow(t, i, rowBytes, codes.AsSpan(i * rowBytes, rowBytes));
                }
            }

            var q = Random(rng, rep * hd);
            var fromRows = new float[rep * count];
            var fromTiles = new float[rep * count];
            var twin = new float[rep * count];
            fixed (byte* c = codes, t = tiles)
            fixed (ushort* p = prm)
            fixed (float* qp = q, a = fromRows, b = fromTiles, s = twin)
            {
                ColumnScoreKernels.Scores(new PackedRows(c, p, count, hd, bits, g, false, 1, 0), qp, rep, a, count);
                var tiled = new PackedRows(t, p, count, hd, bits, g, false, 1, 0, tiled: true);
                ColumnScoreKernels.Scores(tiled, qp, rep, b, count);
                ColumnScoreKernels.ScoresScalar(tiled, qp, rep, s, count);
            }

            Assert.Equal(fromRows, fromTiles);
            Assert.Equal(fromRows, twin);
        }
    }

    [Fact]
    public void UnsupportedLayoutsAreRefusedByName()
    {
        var ex = Assert.Throws<ArgumentException>(() =>
        {
            var rows = new PackedRows(null, null, 1, 64, 8, 32, false, 1, 0);
            ColumnScoreKernels.Scores(rows, null, 1, null, 1);
        });
        Assert.Contains("8 bits", ex.Message);
    }

    // Both are float dot products of hd terms in different orders: a few ulps of the sum of |q| |x|.
    private static float ScoreBound(in PackedRows rows, float[] q, int rep) => FusedAttentionKernelsTests.ScoreBound(rows, q, rep, 4e-6f);

    private static (byte[] Codes, ushort[] Params) RandomPackedRows(Random rng, int bits, int hd, int g, bool symmetric, int count) =>
        FusedAttentionKernelsTests.RandomPackedRows(rng, bits, hd, g, symmetric, count);

    private static float[] Random(Random rng, int n) => FusedAttentionKernelsTests.Random(rng, n);
}
