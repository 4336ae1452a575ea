using KvAdaQuant.Numerics;

namespace KvAdaQuant.Tests.Numerics;

/// <summary>The STREAM-style triad meter of <c>kvaq bench --attention</c> and the bench project's <c>TriadBenchmark</c>.</summary>
public class TriadBandwidthTests
{
    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void TriadComputesBPlusThreeCOverEveryElement(int threads)
    {
        // 1,013 elements: parts of 16-element multiples plus tails that the vector loops leave to the scalar twin.
        using var triad = new TriadBandwidth(1013);
        using var pool = new WorkerPool(threads);
        for (int i = 0; i < triad.Elements; i++)
        {
            triad.B[i] = i;
            triad.C[i] = (i % 7) - 3;
        }

        triad.A.Fill(float.NaN);
        triad.Run(threads == 1 ? null : pool);
        for (int i = 0; i < triad.Elements; i++)
        {
            Assert.Equal(i + (3f * ((i % 7) - 3)), triad.A[i]);
        }

        // Run again over the pool with other sources: every element rewritten.
        triad.B.Fill(0.5f);
        triad.Run(pool);
        for (int i = 0; i < triad.Elements; i++)
        {
            Assert.Equal(0.5f + (3f * ((i % 7) - 3)), triad.A[i]);
        }
    }

    [Fact]
    public void BytesAreTwelvePerElementAndTheDefaultArraysAre128MB()
    {
        using var small = new TriadBandwidth(1000);
        Assert.Equal(12_000L, small.BytesPerTriad);
        Assert.Equal(12, TriadBandwidth.BytesPerElement);
        Assert.Equal(128L << 20, 4L * TriadBandwidth.DefaultElements);
        Assert.Equal(3 * (128L << 20), (long)TriadBandwidth.BytesPerElement * TriadBandwidth.DefaultElements);

        // The sources start as STREAM's: b = 1, c = 2, so a = 7.
        Assert.True(small.B.ToArray().All(x => x == 1f) && small.C.ToArray().All(x => x == 2f));
        small.Run(null);
        Assert.True(small.A.ToArray().All(x => x == 7f));
    }

    [Fact]
    public unsafe void VectorTriadEqualsTheScalarTwinBitForBit()
    {
        var rng = new Random(5);
        foreach (int n in new[] { 0, 1, 7, 8, 15, 16, 17, 31, 33, 64, 1000, 4099 })
        {
            var b = Enumerable.Range(0, n).Select(_ => (float)((rng.NextDouble() - 0.5) * 1e3)).ToArray();
            var c = Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray();
            var vector = new float[n];
            var scalar = new float[n];
            fixed (float* pb = b, pc = c, pv = vector, ps = scalar)
            {
                TriadBandwidth.Triad(pv, pb, pc, n);
                TriadBandwidth.TriadScalar(ps, pb, pc, n);
            }

            Assert.Equal(scalar.Select(BitConverter.SingleToInt32Bits), vector.Select(BitConverter.SingleToInt32Bits));
            for (int i = 0; i < n; i++)
            {
                Assert.Equal((double)b[i] + (3.0 * c[i]), scalar[i], Math.Abs(scalar[i]) * 1e-6);
            }
        }
    }

    [Theory]
    [InlineData(1013, 1)]
    [InlineData(1013, 2)]
    [InlineData(32 << 20, 2)]
    [InlineData(100, 3)]
    [InlineData(10, 4)]
    public void PartsCoverTheArraysContiguouslyFromCacheLineStarts(int elements, int parts)
    {
        int next = 0;
        for (int p = 0; p < parts; p++)
        {
            var (start, end) = TriadBandwidth.Part(elements, parts, p);
            Assert.Equal(next, start);
            Assert.Equal(0, start % 16);
            Assert.True(end >= start);
            next = end;
        }

        Assert.Equal(elements, next);
    }

    [Fact]
    public void ARunAllocatesNothing()
    {
        using var triad = new TriadBandwidth(4096);
        using var pool = new WorkerPool(2);
        triad.Run(pool);
        triad.Time(null);
        Assert.Equal(0, AllocationCheck.OfFirstCleanWindow(() =>
        {
            for (int i = 0; i < 10; i++)
            {
                triad.Run(pool);
                triad.Time(null);
                triad.Time(pool);
            }
        }));
    }
}
