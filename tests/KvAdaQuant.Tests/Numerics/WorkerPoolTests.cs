using KvAdaQuant.Numerics;

namespace KvAdaQuant.Tests.Numerics;

public class WorkerPoolTests
{
    private sealed class Counter(int n) : IParallelWork
    {
        public int[] Hits { get; } = new int[n];

        public void Execute(int index, int worker) => Interlocked.Increment(ref Hits[index]);
    }

    private sealed class Failing : IParallelWork
    {
        public void Execute(int index, int worker)
        {
            if (index == 5)
            {
                throw new InvalidOperationException("boom");
            }
        }
    }

    [Theory]
    [InlineData(-1)]
    [InlineData(WorkerPool.MaxThreads + 1)]
    public void OutOfRangeThreadCountsAreRefused(int threads)
    {
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => new WorkerPool(threads));
        Assert.Contains($"threads must be 0 (all cores) or 1-{WorkerPool.MaxThreads}, got {threads}", e.Message);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(4)]
    public void EveryItemRunsExactlyOnceAcrossManyRuns(int threads)
    {
        using var pool = new WorkerPool(threads);
        for (int run = 0; run < 50; run++)
        {
            var c = new Counter(run % 37 + 1);
            pool.Run(c, c.Hits.Length);
            Assert.All(c.Hits, h => Assert.Equal(1, h));
        }
    }

    [Fact]
    public void WorkerExceptionReachesCaller()
    {
        using var pool = new WorkerPool(2);
        var e = Assert.Throws<AggregateException>(() => pool.Run(new Failing(), 20));
        Assert.Contains("boom", e.InnerException!.Message);
        var c = new Counter(10);
        pool.Run(c, 10);
        Assert.All(c.Hits, h => Assert.Equal(1, h));
    }
}
