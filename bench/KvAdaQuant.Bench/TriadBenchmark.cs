using BenchmarkDotNet.Attributes;
using KvAdaQuant.Numerics;

namespace KvAdaQuant.Bench;

/// <summary>
/// STREAM-style triad a[i] = b[i] + s * c[i] over three 128 MB float arrays with 512-bit (or 256-bit) vectors, on
/// <see cref="Threads"/> threads (more than one: the engine's <see cref="WorkerPool"/>, each thread a contiguous
/// 1/Threads of the arrays): the memory bandwidth the attention benchmark is compared with, at the same thread count.
/// Bytes counted as STREAM counts them: 12 per float element (two reads, one write; the write-allocate read is not counted).
/// The triad itself is the library's <see cref="TriadBandwidth"/>, which <c>kvaq bench --attention</c> times too.
/// </summary>
[Config(typeof(AttentionBenchmarkConfig))]
public class TriadBenchmark : IDisposable
{
    /// <summary>Elements per array.</summary>
    public const int Elements = TriadBandwidth.DefaultElements;

    /// <summary>Bytes one triad counts.</summary>
    public const long Bytes = (long)TriadBandwidth.BytesPerElement * Elements;

    private TriadBandwidth? _triad;
    private WorkerPool? _pool;

    /// <summary>Threads sharing the arrays (1 = the caller alone).</summary>
    [Params(1, 2)]
    public int Threads { get; set; } = 1;

    /// <summary>Allocates and touches the arrays.</summary>
    [GlobalSetup]
    public void Setup()
    {
        _triad = new TriadBandwidth(Elements);
        _pool = Threads > 1 ? new WorkerPool(Threads) : null;
    }

    /// <summary>One triad over the arrays.</summary>
    [Benchmark]
    public void Triad() => _triad!.Run(_pool);

    /// <inheritdoc/>
    [GlobalCleanup]
    public void Dispose()
    {
        _triad?.Dispose();
        _triad = null;
        _pool?.Dispose();
        _pool = null;
        GC.SuppressFinalize(this);
    }
}
