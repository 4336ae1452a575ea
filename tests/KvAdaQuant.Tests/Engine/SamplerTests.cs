using KvAdaQuant.Engine;

namespace KvAdaQuant.Tests.Engine;

public class SamplerTests
{
    private static float[] RandomLogits(int n, int seed)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, n).Select(_ => (float)((rng.NextDouble() * 20) - 10)).ToArray();
    }

    [Theory]
    [InlineData(1e-30f)]
    [InlineData(1e-38f)]
    [InlineData(float.Epsilon)]
    public void TinyTemperaturesPickTheLargestLogit(float temperature)
    {
        for (int seed = 0; seed < 20; seed++)
        {
            var logits = RandomLogits(512, seed);
            var sampler = new Sampler(temperature, seed: (ulong)seed + 1);
            Assert.Equal(Sampler.ArgMax(logits), sampler.Sample(logits));
        }
    }

    [Theory]
    [InlineData(1f)]
    [InlineData(0.5f)]
    [InlineData(2f)]
    public void FrequenciesFollowTheSoftmaxOfLogitsOverTemperature(float temperature)
    {
        float[] logits = [0f, 1f, 2f, 3f, -1f];
        double[] e = logits.Select(l => Math.Exp(l / temperature)).ToArray();
        double z = e.Sum();
        var sampler = new Sampler(temperature, seed: 7);
        var counts = new int[logits.Length];
        const int N = 40_000;
        for (int i = 0; i < N; i++)
        {
            counts[sampler.Sample(logits)]++;
        }

        for (int i = 0; i < logits.Length; i++)
        {
            // Five standard deviations of a binomial frequency at N = 40,000 are at most 0.0125.
            Assert.InRange((double)counts[i] / N, (e[i] / z) - 0.0125, (e[i] / z) + 0.0125);
        }
    }

    [Fact]
    public void TopKAndTopPKeepOnlyTheirTokens()
    {
        float[] logits = [0f, 1f, 2f, 3f, -1f, 2.5f];
        var topK = new Sampler(1f, topK: 2, seed: 3);
        var topP = new Sampler(1f, topP: 0.5f, seed: 3);
        var seenK = new HashSet<int>();
        var seenP = new HashSet<int>();
        for (int i = 0; i < 5_000; i++)
        {
            seenK.Add(topK.Sample(logits));
            seenP.Add(topP.Sample(logits));
        }

        // Probabilities at T = 1: token 3 0.43, token 5 0.26, token 2 0.16, ...: top-2 is {3, 5}; the nucleus of 0.5 is {3, 5}.
        Assert.Equal([3, 5], seenK.Order());
        Assert.Equal([3, 5], seenP.Order());
    }

    [Fact]
    public void TheSameSeedGivesTheSameTokens()
    {
        var logits = RandomLogits(100, 1);
        var a = new Sampler(0.8f, topK: 40, topP: 0.9f, seed: 99);
        var b = new Sampler(0.8f, topK: 40, topP: 0.9f, seed: 99);
        for (int i = 0; i < 200; i++)
        {
            Assert.Equal(a.Sample(logits), b.Sample(logits));
        }
    }

    [Theory]
    [InlineData(-1f, 0, 1f, "--temperature must be finite and >= 0, got -1")]
    [InlineData(float.NaN, 0, 1f, "--temperature must be finite and >= 0, got NaN")]
    [InlineData(float.PositiveInfinity, 0, 1f, "--temperature must be finite and >= 0, got ")]
    [InlineData(1f, -1, 1f, "--top-k must be >= 0, got -1")]
    [InlineData(1f, 0, 0f, "--top-p must be in (0, 1], got 0")]
    [InlineData(1f, 0, 1.5f, "--top-p must be in (0, 1], got 1.5")]
    public void OutOfRangeSettingsAreRefused(float temperature, int topK, float topP, string message)
    {
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => new Sampler(temperature, topK, topP));
        Assert.Contains(message, e.Message);
    }
}
