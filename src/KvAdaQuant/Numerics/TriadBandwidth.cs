using System.Diagnostics;
using System.Runtime.Intrinsics;

namespace KvAdaQuant.Numerics;

/// <summary>
/// A STREAM-style triad meter: a[i] = b[i] + 3 c[i] over three float arrays (128 MB each by default, far beyond any
/// last-level cache), on the caller alone or over a <see cref="WorkerPool"/>, each thread one contiguous part of the
/// arrays. Bytes are counted as STREAM counts them: 12 per element (two reads, one write; the write-allocate read is
/// not counted). The memory bandwidth attention over the packed KV cache is compared with at the same thread count
/// (<c>kvaq bench --attention</c>, the bench project's <c>TriadBenchmark</c>).
/// </summary>
public sealed unsafe class TriadBandwidth : IParallelWork, IDisposable
{
    /// <summary>Elements per array by default: 32 Mi floats, 128 MB.</summary>
    public const int DefaultElements = 32 << 20;

    /// <summary>The triad's scalar: a = b + <see cref="Scalar"/> c.</summary>
    public const float Scalar = 3f;

    /// <summary>Bytes one triad counts per element (4 read from b, 4 from c, 4 written to a).</summary>
    public const int BytesPerElement = 12;

    // Parts start on 64-byte boundaries (16 floats), so each thread's stream begins on a cache line.
    private const int PartAlign = 16;

    private readonly NativeBuffer _a;
    private readonly NativeBuffer _b;
    private readonly NativeBuffer _c;
    private int _parts = 1;

    /// <summary>Allocates the three arrays (64-byte aligned), fills b with 1 and c with 2, and so touches every page.</summary>
    public TriadBandwidth(int elements = DefaultElements)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(elements, 1);
        Elements = elements;
        _a = new NativeBuffer(4L * elements);
        _b = new NativeBuffer(4L * elements, zeroed: false, alignment: 64);
        _c = new NativeBuffer(4L * elements, zeroed: false, alignment: 64);
        B.Fill(1f);
        C.Fill(2f);
    }

    /// <summary>Elements per array.</summary>
    public int Elements { get; }

    /// <summary>Bytes one triad counts: <see cref="BytesPerElement"/> per element.</summary>
    public long BytesPerTriad => (long)BytesPerElement * Elements;

    /// <summary>The destination array.</summary>
    public Span<float> A => new(_a.Pointer, Elements);

    /// <summary>The first source array.</summary>
    public Span<float> B => new(_b.Pointer, Elements);

    /// <summary>The second source array (times <see cref="Scalar"/>).</summary>
    public Span<float> C => new(_c.Pointer, Elements);

    /// <summary>
    /// One triad over the arrays: on the calling thread when <paramref name="pool"/> is null, else split into
    /// <see cref="WorkerPool.Threads"/> contiguous parts handed out by the pool.
    /// </summary>
    public void Run(WorkerPool? pool)
    {
        if (pool is null || pool.Threads == 1)
        {
            _parts = 1;
            Execute(0, 0);
            return;
        }

        _parts = pool.Threads;
        pool.Run(this, _parts);
    }

    /// <summary>Seconds one <see cref="Run"/> takes.</summary>
    public double Time(WorkerPool? pool)
    {
        long start = Stopwatch.GetTimestamp();
        Run(pool);
        return Stopwatch.GetElapsedTime(start).TotalSeconds;
    }

    /// <summary>The triad over part <paramref name="index"/> of the current split (a <see cref="WorkerPool"/> item).</summary>
    public void Execute(int index, int worker)
    {
        var (start, end) = Part(Elements, _parts, index);
        float* a = (float*)_a.Pointer, b = (float*)_b.Pointer, c = (float*)_c.Pointer;
        Triad(a + start, b + start, c + start, end - start);
    }

    /// <summary>Elements [start, end) of part <paramref name="index"/> of <paramref name="parts"/>: equal parts rounded down to 16 elements, the last taking the rest.</summary>
    public static (int Start, int End) Part(int elements, int parts, int index)
    {
        int part = elements / parts / PartAlign * PartAlign;
        int start = index * part;
        return (start, index == parts - 1 ? elements : start + part);
    }

    /// <summary>a[i] = b[i] + 3 c[i] for i &lt; n, 512- or 256-bit vectors where available (fused multiply-add), the tail by <see cref="TriadScalar"/>.</summary>
    public static void Triad(float* a, float* b, float* c, int n)
    {
        int i = 0;
        if (Vector512.IsHardwareAccelerated)
        {
            var s = Vector512.Create(Scalar);
            for (; i <= n - 16; i += 16)
            {
                Vector512.FusedMultiplyAdd(Vector512.Load(c + i), s, Vector512.Load(b + i)).Store(a + i);
            }
        }
        else if (Vector256.IsHardwareAccelerated)
        {
            var s = Vector256.Create(Scalar);
            for (; i <= n - 8; i += 8)
            {
                Vector256.FusedMultiplyAdd(Vector256.Load(c + i), s, Vector256.Load(b + i)).Store(a + i);
            }
        }

        TriadScalar(a + i, b + i, c + i, n - i);
    }

    /// <summary>The scalar twin of <see cref="Triad"/>: the same fused multiply-add per element, so the same bits.</summary>
    public static void TriadScalar(float* a, float* b, float* c, int n)
    {
        for (int i = 0; i < n; i++)
        {
            a[i] = MathF.FusedMultiplyAdd(c[i], Scalar, b[i]);
        }
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        _a.Dispose();
        _b.Dispose();
        _c.Dispose();
    }
}
