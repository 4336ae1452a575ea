namespace KvAdaQuant.Numerics;

/// <summary>
/// A persistent pool of worker threads for the forward pass. <see cref="Run"/> hands a range of items to
/// the workers and the calling thread, which take items by atomic increment, and returns when all are
/// done. Workers spin briefly between jobs, then sleep, so back-to-back kernels in a decode step pay no
/// thread start-up or task allocation.
/// </summary>
public sealed class WorkerPool : IDisposable
{
    private readonly Thread[] _threads;
    private readonly ManualResetEventSlim[] _start;
    private IParallelWork? _work;
    private int _count;
    private int _next;
    private int _remaining;
    private volatile bool _disposed;
    private Exception? _error;

    /// <summary>The largest thread count a pool takes.</summary>
    public const int MaxThreads = 1024;

    /// <summary>
    /// Creates a pool using <paramref name="threads"/> threads in all, the caller included (0 = all cores); negative
    /// counts and counts above <see cref="MaxThreads"/> are refused.
    /// </summary>
    public WorkerPool(int threads = 0)
    {
        if (threads < 0 || threads > MaxThreads)
        {
            throw new ArgumentOutOfRangeException(nameof(threads), $"threads must be 0 (all cores) or 1-{MaxThreads}, got {threads}");
        }

        Threads = threads > 0 ? threads : Environment.ProcessorCount;
        _threads = new Thread[Threads - 1];
        _start = new ManualResetEventSlim[Threads - 1];
        for (int i = 0; i < _threads.Length; i++)
        {
            _start[i] = new ManualResetEventSlim(false, spinCount: 2000);
            int id = i + 1;
            _threads[i] = new Thread(() => WorkerLoop(id)) { IsBackground = true, Name = $"kvaq-worker-{id}" };
            _threads[i].Start();
        }
    }

    /// <summary>Threads in all, the caller included.</summary>
    public int Threads { get; }

    /// <summary>Runs <paramref name="work"/> for items 0..count-1 and waits for all of them. Not reentrant.</summary>
    public void Run(IParallelWork work, int count)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (count <= 0)
        {
            return;
        }

        if (_threads.Length == 0 || count == 1)
        {
            for (int i = 0; i < count; i++)
            {
                work.Execute(i, 0);
            }

            return;
        }

        _work = work;
        _count = count;
        _error = null;
        Volatile.Write(ref _next, 0);
        Volatile.Write(ref _remaining, _threads.Length);
        foreach (var s in _start)
        {
            s.Set();
        }

        Drain(0);
        var spin = default(SpinWait);
        while (Volatile.Read(ref _remaining) > 0)
        {
            spin.SpinOnce(sleep1Threshold: -1);
        }

        _work = null;
        if (_error is { } e)
        {
            throw new AggregateException("a worker failed", e);
        }
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        foreach (var s in _start)
        {
            s.Set();
        }

        foreach (var t in _threads)
        {
            t.Join();
        }

        foreach (var s in _start)
        {
            s.Dispose();
        }
    }

    private void Drain(int worker)
    {
        var work = _work!;
        int count = _count;
        try
        {
            int i;
            while ((i = Interlocked.Increment(ref _next) - 1) < count)
            {
                work.Execute(i, worker);
            }
        }
        catch (Exception e)
        {
            _error = e;
            Volatile.Write(ref _next, count);
        }
    }

    private void WorkerLoop(int id)
    {
        var start = _start[id - 1];
        while (true)
        {
            start.Wait();
            start.Reset();
            if (_disposed)
            {
                return;
            }

            Drain(id);
            Interlocked.Decrement(ref _remaining);
        }
    }
}
