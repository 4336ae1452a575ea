using KvAdaQuant.Numerics;

namespace KvAdaQuant.Tests.Numerics;

public unsafe class DotTileTests
{
    [Theory]
    [InlineData(5)]
    [InlineData(16)]
    [InlineData(33)]
    [InlineData(192)]
    [InlineData(2049)]
    public void VectorPathsEqualScalarTwin(int n)
    {
        var rng = new Random(n);
        var w = Enumerable.Range(0, 4 * (n + 3)).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray();
        var x = Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray();
        var s = new float[4];
        var v512 = new float[4];
        var v256 = new float[4];
        fixed (float* pw = w)
        fixed (float* px = x)
        fixed (float* ps = s)
        fixed (float* p5 = v512)
        fixed (float* p2 = v256)
        {
            DotTile.Dot4Scalar(pw, n + 3, px, n, ps);
            DotTile.Dot4Vector256(pw, n + 3, px, n, p2);
            DotTile.Dot4Vector512(pw, n + 3, px, n, p5);
        }

        for (int r = 0; r < 4; r++)
        {
            double exact = 0;
            for (int i = 0; i < n; i++)
            {
                exact += (double)w[(r * (n + 3)) + i] * x[i];
            }

            Assert.True(Math.Abs(s[r] - exact) < 1e-4, $"scalar row {r}");
            Assert.True(Math.Abs(v256[r] - s[r]) < 1e-4, $"Vector256 row {r}: {v256[r]} vs {s[r]}");
            Assert.True(Math.Abs(v512[r] - s[r]) < 1e-4, $"Vector512 row {r}: {v512[r]} vs {s[r]}");
        }
    }
}
