using System.Runtime.Intrinsics;
using KvAdaQuant.Engine;
using KvAdaQuant.Model;
using KvAdaQuant.Numerics;

namespace KvAdaQuant.Tests.Numerics;

/// <summary>
/// ggml's float arithmetic as reproduced by <see cref="GgmlArithmetic"/> and the kernels built on it: vector paths give
/// the bits of their scalar twins, the lane orders are the documented ones, and the results stay accurate. (That the
/// bits are llama.cpp's is shown against llama.cpp itself in LlamaCppTensorTraceTests and LlamaCppAgreementTests.)
/// </summary>
public unsafe class GgmlArithmeticTests
{
    private static bool Same(float a, float b) => BitConverter.SingleToInt32Bits(a) == BitConverter.SingleToInt32Bits(b);

    [Fact]
    public void Exp_IsWithinThreeUlpOfTheTrueValueAndHandlesTheEdges()
    {
        var rng = new Random(1);
        for (int i = 0; i < 20000; i++)
        {
            float x = (float)((rng.NextDouble() * 175) - 87);
            double exact = Math.Exp(x);
            float got = GgmlArithmetic.Exp(x);
            double ulp = MathF.BitIncrement((float)exact) - (float)exact;
            Assert.True(Math.Abs(got - exact) <= 3 * ulp, $"exp({x:R}) = {got:R}, true {exact:R}");
        }

        Assert.Equal(1f, GgmlArithmetic.Exp(0f));
        Assert.Equal(0f, GgmlArithmetic.Exp(float.NegativeInfinity));
        Assert.Equal(0f, GgmlArithmetic.Exp(-1000f));
        Assert.Equal(float.PositiveInfinity, GgmlArithmetic.Exp(1000f));
        Assert.True(float.IsNaN(GgmlArithmetic.Exp(float.NaN)));

        // below 2^-126 the result is a subnormal, rounded once as vscalefps does: close to the true value in absolute terms.
        float sub = GgmlArithmetic.Exp(-95f);
        Assert.True(sub > 0 && Math.Abs(sub - Math.Exp(-95)) < 1e-44);
    }

    [Fact]
    public void ExpVector_GivesTheBitsOfTheScalarTwin()
    {
        var rng = new Random(2);
        var xs = Enumerable.Range(0, 4096).Select(_ => (float)((rng.NextDouble() * 240) - 120)).ToList();
        xs.AddRange([0f, -0f, 88.5f, -87.5f, -103.9f, -150f, 200f, -200f, float.NaN, float.PositiveInfinity, float.NegativeInfinity, 1e-30f]);
        while (xs.Count % 8 != 0)
        {
            xs.Add(1f);
        }

        for (int i = 0; i < xs.Count; i += 8)
        {
            var v = GgmlArithmetic.Exp(Vector256.Create<float>(xs.GetRange(i, 8).ToArray()));
            for (int l = 0; l < 8; l++)
            {
                float s = GgmlArithmetic.Exp(xs[i + l]);
                Assert.True(Same(s, v.GetElement(l)) || (float.IsNaN(s) && float.IsNaN(v.GetElement(l))), $"exp({xs[i + l]:R}): vector {v.GetElement(l):R}, scalar {s:R}");
                float sv = GgmlArithmetic.Silu(Vector256.Create<float>(xs.GetRange(i, 8).ToArray())).GetElement(l);
                float ss = GgmlArithmetic.Silu(xs[i + l]);
                Assert.True(Same(ss, sv) || (float.IsNaN(ss) && float.IsNaN(sv)), $"silu({xs[i + l]:R})");
            }
        }

        while (xs.Count % 16 != 0)
        {
            xs.Add(-3f);
        }

        for (int i = 0; i < xs.Count; i += 16)
        {
            var v = GgmlArithmetic.Exp(Vector512.Create<float>(xs.GetRange(i, 16).ToArray()));
            for (int l = 0; l < 16; l++)
            {
                float s = GgmlArithmetic.Exp(xs[i + l]);
                Assert.True(Same(s, v.GetElement(l)) || (float.IsNaN(s) && float.IsNaN(v.GetElement(l))), $"exp512({xs[i + l]:R}): vector {v.GetElement(l):R}, scalar {s:R}");
            }
        }
    }

    [Fact]
    public void ExpVector_TakesTheShortRouteOnlyWhereItGivesTheSameBits()
    {
        // Whole vectors of exponents n = round(x / ln 2) within +-126 take the short route (2^n normal in every lane);
        // one lane at n = +-127, beyond, or NaN sends the vector down the general route. Both must give the scalar twin's
        // bits, so vectors are built on each side of the boundary: all lanes inside (random, and exactly at n = +-126),
        // and the same with one lane moved to n = +-127, -150 (subnormal), +-200 (beyond) or NaN.
        var rng = new Random(3);
        float ln2 = MathF.Log(2f);
        var inside = new List<float[]>();
        for (int v = 0; v < 512; v++)
        {
            inside.Add(Enumerable.Range(0, 16).Select(_ => (float)((rng.NextDouble() * 174) - 87)).ToArray());
        }

        inside.Add(Enumerable.Range(0, 16).Select(l => (l % 2 == 0 ? 126f : -126f) * ln2).ToArray());
        inside.Add(Enumerable.Range(0, 16).Select(l => ((l % 2 == 0 ? 126.49f : -126.49f) * ln2) + (l * 1e-6f)).ToArray());
        var vectors = new List<float[]>(inside);
        foreach (float odd in new[] { 127f * ln2, -127f * ln2, -150f, 200f, -200f, float.NaN, float.NegativeInfinity })
        {
            foreach (var baseVector in inside.Take(64))
            {
                var x = (float[])baseVector.Clone();
                x[rng.Next(16)] = odd;
                vectors.Add(x);
            }
        }

        foreach (var x in vectors)
        {
            var v512 = GgmlArithmetic.Exp(Vector512.Create<float>(x));
            var lo = GgmlArithmetic.Exp(Vector256.Create<float>(x[..8]));
            var hi = GgmlArithmetic.Exp(Vector256.Create<float>(x[8..]));
            for (int l = 0; l < 16; l++)
            {
                float s = GgmlArithmetic.Exp(x[l]);
                float w256 = l < 8 ? lo.GetElement(l) : hi.GetElement(l - 8);
                Assert.True(Same(s, v512.GetElement(l)) || (float.IsNaN(s) && float.IsNaN(v512.GetElement(l))), $"exp512({x[l]:R}): vector {v512.GetElement(l):R}, scalar {s:R}");
                Assert.True(Same(s, w256) || (float.IsNaN(s) && float.IsNaN(w256)), $"exp256({x[l]:R}): vector {w256:R}, scalar {s:R}");
            }
        }

        // The inside vectors really are inside: every lane's n within +-126 (so the short route is the one tested).
        foreach (var x in inside)
        {
            Assert.All(x, xi => Assert.InRange(MathF.Abs(MathF.Round(xi / ln2)), 0f, 126f));
        }
    }

    [Fact]
    public void Sum16x4_GivesEachVectorsSum16Bits()
    {
        // Magnitudes spread over many binades make the order of additions show in the bits.
        var rng = new Random(4);
        for (int trial = 0; trial < 2000; trial++)
        {
            var v = Enumerable.Range(0, 4)
                .Select(_ => Vector512.Create<float>(Enumerable.Range(0, 16).Select(_ => (float)((rng.NextDouble() - 0.3) * Math.Pow(2, rng.Next(-20, 20)))).ToArray()))
                .ToArray();
            var got = Kernels.Sum16x4(v[0], v[1], v[2], v[3]);
            for (int k = 0; k < 4; k++)
            {
                float want = GgmlArithmetic.Sum16(v[k].GetLower(), v[k].GetUpper());
                Assert.True(Same(want, got.GetElement(4 * k)), $"trial {trial}, vector {k}: {got.GetElement(4 * k):R} vs {want:R}");
            }
        }
    }

    [Fact]
    public void ScaledSoftMax_GivesTheBitsOfMultiplyThenSoftMax()
    {
        var rng = new Random(13);
        foreach (int n in new[] { 1, 15, 16, 17, 31, 33, 1000, 4099 })
        {
            foreach (float scale in new[] { 0.125f, 1f / MathF.Sqrt(128), 3f })
            {
                var x = Enumerable.Range(0, n).Select(_ => (float)((rng.NextDouble() * 80) - 40)).ToArray();
                var want = (float[])x.Clone();
                System.Numerics.Tensors.TensorPrimitives.Multiply(want, scale, want);
                Kernels.SoftMax(want);
                Kernels.ScaledSoftMax(x, scale);
                for (int i = 0; i < n; i++)
                {
                    Assert.True(Same(want[i], x[i]), $"n {n}, scale {scale}, i {i}: {want[i]:R} vs {x[i]:R}");
                }
            }
        }
    }

    [Fact]
    public void SoftMax_VectorMaximumSkipsNaNsAndEqualsTheScalarLoop()
    {
        var rng = new Random(12);
        foreach (int n in new[] { 0, 1, 15, 16, 17, 31, 32, 33, 100, 1000 })
        {
            var x = Enumerable.Range(0, n).Select(_ => (float)((rng.NextDouble() * 200) - 100)).ToArray();
            for (int i = 0; i < n; i += 7)
            {
                x[i] = i % 3 == 0 ? float.NaN : float.NegativeInfinity;
            }

            float expected = float.NegativeInfinity;
            foreach (float v in x)
            {
                expected = v > expected ? v : expected;
            }

            Assert.True(Same(expected, Kernels.MaxVector(x)), $"n {n}");
        }
    }

    [Fact]
    public void Sum16_AddsInTheOrderOfMm512ReduceAddPs()
    {
        var rng = new Random(3);
        for (int t = 0; t < 1000; t++)
        {
            var a = Enumerable.Range(0, 16).Select(_ => (float)(rng.NextDouble() * Math.Pow(10, rng.Next(-3, 8)) * (rng.Next(2) * 2 - 1))).ToArray();
            float t0 = (a[12] + a[4]) + (a[8] + a[0]);
            float t1 = (a[13] + a[5]) + (a[9] + a[1]);
            float t2 = (a[14] + a[6]) + (a[10] + a[2]);
            float t3 = (a[15] + a[7]) + (a[11] + a[3]);
            float expected = (t0 + t2) + (t1 + t3);
            Assert.True(Same(expected, GgmlArithmetic.Sum16(a)));
            Assert.True(Same(expected, GgmlArithmetic.Sum16(Vector256.Create<float>(a.AsSpan(0, 8)), Vector256.Create<float>(a.AsSpan(8, 8)))));
        }
    }

    [Fact]
    public void Sum8_AddsInTheOrderOfHsumFloat8_NotLeftToRight()
    {
        // 1e8 + 1 rounds back to 1e8 in float: left to right gives 1, ggml's order pairs 1e8 with -1e8 first and gives 2.
        float[] lanes = [1e8f, 1f, -1e8f, 1f, 0f, 0f, 0f, 0f];
        Assert.Equal(2f, GgmlArithmetic.Sum8(Vector256.Create<float>(lanes)));
        Assert.Equal(2f, GgmlArithmetic.Sum8Scalar(lanes));
        float leftToRight = 0;
        foreach (float v in lanes)
        {
            leftToRight += v;
        }

        Assert.Equal(1f, leftToRight);

        var rng = new Random(4);
        for (int t = 0; t < 1000; t++)
        {
            var a = Enumerable.Range(0, 8).Select(_ => (float)((rng.NextDouble() - 0.5) * Math.Pow(10, rng.Next(-3, 8)))).ToArray();
            Assert.True(Same(GgmlArithmetic.Sum8Scalar(a), GgmlArithmetic.Sum8(Vector256.Create<float>(a))));
        }
    }

    [Fact]
    public void Dot_VectorPathAndRowBatchGiveTheBitsOfTheScalarTwin()
    {
        var rng = new Random(5);
        foreach (int n in new[] { 1, 3, 7, 8, 12, 16, 31, 32, 48, 63, 64, 65, 100, 128, 172, 200, 256, 300 })
        {
            var x = Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray();
            int count = 11;
            var rows = Enumerable.Range(0, n * count).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray();
            var batch = new float[count];
            GgmlArithmetic.DotRows(x, rows, count, batch);
            for (int j = 0; j < count; j++)
            {
                var row = rows.AsSpan(j * n, n);
                float scalar = GgmlArithmetic.DotScalar(x, row);
                Assert.True(Same(scalar, GgmlArithmetic.DotVector(x, row)), $"n {n}: vector differs");
                Assert.True(Same(scalar, batch[j]), $"n {n}: DotRows differs at row {j}");
                double exact = 0;
                for (int i = 0; i < n; i++)
                {
                    exact += (double)x[i] * row[i];
                }

                Assert.True(Math.Abs(scalar - exact) <= 1e-5 * Math.Sqrt(n), $"n {n}: {scalar} vs {exact}");
            }
        }
    }

    [Fact]
    public void Dot_TailRoundsProductsOfWholeGroupsOfEightAndFusesTheRest()
    {
        // n = 76: one chunk of 64 in four fused 16-lane accumulators, then 8 rounded products added, then 4 fused.
        var rng = new Random(6);
        var x = Enumerable.Range(0, 76).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray();
        var y = Enumerable.Range(0, 76).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray();
        var v = new float[16];
        for (int l = 0; l < 16; l++)
        {
            v[l] = (x[l] * y[l] + x[32 + l] * y[32 + l]) + (x[16 + l] * y[16 + l] + x[48 + l] * y[48 + l]);
        }

        float expected = GgmlArithmetic.Sum16(v);
        for (int i = 64; i < 72; i++)
        {
            expected += x[i] * y[i];
        }

        for (int i = 72; i < 76; i++)
        {
            expected = MathF.FusedMultiplyAdd(x[i], y[i], expected);
        }

        Assert.True(Same(expected, GgmlArithmetic.DotScalar(x, y)));
        Assert.True(Same(expected, GgmlArithmetic.Dot(x, y)));
    }

    [Fact]
    public void ReduceLanes16_IsSum16OfEachColumn()
    {
        var rng = new Random(7);
        const int n = 24;
        var lanes = Enumerable.Range(0, 16 * n).Select(_ => (float)(rng.NextDouble() * 100 - 50)).ToArray();
        var expected = new float[n];
        for (int d = 0; d < n; d++)
        {
            expected[d] = GgmlArithmetic.Sum16(Enumerable.Range(0, 16).Select(l => lanes[(l * n) + d]).ToArray());
        }

        var output = new float[n];
        GgmlArithmetic.ReduceLanes16(lanes, n, output);
        for (int d = 0; d < n; d++)
        {
            Assert.True(Same(expected[d], output[d]));
        }
    }

    [Fact]
    public void SoftMax_VectorPathGivesTheBitsOfTheScalarTwinAndIsAccurate()
    {
        var rng = new Random(8);
        foreach (int n in new[] { 1, 2, 15, 16, 17, 33, 100, 160, 257, 4099, 32768 })
        {
            var x = Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() * 40 - 30)).ToArray();
            if (n > 3)
            {
                x[2] = -1e30f;
            }

            var a = (float[])x.Clone();
            var b = (float[])x.Clone();
            Kernels.SoftMaxScalar(a);
            Kernels.SoftMaxVector(b);
            double max = x.Max();
            double z = x.Sum(v => Math.Exp(v - max));
            for (int i = 0; i < n; i++)
            {
                Assert.True(Same(a[i], b[i]), $"n {n}, i {i}: {a[i]:R} vs {b[i]:R}");
                Assert.True(Math.Abs(a[i] - (Math.Exp(x[i] - max) / z)) <= 1e-6, $"n {n}, i {i}");
            }
        }
    }

    [Fact]
    public void SwiGlu_UsesGgmlExpInGroupsOfSixteenAndTheLibraryExpForTheRestOfEachRow()
    {
        var rng = new Random(9);
        const int row = 44;
        var g = Enumerable.Range(0, 2 * row).Select(_ => (float)(rng.NextDouble() * 16 - 8)).ToArray();
        var u = Enumerable.Range(0, 2 * row).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
        var got = (float[])g.Clone();
        Kernels.SwiGlu(got, u, row);
        for (int i = 0; i < g.Length; i++)
        {
            int col = i % row;
            float expected = col < 32 ? GgmlArithmetic.Silu(g[i]) * u[i] : g[i] / (1f + MathF.Exp(-g[i])) * u[i];
            Assert.True(Same(expected, got[i]), $"element {i}");
            Assert.True(Math.Abs(got[i] - (g[i] / (1 + Math.Exp(-g[i])) * u[i])) <= 1e-5);
        }

        Assert.Throws<ArgumentException>(() => Kernels.SwiGlu(new float[10], new float[10], 3));
    }

    [Fact]
    public void DotQ4_0x8Chain_GivesTheBitsOfTheScalarTwin()
    {
        var rng = new Random(10);
        const int blocks = 7;
        var w = new byte[8 * blocks * 18];
        rng.NextBytes(w);
        for (int r = 0; r < 8 * blocks; r++)
        {
            fixed (byte* p = &w[r * 18])
            {
                // signed scales (Q4_0's d = max / -8), some FP16 subnormals and zeros: the vector FP16 conversion covers them.
                *(Half*)p = (r % 5) switch
                {
                    0 => (Half)(float)(-((rng.NextDouble() * 0.02) + 0.001)),
                    1 => (Half)(float)(rng.NextDouble() * 5e-5),
                    2 => (Half)0f,
                    _ => (Half)(float)((rng.NextDouble() * 0.02) + 0.001),
                };
            }
        }

        var x = Enumerable.Range(0, blocks * 32).Select(_ => (float)((rng.NextDouble() * 4) - 2)).ToArray();
        var a = new Q8Activations();
        a.Quantize(x, 1, blocks * 32);
        var output = new float[8];
        fixed (byte* pw = w)
        fixed (sbyte* pq = a.Values)
        fixed (float* pd = a.Scales)
        fixed (int* ps = a.Sums)
        fixed (float* po = output)
        {
            QuantizedDot.DotQ4_0x8Chain(pw, blocks * 18, pq, pd, ps, blocks, po);
            var twoTokens = new float[16];
            fixed (float* pt = twoTokens)
            {
                // the same activations twice: both tokens must give the single-token bits.
                var q2 = a.Values.AsSpan(0, blocks * 32).ToArray().Concat(a.Values.AsSpan(0, blocks * 32).ToArray()).ToArray();
                var d2 = a.Scales.AsSpan(0, blocks).ToArray().Concat(a.Scales.AsSpan(0, blocks).ToArray()).ToArray();
                var s2 = a.Sums.AsSpan(0, blocks).ToArray().Concat(a.Sums.AsSpan(0, blocks).ToArray()).ToArray();
                fixed (sbyte* pq2 = q2)
                fixed (float* pd2 = d2)
                fixed (int* ps2 = s2)
                {
                    QuantizedDot.DotQ4_0x8ChainTokens(pw, blocks * 18, 2, pq2, blocks * 32, pd2, ps2, blocks, blocks, pt, 8);
                }
            }

            for (int r = 0; r < 8; r++)
            {
                Assert.True(Same(output[r], twoTokens[r]) && Same(output[r], twoTokens[8 + r]), $"row {r}: two-token call differs");
            }

            for (int r = 0; r < 8; r++)
            {
                float scalar = QuantizedDot.DotQ4_0ChainScalar(pw + (r * blocks * 18), pq, pd, blocks);
                Assert.True(Same(scalar, output[r]), $"row {r}: {output[r]:R} vs {scalar:R}");
                float lanes = QuantizedDot.DotQ4_0Scalar(pw + (r * blocks * 18), pq, pd, blocks);
                Assert.True(Math.Abs(scalar - lanes) <= 1e-4 * (1 + Math.Abs(lanes)));
            }
        }
    }

    [Fact]
    public void RopeTable_MultipliesThetaInFloatAsGgmlDoes()
    {
        var config = new ModelConfig { Dim = 64, HiddenDim = 128, Layers = 1, Heads = 2, KvHeads = 2, HeadDim = 32, VocabSize = 8, ContextLength = 512, RopeTheta = 10000f };
        var table = new RopeTable(config);
        var cos = new float[table.Half];
        var sin = new float[table.Half];
        float scale = MathF.Pow(10000f, -2f / 32);
        foreach (int pos in new[] { 0, 1, 7, 100, 511 })
        {
            table.Angles(pos, cos, sin);
            float theta = pos;
            for (int i = 0; i < table.Half; i++)
            {
                Assert.True(Same(MathF.Cos(theta), cos[i]) && Same(MathF.Sin(theta), sin[i]), $"pos {pos}, pair {i}");
                double exact = pos * Math.Pow(10000, -2.0 * i / 32);
                Assert.True(Math.Abs(cos[i] - Math.Cos(exact)) < 1e-3 && Math.Abs(sin[i] - Math.Sin(exact)) < 1e-3);
                theta *= scale;
            }
        }
    }
}
