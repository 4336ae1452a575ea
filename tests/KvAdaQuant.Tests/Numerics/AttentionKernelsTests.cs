using System.Runtime.Intrinsics;
using CsCheck;
using KvAdaQuant.Numerics;

namespace KvAdaQuant.Tests.Numerics;

/// <summary>The GQA row kernels: every SIMD path against its scalar twin.</summary>
public class AttentionKernelsTests
{
    private static readonly Gen<(int Rep, int N16, float[] Data)> Case =
        Gen.Int[1, 8].SelectMany(rep => Gen.Int[1, 10].SelectMany(n16 => Gen.Float[-3f, 3f].Array[(rep + 1) * n16 * 16].Select(d => (rep, n16, d))));

    [Fact]
    public void MultiDotPathsMatchScalar()
    {
        Case.Sample(c =>
        {
            int n = c.N16 * 16;
            var q = c.Data.AsSpan(0, c.Rep * n).ToArray();
            var x = c.Data.AsSpan(c.Rep * n, n).ToArray();
            var want = new float[c.Rep * 3];
            AttentionKernels.MultiDotScalar(q, c.Rep, x, want, 3, 1);
            foreach (var path in Paths())
            {
                var got = new float[c.Rep * 3];
                path.Dot(q, c.Rep, x, got, 3, 1);
                for (int i = 0; i < got.Length; i++)
                {
                    Assert.True(MathF.Abs(got[i] - want[i]) <= 1e-4f * (1 + MathF.Abs(want[i])), $"{path.Name}: {got[i]} vs {want[i]}");
                }
            }
        });
    }

    [Fact]
    public void MultiAxpyAndAffinePathsMatchScalar()
    {
        Case.Sample(c =>
        {
            int n = c.N16 * 16;
            var o0 = c.Data.AsSpan(0, c.Rep * n).ToArray();
            var x = c.Data.AsSpan(c.Rep * n, n).ToArray();
            var p = Enumerable.Range(0, c.Rep * 2).Select(i => (float)Math.Cos(i)).ToArray();
            var want = o0.ToArray();
            AttentionKernels.MultiAxpyScalar(p, c.Rep, x, want, 2, 1);
            foreach (var path in Paths())
            {
                var got = o0.ToArray();
                path.Axpy(p, c.Rep, x, got, 2, 1);
                for (int i = 0; i < got.Length; i++)
                {
                    Assert.True(MathF.Abs(got[i] - want[i]) <= 1e-5f * (1 + MathF.Abs(want[i])), $"{path.Name}: {got[i]} vs {want[i]}");
                }
            }

            var a = x.ToArray();
            var b = x.ToArray();
            AttentionKernels.AffineScalar(a, 0.37f, -1.5f);
            AttentionKernels.AffineVector256(b, 0.37f, -1.5f);
            Assert.Equal(a, b);
        });
    }

    private static IEnumerable<(string Name, DotKernel Dot, AxpyKernel Axpy)> Paths()
    {
        yield return ("dispatch", AttentionKernels.MultiDot, AttentionKernels.MultiAxpy);
        if (Vector256.IsHardwareAccelerated)
        {
            yield return ("Vector256", AttentionKernels.MultiDotVector256, AttentionKernels.MultiAxpyVector256);
        }

        if (Vector512.IsHardwareAccelerated)
        {
            yield return ("Vector512", AttentionKernels.MultiDotVector512, AttentionKernels.MultiAxpyVector512);
        }
    }

    private delegate void DotKernel(ReadOnlySpan<float> q, int rep, ReadOnlySpan<float> x, Span<float> s, int stride, int j);

    private delegate void AxpyKernel(ReadOnlySpan<float> p, int rep, ReadOnlySpan<float> x, Span<float> o, int stride, int j);

    [Theory]
    [InlineData(8, 3, 5)]
    [InlineData(16, 1, 1)]
    [InlineData(32, 3, 37)]
    [InlineData(48, 4, 17)]
    [InlineData(64, 5, 33)]
    [InlineData(96, 2, 9)]
    [InlineData(12, 2, 7)]
    public void RowBatchesHaveTheBitsOfOneCallPerRow(int n, int rep, int count)
    {
        var rng = new Random((n * 7) + count);
        float Next() => (float)((rng.NextDouble() * 6) - 3);
        var q = Enumerable.Range(0, rep * n).Select(_ => Next()).ToArray();
        var rows = Enumerable.Range(0, count * n).Select(_ => Next()).ToArray();
        int stride = count + 5, j0 = 3;
        var probs = Enumerable.Range(0, rep * stride).Select(_ => MathF.Abs(Next())).ToArray();

        var want = new float[rep * stride];
        var got = new float[rep * stride];
        for (int j = 0; j < count; j++)
        {
            AttentionKernels.MultiDot(q, rep, rows.AsSpan(j * n, n), want, stride, j0 + j);
        }

        AttentionKernels.MultiDotRows(q, rep, n, rows, count, got, stride, j0);
        Assert.Equal(want.Select(BitConverter.SingleToInt32Bits), got.Select(BitConverter.SingleToInt32Bits));

        var outWant = Enumerable.Range(0, rep * n).Select(_ => Next()).ToArray();
        var outGot = outWant.ToArray();
        for (int j = 0; j < count; j++)
        {
            AttentionKernels.MultiAxpy(probs, rep, rows.AsSpan(j * n, n), outWant, stride, j0 + j);
        }

        AttentionKernels.MultiAxpyRows(probs, rep, n, rows, count, outGot, stride, j0);
        Assert.Equal(outWant.Select(BitConverter.SingleToInt32Bits), outGot.Select(BitConverter.SingleToInt32Bits));
    }

    [Fact]
    public void RowBatchesRefuseShortBuffers()
    {
        var ex = Assert.Throws<ArgumentException>(() => AttentionKernels.MultiDotRows(new float[32], 1, 32, new float[40], 2, new float[8], 8, 0));
        Assert.Contains("2 rows of 32 for 1 heads", ex.Message);
        ex = Assert.Throws<ArgumentException>(() => AttentionKernels.MultiAxpyRows(new float[8], 2, 32, new float[64], 2, new float[32], 4, 0));
        Assert.Contains("got 64 row, 32 output and 8 weight floats", ex.Message);
    }
}
