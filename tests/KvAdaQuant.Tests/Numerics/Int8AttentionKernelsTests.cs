using CsCheck;
using KvAdaQuant.Numerics;

namespace KvAdaQuant.Tests.Numerics;

/// <summary>
/// The int8-query score kernel: vector (AVX-VNNI) against its scalar twin bit for bit, and against exact scores within
/// the bound that the query quantization implies, |s_int8 - q · x| &lt;= sum_g |a_g| (sq_g / 2) sum_{c in g} code_c
/// (+ float rounding), on random and adversarial inputs.
/// </summary>
public unsafe class Int8AttentionKernelsTests
{
    public static TheoryData<int, int, int, bool> Shapes()
    {
        var data = new TheoryData<int, int, int, bool>();
        foreach (int bits in new[] { 2, 4, 8 })
        {
            foreach (int hd in new[] { 32, 64, 128 })
            {
                foreach (int g in new[] { 8, 16, 32, 64, 128 })
                {
                    if (g <= hd && Int8AttentionKernels.Supports(bits, hd, g))
                    {
                        data.Add(bits, hd, g, false);
                        data.Add(bits, hd, g, true);
                    }
                }
            }
        }

        return data;
    }

    [Fact]
    public void SupportedShapesAreTheDocumentedOnes()
    {
        Assert.True(Int8AttentionKernels.Supports(4, 64, 32));
        Assert.True(Int8AttentionKernels.Supports(2, 128, 32));
        Assert.True(Int8AttentionKernels.Supports(8, 64, 16));
        Assert.False(Int8AttentionKernels.Supports(2, 64, 8)); // a 2-bit group of 8 channels is half a dword of codes
        Assert.False(Int8AttentionKernels.Supports(4, 128, 16)); // 8 groups per token
        Assert.False(Int8AttentionKernels.Supports(3, 64, 32));
        Assert.True(Int8AttentionKernels.Supports(4, 32, 32));
        Assert.False(Int8AttentionKernels.Supports(2, 32, 32)); // 8-byte rows
        Assert.False(Int8AttentionKernels.Supports(4, 8, 8));
    }

    [SkippableTheory]
    [MemberData(nameof(Shapes))]
    public void VectorScoresEqualTheScalarTwinBitForBit(int bits, int hd, int g, bool symmetric)
    {
        Skip.IfNot(Int8AttentionKernels.IsSupported, "AVX-512BW not available");
        var rng = new Random((bits * 1000) + (hd * 10) + g + (symmetric ? 7 : 0));
        foreach (int count in new[] { 1, 7, 8, 9, 16, 17, 63, 130 })
        {
            foreach (int nh in new[] { 1, 3, 4 })
            {
                using var data = PackedRowData.Random(rng, count, hd, bits, g, symmetric);
                var q = RandomFloats(rng, nh * hd, 1);
                using var query = new QueryBlock(q, nh, hd, bits, g);
                int stride = count + 3;
                var want = new float[4 * stride];
                var got = new float[4 * stride];
                var tiledScalar = new float[4 * stride];
                var wantMax = new float[4];
                var gotMax = new float[4];
                var tiledMax = new float[4];
                var tiled = data.Tiled();
                fixed (float* w = want, gp = got, ts = tiledScalar, wm = wantMax, gm = gotMax, tm = tiledMax)
                {
                    // The scalar twin over the rows as they lie row after row, the kernel over their tiles.
                    Int8AttentionKernels.ScoresScalar(data.Rows, query.Q8, query.Steps, query.Sums, nh, w, stride, wm);
                    Int8AttentionKernels.ScoresScalar(tiled, query.Q8, query.Steps, query.Sums, nh, ts, stride, tm);
                    Int8AttentionKernels.Scores(tiled, query.Q8, query.Dwords, query.Steps, query.Sums, nh, gp, stride, gm);
                }

                Assert.Equal(want, tiledScalar);
                for (int i = 0; i < want.Length; i++)
                {
                    Assert.True(BitConverter.SingleToInt32Bits(want[i]) == BitConverter.SingleToInt32Bits(got[i]), $"bits {bits} hd {hd} g {g} sym {symmetric} count {count} nh {nh}: element {i}: vector {got[i]} vs scalar {want[i]}");
                }

                for (int r = 0; r < nh; r++)
                {
                    Assert.Equal(wantMax[r], gotMax[r]);
                    Assert.Equal(Enumerable.Range(0, count).Max(t => want[(r * stride) + t]), gotMax[r]);
                }
            }
        }
    }

    [SkippableTheory]
    [InlineData(4, 128, 128)]
    [InlineData(4, 64, 64)]
    [InlineData(2, 128, 128)]
    [InlineData(8, 128, 128)]
    public void ExtremeCodesAndQueriesDoNotOverflowTheVectorSums(int bits, int hd, int g)
    {
        // Every code at its maximum and every int8 query at +127 or -127: the largest int16 pair sums the 16-token path
        // accumulates before widening, and the largest int32 dots.
        Skip.IfNot(Int8AttentionKernels.IsSupported, "AVX-512BW not available");
        const int Count = 37;
        using var data = new PackedRowData(Count, hd, bits, g, false);
        Array.Fill(data.Codes, (byte)0xFF);
        for (int i = 0; i < data.Params.Length; i++)
        {
            data.Params[i] = BitConverter.HalfToUInt16Bits((Half)(i % 2 == 0 ? 0.5f : -2f));
        }

        foreach (float sign in new[] { 1f, -1f })
        {
            var q = Enumerable.Repeat(3f * sign, 4 * hd).ToArray();
            using var query = new QueryBlock(q, 4, hd, bits, g);
            var want = new float[4 * Count];
            var got = new float[4 * Count];
            var m = new float[4];
            fixed (float* w = want, gp = got, mp = m)
            {
                Int8AttentionKernels.ScoresScalar(data.Rows, query.Q8, query.Steps, query.Sums, 4, w, Count, mp);
                Int8AttentionKernels.Scores(data.Tiled(), query.Q8, query.Dwords, query.Steps, query.Sums, 4, gp, Count, mp);
            }

            Assert.Equal(want, got);
            float exact = hd * 3f * sign * ((0.5f * ((1 << bits) - 1)) - 2f);
            Assert.All(got, s => Assert.True(MathF.Abs(s - exact) <= 1e-4f * MathF.Abs(exact), $"{s} vs {exact}"));
        }
    }

    [Theory]
    [MemberData(nameof(Shapes))]
    public void ScoresStayWithinTheQueryQuantizationBound(int bits, int hd, int g, bool symmetric)
    {
        var rng = new Random((bits * 31) + hd + g + (symmetric ? 1 : 0));
        const int Count = 40;
        using var data = PackedRowData.Random(rng, Count, hd, bits, g, symmetric);
        for (int trial = 0; trial < 3; trial++)
        {
            // trial 0: uniform queries; 1: one large outlier per group (coarse steps); 2: queries with a mean (b terms matter).
            var q = RandomFloats(rng, 4 * hd, 1);
            for (int i = 0; i < q.Length; i++)
            {
                q[i] = trial switch
                {
                    1 => i % g == 3 ? 40f : q[i] * 0.1f,
                    2 => q[i] + 2f,
                    _ => q[i],
                };
            }

            CheckBound(data, q, 4, $"bits {bits} hd {hd} g {g} sym {symmetric} trial {trial}");
        }
    }

    [Fact]
    public void AdversarialHalfStepQueriesNearlyReachTheBound()
    {
        // Every query channel half a step off the int8 grid and every code at its maximum: the rounding errors add up,
        // so the measured error comes close to the bound (which therefore is not loose), and never exceeds it.
        const int Hd = 64, G = 32, Bits = 4;
        using var data = new PackedRowData(1, Hd, Bits, G, false);
        Array.Fill(data.Codes, (byte)0xFF);
        for (int i = 0; i < data.Params.Length; i += 2)
        {
            data.Params[i] = BitConverter.HalfToUInt16Bits((Half)0.25f);
            data.Params[i + 1] = BitConverter.HalfToUInt16Bits((Half)(-1f));
        }

        var q = new float[Hd];
        for (int c = 0; c < Hd; c++)
        {
            // 127 in the first channel of each group sets sq = 1 / 127 * 127 = 1; the rest sit at even + 0.4, which
            // round down: error +0.4 sq each, all of one sign.
            q[c] = c % G == 0 ? 127f : 2 * (c % 50) + 0.4f - 50;
        }

        var (err, bound) = CheckBound(data, q, 1, "adversarial");
        Assert.True(err > 0.7 * bound, $"error {err} should approach the bound {bound}");
    }

    [Fact]
    public void BoundHoldsOnArbitraryRowsAndQueries()
    {
        var gen = Gen.OneOf(Gen.Const(2), Gen.Const(4), Gen.Const(8))
            .SelectMany(bits => Gen.Int[1, 20].SelectMany(count => Gen.Bool.SelectMany(sym => Gen.Int[0, int.MaxValue].Select(seed => (bits, count, sym, seed)))));
        gen.Sample(
            c =>
            {
                var rng = new Random(c.seed);
                using var data = PackedRowData.Random(rng, c.count, 64, c.bits, 32, c.sym);
                var q = RandomFloats(rng, 2 * 64, (float)(rng.NextDouble() * 10));
                CheckBound(data, q, 2, $"{c}");
            },
            iter: 200);
    }

    [Fact]
    public void ScoresRefuseRowsThatAreNotInKeyTiles()
    {
        using var data = PackedRowData.Random(new Random(5), 16, 64, 4, 32, false);
        using var query = new QueryBlock(RandomFloats(new Random(6), 64, 1), 1, 64, 4, 32);
        var s = new float[16];
        var m = new float[4];
        var e = Assert.Throws<ArgumentException>(() =>
        {
            fixed (float* sp = s, mp = m)
            {
                Int8AttentionKernels.Scores(data.Rows, query.Q8, query.Dwords, query.Steps, query.Sums, 1, sp, 16, mp);
            }
        });
        Assert.Contains("KeyTiles", e.Message);
        Assert.Contains("row after row", e.Message);
    }

    [SkippableFact]
    public void ExpSumMatchesTheScalarTwin()
    {
        var rng = new Random(3);
        foreach (int n in new[] { 1, 15, 16, 31, 32, 33, 1000 })
        {
            var x = RandomFloats(rng, n, 20);
            float max = x.Max();
            var a = x.ToArray();
            var b = x.ToArray();
            float sa, sb;
            fixed (float* pa = a, pb = b)
            {
                sa = Int8AttentionKernels.ExpSumScalar(pa, n, max);
                sb = Int8AttentionKernels.ExpSum(pb, n, max);
            }

            Assert.Equal(a, b);
            Assert.True(MathF.Abs(sa - sb) <= 1e-6f * n * sa, $"n {n}: {sb} vs {sa}");
            Assert.True(MathF.Abs(sa - x.Sum(v => MathF.Exp(v - max))) <= 1e-5f * n * sa);
        }
    }

    // Checks |int8 score - exact score| <= sum_g |a_g| sq_g / 2 sum_c code_c + 1e-5 sum |terms| for every token and head;
    // returns the largest error and the bound where it was largest relative to the bound.
    private static (double Err, double Bound) CheckBound(PackedRowData data, float[] q, int nh, string what)
    {
        var rows = data.Rows;
        int hd = rows.HeadDim, g = rows.GroupChannels, groups = hd / g;
        using var query = new QueryBlock(q, nh, hd, rows.Bits, g);
        var got = new float[4 * rows.Count];
        var max = new float[4];
        fixed (float* s = got, m = max)
        {
            Int8AttentionKernels.Scores(data.Tiled(), query.Q8, query.Dwords, query.Steps, query.Sums, nh, s, rows.Count, m);
        }

        float* x = stackalloc float[hd];
        double worstRatio = -1, worstErr = 0, worstBound = 0;
        int pp = rows.Symmetric ? 1 : 2;
        for (int t = 0; t < rows.Count; t++)
        {
            FusedAttentionKernels.DequantizeScalar(rows, t, x);
            for (int r = 0; r < nh; r++)
            {
                double exact = 0, magnitude = 0, bound = 0;
                for (int c = 0; c < hd; c++)
                {
                    exact += (double)q[(r * hd) + c] * x[c];
                    magnitude += Math.Abs((double)q[(r * hd) + c] * x[c]);
                }

                for (int gi = 0; gi < groups; gi++)
                {
                    ushort* prm = rows.Params + ((long)t * groups * pp);
                    double a = rows.Symmetric ? (double)HalfBits.ToSingle(prm[gi]) * rows.SymStep : HalfBits.ToSingle(prm[2 * gi]);
                    double codes = 0;
                    for (int c = gi * g; c < (gi + 1) * g; c++)
                    {
                        codes += Code(rows, t, c);
                    }

                    bound += Math.Abs(a) * query.Steps[(gi * 4) + r] / 2 * codes;
                    magnitude += Math.Abs(a) * query.Steps[(gi * 4) + r] * 127 * codes;
                }

                bound += (1e-5 * magnitude) + 1e-30;
                double err = Math.Abs(got[(r * rows.Count) + t] - exact);
                Assert.True(err <= bound, $"{what}: token {t} head {r}: int8 score {got[(r * rows.Count) + t]} vs exact {exact}, error {err} > bound {bound}");
                if (err / bound > worstRatio)
                {
                    (worstRatio, worstErr, worstBound) = (err / bound, err, bound);
                }
            }
        }

        return (worstErr, worstBound);
    }

    private static int Code(in PackedRows rows, int t, int c)
    {
        byte* row = rows.Codes + ((long)t * rows.RowBytes);
        int bit = c * rows.Bits;
        return (row[bit >> 3] >> (bit & 7)) & ((1 << rows.Bits) - 1);
    }

    private static float[] RandomFloats(Random rng, int n, float scale) =>
        Enumerable.Range(0, n).Select(_ => (float)((rng.NextDouble() * 2) - 1) * scale).ToArray();

    /// <summary>One head block of quantized queries in unmanaged memory.</summary>
    private sealed class QueryBlock : IDisposable
    {
        private readonly NativeBuffer _buffer;

        public QueryBlock(float[] q, int nh, int hd, int bits, int g)
        {
            int groups = hd / g;
            _buffer = new NativeBuffer((4 * hd) + (4 * Int8AttentionKernels.DwordCount(hd)) + (2 * 4 * 4 * groups) + 64);
            byte* p = _buffer.Pointer;
            Q8 = (sbyte*)p;
            Dwords = (int*)(p + (4 * hd));
            Steps = (float*)(Dwords + Int8AttentionKernels.DwordCount(hd));
            Sums = Steps + (4 * groups);
            fixed (float* qp = q)
            {
                Int8AttentionKernels.QuantizeQueries(qp, nh, hd, bits, g, Q8, Steps, Sums, Dwords);
            }
        }

        public sbyte* Q8 { get; }

        public int* Dwords { get; }

        public float* Steps { get; }

        public float* Sums { get; }

        public void Dispose() => _buffer.Dispose();
    }
}
