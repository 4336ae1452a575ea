using System.Runtime.InteropServices;
using KvAdaQuant.Numerics;

namespace KvAdaQuant.Tests.Numerics;

/// <summary>The fused decode-attention kernels (AVX-512) against their scalar twins, on random packed and FP16/FP32 rows.</summary>
public unsafe class FusedAttentionKernelsTests
{
    public static TheoryData<int, int, int, bool> PackedShapes()
    {
        var data = new TheoryData<int, int, int, bool>();
        foreach (int bits in new[] { 2, 4, 8 })
        {
            foreach (int hd in new[] { 64, 128 })
            {
                foreach (int g in new[] { 8, 16, 32, 64, hd }.Distinct())
                {
                    if (g <= hd && FusedAttentionKernels.SupportsPacked(bits, hd, g))
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
    public void PermutationIsABijectionPerSlab()
    {
        foreach (int bits in new[] { 2, 4, 8 })
        {
            var seen = new bool[128];
            for (int p = 0; p < 128; p++)
            {
                int c = FusedAttentionKernels.PermutedChannel(p, bits);
                Assert.Equal(p / 64, c / 64);
                Assert.False(seen[c]);
                seen[c] = true;
            }
        }

        Assert.Equal(3, FusedAttentionKernels.PermutedChannel(17, 4));
        Assert.Equal(5, FusedAttentionKernels.PermutedChannel(17, 2));
        Assert.Equal(17, FusedAttentionKernels.PermutedChannel(17, 8));
        Assert.Equal(64 + 32 + 6 + 1, FusedAttentionKernels.PermutedChannel(64 + 48 + 3, 4));
    }

    [SkippableTheory]
    [MemberData(nameof(PackedShapes))]
    public void PackedScoresAndSumsMatchTheScalarTwin(int bits, int hd, int g, bool symmetric)
    {
        Skip.IfNot(FusedAttentionKernels.IsSupported, "AVX-512 not available");
        var rng = new Random((bits * 1000) + (hd * 10) + g + (symmetric ? 7 : 0));
        foreach (int count in new[] { 1, 7, 8, 9, 16, 17, 24, 31, 48, 63, 64, 65, 130 })
        {
            foreach (int rep in new[] { 1, 3, 4, 5 })
            {
                var (codes, prm) = RandomPackedRows(rng, bits, hd, g, symmetric, count);
                var q = Random(rng, rep * hd);
                int stride = count + 3;
                var probs = Random(rng, rep * stride);
                float step = 1, offset = symmetric ? -((1 << bits) / 2 - 1) : 0;
                fixed (byte* c = codes)
                fixed (ushort* p = prm)
                {
                    var rows = new PackedRows(c, p, count, hd, bits, g, symmetric, step, offset);
                    var want = new float[rep * stride];
                    var got = new float[rep * stride];
                    var pq = new float[rep * hd];
                    FusedAttentionKernels.Permute(q, FusedAttentionKernels.PermutationTable(hd, bits), pq);
                    fixed (float* qp = q, pqp = pq, w = want, gp = got)
                    {
                        FusedAttentionKernels.ScoresPackedScalar(rows, qp, rep, w, stride);
                        FusedAttentionKernels.ScoresPacked(rows, pqp, rep, gp, stride);
                    }

                    AssertClose(want, got, ScoreBound(rows, q, rep), $"scores bits {bits} hd {hd} g {g} sym {symmetric} count {count} rep {rep}");

                    var wantO = Random(rng, rep * hd);
                    var gotP = new float[rep * hd];
                    var gotO = wantO.ToArray();
                    fixed (float* pr = probs, w = wantO, gp = gotP)
                    {
                        FusedAttentionKernels.AccumulatePackedScalar(rows, pr, stride, rep, w);
                        FusedAttentionKernels.AccumulatePacked(rows, pr, stride, rep, gp);
                    }

                    FusedAttentionKernels.AddUnpermuted(gotP, FusedAttentionKernels.PermutationTable(hd, bits), gotO);
                    AssertClose(wantO, gotO, 1e-4f * count, $"sums bits {bits} hd {hd} g {g} sym {symmetric} count {count} rep {rep}");
                }
            }
        }
    }

    [Theory]
    [InlineData(64, 128)]
    [InlineData(128, 64)]
    [InlineData(192, 64)]
    [InlineData(32, 256)]
    public void SharedRowsFitL1AndKeepTheKernelsBlockStarts(int headDim, int rows)
    {
        int shared = FusedAttentionKernels.SharedRows(headDim);
        Assert.Equal(rows, shared);
        Assert.Equal(0, shared % FusedAttentionKernels.TokenBlock);
    }

    [SkippableTheory]
    [MemberData(nameof(PackedShapes))]
    public void DequantizedRowsMatchTheScalarTwinAndGiveThePackedKernelsBits(int bits, int hd, int g, bool symmetric)
    {
        Skip.IfNot(FusedAttentionKernels.IsSupported, "AVX-512 not available");
        var rng = new Random((bits * 977) + (hd * 13) + g + (symmetric ? 5 : 0));
        foreach (int count in new[] { 1, 9, 64, 65, 130 })
        {
            var (codes, prm) = RandomPackedRows(rng, bits, hd, g, symmetric, count);
            const int rep = 4;
            var pq = Random(rng, rep * hd);
            int stride = count + 3;
            var probs = Random(rng, rep * stride);
            float offset = symmetric ? -((1 << bits) / 2 - 1) : 0;
            var x = new float[count * hd];
            var xs = new float[count * hd];
            var packedScores = new float[rep * stride];
            var denseScores = new float[rep * stride];
            var packedSums = new float[rep * hd];
            var denseSums = new float[rep * hd];
            fixed (byte* c = codes)
            fixed (ushort* p = prm)
            fixed (float* xp = x, xsp = xs, q = pq, pr = probs, ps = packedScores, ds = denseScores, po = packedSums, dp = denseSums)
            {
                var rows = new PackedRows(c, p, count, hd, bits, g, symmetric, 1, offset);
                FusedAttentionKernels.DequantizePacked(rows, xp);
                FusedAttentionKernels.DequantizePackedScalar(rows, xsp);
                FusedAttentionKernels.ScoresPacked(rows, q, rep, ps, stride);
                FusedAttentionKernels.ScoresDense(xp, false, count, hd, q, rep, ds, stride);
                FusedAttentionKernels.AccumulatePacked(rows, pr, stride, rep, po);
                FusedAttentionKernels.AccumulateDense(xp, false, count, hd, pr, stride, rep, dp);
            }

            string what = $"bits {bits} hd {hd} g {g} sym {symmetric} count {count}";
            // The vector decoder fuses a * code + b; the twin rounds the product first (one rounding apart).
            AssertClose(xs, x, 1e-4f, $"dequantized {what}");
            Assert.True(packedScores.AsSpan().SequenceEqual(denseScores), $"scores of the decoded rows differ from the packed kernel's, {what}");
            Assert.True(packedSums.AsSpan().SequenceEqual(denseSums), $"sums of the decoded rows differ from the packed kernel's, {what}");
        }
    }

    [SkippableTheory]
    [InlineData(64, true)]
    [InlineData(128, true)]
    [InlineData(64, false)]
    [InlineData(128, false)]
    [InlineData(192, true)]
    public void DenseScoresAndSumsMatchTheScalarTwin(int hd, bool half)
    {
        Skip.IfNot(FusedAttentionKernels.IsSupported, "AVX-512 not available");
        var rng = new Random(hd + (half ? 1 : 0));
        foreach (int count in new[] { 1, 7, 8, 9, 16, 24, 31, 64, 65, 130 })
        {
            foreach (int rep in new[] { 1, 2, 4, 6 })
            {
                var values = Random(rng, count * hd);
                var halves = values.Select(v => (Half)v).ToArray();
                var q = Random(rng, rep * hd);
                int stride = count + 1;
                var probs = Random(rng, rep * stride);
                var want = new float[rep * stride];
                var got = new float[rep * stride];
                var wantO = Random(rng, rep * hd);
                var gotO = wantO.ToArray();
                fixed (float* f = values)
                fixed (Half* h = halves)
                fixed (float* qp = q, w = want, gp = got, pr = probs, wo = wantO, go = gotO)
                {
                    void* data = half ? h : f;
                    FusedAttentionKernels.ScoresDenseScalar(data, half, count, hd, qp, rep, w, stride);
                    FusedAttentionKernels.ScoresDense(data, half, count, hd, qp, rep, gp, stride);
                    FusedAttentionKernels.AccumulateDenseScalar(data, half, count, hd, pr, stride, rep, wo);
                    FusedAttentionKernels.AccumulateDense(data, half, count, hd, pr, stride, rep, go);
                }

                AssertClose(want, got, 1e-5f * hd, $"dense scores hd {hd} half {half} count {count} rep {rep}");
                AssertClose(wantO, gotO, 1e-5f * count, $"dense sums hd {hd} half {half} count {count} rep {rep}");
            }
        }
    }

    [SkippableFact]
    public void HalfConversionIsExactForEveryFiniteHalf()
    {
        Skip.IfNot(FusedAttentionKernels.IsSupported, "AVX-512 not available");
        var all = Enumerable.Range(0, 65536).Select(i => (ushort)i).Where(u => Half.IsFinite(BitConverter.UInt16BitsToHalf(u))).ToArray();
        int n = all.Length / 16 * 16;
        var scores = new float[n];
        fixed (float* s = scores)
        {
            // Rows of 64 halves holding one value in channel 0 and a one-hot query: each score is that value.
            var rows = new ushort[n * 64];
            for (int i = 0; i < n; i++)
            {
                rows[i * 64] = all[i];
            }

            var q64 = new float[64];
            q64[0] = 1;
            fixed (ushort* r = rows)
            fixed (float* q64p = q64)
            {
                FusedAttentionKernels.ScoresDense(r, true, n, 64, q64p, 1, s, n);
            }
        }

        for (int i = 0; i < n; i++)
        {
            Assert.Equal((float)BitConverter.UInt16BitsToHalf(all[i]), scores[i]);
        }
    }

    internal static float ScoreBound(in PackedRows rows, float[] q, int rep, float relative = 2e-6f)
    {
        // Float rounding of a dot product of hd terms: a few ulps of the sum of |q| |x|.
        float* x = stackalloc float[rows.HeadDim];
        float worst = 0;
        for (int t = 0; t < rows.Count; t++)
        {
            FusedAttentionKernels.DequantizeScalar(rows, t, x);
            for (int r = 0; r < rep; r++)
            {
                float s = 0;
                for (int c = 0; c < rows.HeadDim; c++)
                {
                    s += MathF.Abs(q[(r * rows.HeadDim) + c] * x[c]);
                }

                worst = MathF.Max(worst, s);
            }
        }

        return (relative * worst) + 1e-30f;
    }

    private static void AssertClose(float[] want, float[] got, float tol, string what)
    {
        for (int i = 0; i < want.Length; i++)
        {
            Assert.True(MathF.Abs(want[i] - got[i]) <= tol, $"{what}: element {i}: vector {got[i]} vs scalar {want[i]} (tolerance {tol})");
        }
    }

    // count random rows of packed codes and their FP16 parameters (steps, and offsets where asymmetric; 32 spare halves
    // for the kernels' parameter windows).
    internal static (byte[] Codes, ushort[] Params) RandomPackedRows(Random rng, int bits, int hd, int g, bool symmetric, int count)
    {
        int np = hd / g * (symmetric ? 1 : 2);
        var codes = new byte[count * hd * bits / 8];
        rng.NextBytes(codes);
        var prm = new ushort[(count * np) + 32];
        for (int i = 0; i < count * np; i++)
        {
            prm[i] = BitConverter.HalfToUInt16Bits((Half)((rng.NextDouble() * 2) - (symmetric || i % 2 == 0 ? 0.2 : 1)));
        }

        return (codes, prm);
    }

    internal static float[] Random(Random rng, int n) => Enumerable.Range(0, n).Select(_ => (float)((rng.NextDouble() * 2) - 1)).ToArray();
}
