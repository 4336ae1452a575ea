using System.Runtime.Intrinsics;
using BenchmarkDotNet.Attributes;
using KvAdaQuant.Numerics;

namespace KvAdaQuant.Bench;

/// <summary>
/// STREAM-style triad a[i] = b[i] + s * c[i] over three 128 MB float arrays with 512-bit (or 256-bit) vectors, on
/// <see cref="Threads"/> threads (more than one: the engine's <see cref="WorkerPool"/>, each thread a contiguous
/// 1/Threads of the arrays): the memory bandwidth the attention benchmark is compared with, at the same thread count.
/// Bytes counted as STREAM counts them: 12 per float element (two reads, one write; the write-allocate read is not counted).
/// </summary>
[Config(typeof(AttentionBenchmarkConfig))]
public unsafe class TriadBenchmark : IDisposable, IParallelWork
{
    /// <summary>Elements per array.</summary>
    public const int Elements = 32 << 20;

    /// <summary>Bytes one triad counts.</summary>
    public const long Bytes = 12L * Elements;

    private NativeBuffer _a = null!;
    private NativeBuffer _b = null!;
    private NativeBuffer _c = null!;
    private WorkerPool? _pool;

    /// <summary>Threads sharing the arrays (1 = the caller alone).</summary>
    [Params(1, 2)]
    public int Threads { get; set; } = 1;

    /// <summary>Allocates and touches the arrays.</summary>
    [GlobalSetup]
    public void Setup()
    {
        _a = new NativeBuffer(4L * Elements);
        _b = new NativeBuffer(4L * Elements);
        _c = new NativeBuffer(4L * Elements);
        new Span<float>(_b.Pointer, Elements).Fill(1f);
        new Span<float>(_c.Pointer, Elements).Fill(2f);
        _pool = Threads > 1 ? new WorkerPool(Threads) : null;
    }

    /// <summary>One triad over the arrays.</summary>
    [Benchmark]
    public void Triad()
    {
        if (_pool is { } pool)
        {
            pool.Run(this, Threads);
            return;
        }

        Execute(0, 0);
    }

    /// <summary>The triad over part <paramref name="index"/> of <see cref="Threads"/> contiguous parts of the arrays.</summary>
    public void Execute(int index, int worker)
    {
        int part = Elements / Threads;
        int start = index * part, end = index == Threads - 1 ? Elements : start + part;
        float* a = (float*)_a.Pointer, b = (float*)_b.Pointer, c = (float*)_c.Pointer;
        if (Vector512.IsHardwareAccelerated)
        {
            var s = Vector512.Create(3f);
            for (int i = start; i < end; i += 16)
            {
                Vector512.FusedMultiplyAdd(Vector512.Load(c + i), s, Vector512.Load(b + i)).Store(a + i);
            }

            return;
        }

        var s8 = Vector256.Create(3f);
        for (int i = start; i < end; i += 8)
        {
            Vector256.FusedMultiplyAdd(Vector256.Load(c + i), s8, Vector256.Load(b + i)).Store(a + i);
        }
    }

    /// <inheritdoc/>
    [GlobalCleanup]
    public void Dispose()
    {
        _a?.Dispose();
        _b?.Dispose();
        _c?.Dispose();
        _pool?.Dispose();
        _pool = null;
        GC.SuppressFinalize(this);
    }
}
