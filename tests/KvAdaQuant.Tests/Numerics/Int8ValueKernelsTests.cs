using System.Runtime.Intrinsics;
using CsCheck;
using KvAdaQuant.Numerics;

namespace KvAdaQuant.Tests.Numerics;

/// <summary>
/// The byte-weight value sum over 2- and 4-bit codes: vector (AVX-512BW/VBMI) against its scalar twin bit for bit, and
/// against the exact weighted sum within the bound the byte rounding implies ((2^bits - 1) U / (2 L) per token of each
/// 64-token block, U the block's largest p a, L = 255 or 127), including the int16 extremes and bad input.
/// </summary>
public unsafe class Int8ValueKernelsTests
{
    public static TheoryData<int, int, int, bool> Shapes()
    {
        var data = new TheoryData<int, int, int, bool>();
        foreach (int bits in new[] { 2, 4 })
        {
            foreach (int hd in new[] { 32, 64, 128, 192, 256 })
            {
                foreach (int g in new[] { 16, 32, 64, 96, 128, 256 })
                {
                    if (g <= hd && Int8ValueKernels.Supports(bits, hd, g))
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
        Assert.True(Int8ValueKernels.Supports(2, 64, 32));
        Assert.True(Int8ValueKernels.Supports(2, 128, 32));
        Assert.True(Int8ValueKernels.Supports(2, 128, 128));
        Assert.True(Int8ValueKernels.Supports(2, 256, 32)); // 8 groups (the gather path)
        Assert.True(Int8ValueKernels.Supports(4, 64, 32));
        Assert.True(Int8ValueKernels.Supports(4, 32, 32)); // one 16-byte piece a row
        Assert.True(Int8ValueKernels.Supports(4, 128, 64));
        Assert.True(Int8ValueKernels.Supports(4, 192, 96)); // pieces of groups 0, 0, 0, 1, 1, 1
        Assert.False(Int8ValueKernels.Supports(4, 64, 16)); // a 16-byte piece would hold two groups
        Assert.False(Int8ValueKernels.Supports(4, 96, 32)); // head dim 32 or a multiple of 64
        Assert.False(Int8ValueKernels.Supports(8, 64, 32)); // 8-bit codes x byte weights overflow the int16 pairs
        Assert.Equal(4, Int8ValueKernels.TokensPerStep(32, 4));
        Assert.Equal(127, Int8ValueKernels.WeightLevels(4));
        Assert.Equal(255, Int8ValueKernels.WeightLevels(2));
        Assert.False(Int8ValueKernels.Supports(2, 64, 16)); // four groups in a 64-channel chunk
        Assert.True(Int8ValueKernels.Supports(2, 32, 32)); // 8-byte rows, eight a step
        Assert.False(Int8ValueKernels.Supports(2, 32, 16)); // head dim 32 takes one group only
        Assert.Equal(8, Int8ValueKernels.TokensPerStep(32, 2));
        Assert.Equal(4, Int8ValueKernels.TokensPerStep(128, 2));
        Assert.True(Int8ValueKernels.Supports(2, 192, 96)); // chunks spanning groups 0-1 and 1-1
        Assert.False(Int8ValueKernels.Supports(2, 64, 48)); // 64 is not a multiple of 48
    }

    [SkippableTheory]
    [MemberData(nameof(Shapes))]
    public void VectorSumsEqualTheScalarTwinBitForBit(int bits, int hd, int g, bool symmetric)
    {
        Skip.IfNot(Int8ValueKernels.IsSupported, "AVX-512BW / VBMI not available");
        var rng = new Random((hd * 10) + g + (symmetric ? 7 : 0) + bits);
        foreach (int count in new[] { 0, 4, 8, 56, 60, 64, 68, 72, 132, 256 }.Where(c => c % Int8ValueKernels.TokensPerStep(hd, bits) == 0))
        {
            foreach (int nh in new[] { 1, 3, 4, 5, 8 })
            {
                using var data = PackedRowData.Random(rng, count, hd, bits, g, symmetric, nonNegativeSteps: true);
                int stride = count + 5;
                var p = Probabilities(rng, nh, stride, peak: count % 3 == 0);
                var want = RandomOutputs(rng, nh * hd);
                var got = want.ToArray();
                fixed (float* pp = p, w = want, gp = got)
                {
                    Int8ValueKernels.AccumulateScalar(data.Rows, pp, stride, nh, w);
                    Int8ValueKernels.Accumulate(data.Rows, pp, stride, nh, gp);
                }

                for (int i = 0; i < want.Length; i++)
                {
                    Assert.True(BitConverter.SingleToInt32Bits(want[i]) == BitConverter.SingleToInt32Bits(got[i]), $"bits {bits} hd {hd} g {g} sym {symmetric} count {count} nh {nh}: element {i}: vector {got[i]} vs scalar {want[i]}");
                }
            }
        }
    }

    [Theory]
    [MemberData(nameof(Shapes))]
    public void SumsStayWithinTheByteRoundingBound(int bits, int hd, int g, bool symmetric)
    {
        var rng = new Random((hd * 3) + g + (symmetric ? 1 : 0) + bits);
        foreach (bool peak in new[] { false, true })
        {
            using var data = PackedRowData.Random(rng, 208, hd, bits, g, symmetric, nonNegativeSteps: true);
            var p = Probabilities(rng, 4, 208, peak);
            CheckBound(data.Rows, p, 4, 208, $"bits {bits} hd {hd} g {g} sym {symmetric} peak {peak}");
        }
    }

    [Fact]
    public void BoundHoldsOnArbitraryRowsAndWeights()
    {
        var gen = Gen.Int[0, 40].SelectMany(quads => Gen.Bool.SelectMany(sym => Gen.Bool.SelectMany(nibbles => Gen.Int[0, int.MaxValue].Select(seed => (quads, sym, nibbles, seed)))));
        gen.Sample(
            c =>
            {
                var rng = new Random(c.seed);
                int count = 4 * c.quads;
                using var data = PackedRowData.Random(rng, count, 64, c.nibbles ? 4 : 2, 32, c.sym, nonNegativeSteps: true);
                var p = Probabilities(rng, 2, Math.Max(count, 1), rng.Next(2) == 0);
                CheckBound(data.Rows, p, 2, Math.Max(count, 1), $"{c}");
            },
            iter: 150);
    }

    [SkippableTheory]
    [InlineData(2, 32, 32)]
    [InlineData(2, 64, 32)]
    [InlineData(2, 128, 32)]
    [InlineData(2, 128, 128)]
    [InlineData(4, 32, 32)]
    [InlineData(4, 64, 32)]
    [InlineData(4, 128, 64)]
    public void SoftmaxModeEqualsItsTwinAndTheProbabilityModeOnSoftExpWeights(int bits, int hd, int g)
    {
        // The fused exponential: vector = scalar twin bit for bit (outputs and sums), and the same outputs as the
        // probability mode given SoftExp(score - max) (the same weights through the same pipeline).
        Skip.IfNot(Int8ValueKernels.IsSupported, "AVX-512BW / VBMI not available");
        var rng = new Random(hd + g + bits);
        foreach (int count in new[] { 0, 8, 56, 64, 72, 136 })
        {
            foreach (int nh in new[] { 1, 4, 6 })
            {
                using var data = PackedRowData.Random(rng, count, hd, bits, g, false, nonNegativeSteps: true);
                int stride = count + 3;
                var scores = Enumerable.Range(0, nh * stride).Select(_ => (float)(rng.NextDouble() * 30) - 20).ToArray();
                var max = Enumerable.Range(0, nh).Select(r => Enumerable.Range(0, count).Select(t => scores[(r * stride) + t]).DefaultIfEmpty(0).Max()).ToArray();
                var probs = scores.Select((x, i) => Int8ValueKernels.SoftExp(x - max[i / stride])).ToArray();
                var got = new float[nh * hd];
                var twin = new float[nh * hd];
                var viaProbs = new float[nh * hd];
                var sums = new float[nh];
                var twinSums = new float[nh];
                fixed (float* sp = scores, mp = max, pp = probs, o = got, t = twin, v = viaProbs, su = sums, ts = twinSums)
                {
                    Int8ValueKernels.AccumulateSoftmax(data.Rows, sp, stride, nh, mp, su, o);
                    Int8ValueKernels.AccumulateSoftmaxScalar(data.Rows, sp, stride, nh, mp, ts, t);
                    Int8ValueKernels.Accumulate(data.Rows, pp, stride, nh, v);
                }

                Assert.Equal(twin.Select(BitConverter.SingleToInt32Bits), got.Select(BitConverter.SingleToInt32Bits));
                Assert.Equal(twinSums.Select(BitConverter.SingleToInt32Bits), sums.Select(BitConverter.SingleToInt32Bits));
                Assert.Equal(viaProbs.Select(BitConverter.SingleToInt32Bits), got.Select(BitConverter.SingleToInt32Bits));
                for (int r = 0; r < nh; r++)
                {
                    double want = Enumerable.Range(0, count).Sum(i => (double)probs[(r * stride) + i]);
                    Assert.True(Math.Abs(sums[r] - want) <= 1e-6 * Math.Max(1, want), $"hd {hd} count {count} head {r}: sum {sums[r]} vs {want}");
                }
            }
        }
    }

    [Fact]
    public void SoftExpIsWithin5e7OfExpAndItsVectorIsBitIdentical()
    {
        var xs = Enumerable.Range(0, 20000).Select(i => -87f * i / 19999).Concat([0f, -1e-8f, -0.3465736f, -0.3465737f, -86.9f]).ToArray();
        foreach (float x in xs)
        {
            double rel = Math.Abs(Int8ValueKernels.SoftExp(x) - Math.Exp(x)) / Math.Exp(x);
            Assert.True(rel < 5e-7, $"SoftExp({x}) = {Int8ValueKernels.SoftExp(x)} vs {Math.Exp(x)}: {rel:E2}");
        }

        Assert.Equal(Int8ValueKernels.SoftExp(-87f), Int8ValueKernels.SoftExp(-1000f)); // clamped
        if (Int8ValueKernels.IsSupported)
        {
            for (int i = 0; i + 16 <= xs.Length; i += 16)
            {
                var v = Int8ValueKernels.SoftExp(Vector512.Create(xs.AsSpan(i, 16)));
                for (int l = 0; l < 16; l++)
                {
                    Assert.Equal(BitConverter.SingleToInt32Bits(Int8ValueKernels.SoftExp(xs[i + l])), BitConverter.SingleToInt32Bits(v[l]));
                }
            }
        }
    }

    [Fact]
    public void Max8EqualsItsScalarTwinWhereverTheLargestLaneLies()
    {
        if (!Int8ValueKernels.IsSupported)
        {
            return;
        }

        // Random vectors, and one-hot ones: the largest value of vector k in each of its 16 lanes in turn.
        var cases = new List<float[]>();
        Gen.Float[-1e6f, 1e6f].Array[128].Sample(v => cases.Add(v), iter: 200);
        for (int lane = 0; lane < 16; lane++)
        {
            var v = Enumerable.Range(0, 128).Select(i => -1f - i).ToArray();
            for (int k = 0; k < 8; k++)
            {
                v[(16 * k) + ((lane + k) % 16)] = 100f + k;
            }

            cases.Add(v);
        }

        float* want = stackalloc float[8];
        foreach (var v in cases)
        {
            fixed (float* p = v)
            {
                var got = Int8ValueKernels.Max8(p);
                Int8ValueKernels.Max8Scalar(p, want);
                for (int k = 0; k < 8; k++)
                {
                    Assert.Equal(want[k], got[k]);
                }
            }
        }
    }

    [Theory]
    [InlineData(2)]
    [InlineData(4)]
    public void EqualWeightsAndStepsAreSummedExactly(int bits)
    {
        // Every weight at the block maximum rounds to exactly 255 (127 for 4-bit codes), so the only error left is float
        // rounding; every code at its largest gives the largest int16 sums (16 quads x 1,530 = 24,480; 16 x 3,810 =
        // 60,960 as unsigned words) before the widening.
        const int Count = 256, Hd = 128;
        using var data = new PackedRowData(Count, Hd, bits, 32, false);
        Array.Fill(data.Codes, (byte)0xFF);
        for (int i = 0; i < data.Params.Length; i += 2)
        {
            data.Params[i] = BitConverter.HalfToUInt16Bits((Half)0.5f);
            data.Params[i + 1] = BitConverter.HalfToUInt16Bits((Half)(-1f));
        }

        var p = Enumerable.Repeat(0.25f, 4 * Count).ToArray();
        var got = new float[4 * Hd];
        fixed (float* pp = p, o = got)
        {
            Int8ValueKernels.Accumulate(data.Rows, pp, Count, 4, o);
        }

        float exact = Count * 0.25f * ((0.5f * ((1 << bits) - 1)) - 1f);
        Assert.All(got, x => Assert.Equal(exact, x, 4));
    }

    [Fact]
    public void BadInputIsRejectedByName()
    {
        using var odd = new PackedRowData(6, 64, 2, 32, false);
        var p = new float[4 * 8];
        var o = new float[4 * 64];
        var e = Assert.Throws<ArgumentException>(() => Run(odd.Rows, p, 8, o));
        Assert.Contains("6 rows", e.Message);

        using var eightBit = new PackedRowData(4, 64, 8, 32, false);
        e = Assert.Throws<ArgumentException>(() => Run(eightBit.Rows, p, 8, o));
        Assert.Contains("got 8 bits", e.Message);

        using var negative = new PackedRowData(4, 64, 2, 32, false);
        negative.Params[2] = BitConverter.HalfToUInt16Bits((Half)(-0.5f));
        e = Assert.Throws<ArgumentException>(() => Run(negative.Rows, p, 8, o));
        Assert.Contains("steps >= 0", e.Message);
        e = Assert.Throws<ArgumentException>(() =>
        {
            fixed (float* pp = p, oo = o)
            {
                Int8ValueKernels.AccumulateScalar(negative.Rows, pp, 8, 1, oo);
            }
        });
        Assert.Contains("steps >= 0", e.Message);
    }

    private static void Run(in PackedRows rows, float[] p, int stride, float[] o)
    {
        fixed (float* pp = p, oo = o)
        {
            Int8ValueKernels.Accumulate(rows, pp, stride, 1, oo);
        }
    }

    // Checks |kernel - exact| <= Int8ValueKernels.ErrorBound for every head and channel.
    private static void CheckBound(in PackedRows rows, float[] p, int nh, int stride, string what)
    {
        int hd = rows.HeadDim;
        var got = new float[nh * hd];
        fixed (float* pp = p, o = got)
        {
            Int8ValueKernels.Accumulate(rows, pp, stride, nh, o);
            float* x = stackalloc float[hd];
            var exact = new double[nh * hd];
            for (int t = 0; t < rows.Count; t++)
            {
                FusedAttentionKernels.DequantizeScalar(rows, t, x);
                for (int r = 0; r < nh; r++)
                {
                    for (int c = 0; c < hd; c++)
                    {
                        exact[(r * hd) + c] += (double)pp[(r * stride) + t] * x[c];
                    }
                }
            }

            var table = Int8ValueKernels.PermutationTable(hd, rows.Bits);
            if (hd % 64 == 0 || rows.Bits == 4)
            {
                Assert.Equal(FusedAttentionKernels.PermutationTable(hd, rows.Bits), table);
            }

            for (int r = 0; r < nh; r++)
            {
                for (int pos = 0; pos < hd; pos++)
                {
                    int c = table[pos];
                    double bound = Int8ValueKernels.ErrorBound(rows, pp, stride, r, c, 1e-5) + 1e-30;
                    double err = Math.Abs(got[(r * hd) + pos] - exact[(r * hd) + c]);
                    Assert.True(err <= bound, $"{what}: head {r} channel {c}: {got[(r * hd) + pos]} vs exact {exact[(r * hd) + c]}, error {err} > bound {bound}");
                }
            }
        }
    }

    // Softmax-like weights in [0, 1]: spread, or one large weight per 50 tokens among tiny ones (peak).
    private static float[] Probabilities(Random rng, int nh, int stride, bool peak) =>
        Enumerable.Range(0, nh * stride).Select(i => peak ? (i % 50 == 7 ? 1f : (float)(rng.NextDouble() * 1e-3)) : (float)rng.NextDouble()).ToArray();

    private static float[] RandomOutputs(Random rng, int n) =>
        Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray();
}
