using BenchmarkDotNet.Attributes;
using KvAdaQuant.Numerics;

namespace KvAdaQuant.Bench;

/// <summary>
/// Single-token Q8_0 decode on one thread over 32,768 x 2,048 weights (71.3 MB, more than the caches, so streamed from
/// memory): one row at a time (<see cref="Distance"/> = 0, <see cref="QuantizedDot.DotQ8_0"/>) against rows taken in
/// pairs <see cref="Distance"/> rows apart (<see cref="QuantizedDot.DotQ8_0x2"/>, the same bits): the measurement
/// behind <see cref="QuantizedDot.DecodePairDistance"/>. GB/s = 71.3 MB / the time.
/// </summary>
[MemoryDiagnoser]
public unsafe class Q8_0PairBenchmarks : IDisposable
{
    private const int Rows = 32768;
    private const int Cols = 2048;
    private const int Blocks = Cols / 32;
    private const long RowBytes = Blocks * 34L;
    private NativeBuffer _weights = null!;
    private NativeBuffer _output = null!;
    private Q8Activations _x = null!;

    /// <summary>Rows between the two of a pair (0: one row at a time).</summary>
    [Params(0, 1, 16, 64, 1024)]
    public int Distance { get; set; }

    /// <summary>Random codes with sane block scales, and quantized activations.</summary>
    [GlobalSetup]
    public void Setup()
    {
        _weights = new NativeBuffer(Rows * RowBytes);
        var rng = new Random(1);
        rng.NextBytes(new Span<byte>(_weights.Pointer, (int)(Rows * RowBytes)));
        for (long b = 0; b < (long)Rows * Blocks; b++)
        {
            *(Half*)(_weights.Pointer + (b * 34)) = (Half)0.01f;
        }

        _output = new NativeBuffer(Rows * 4L);
        _x = new Q8Activations();
        _x.Quantize(Enumerable.Range(0, Cols).Select(i => (float)Math.Sin(i)).ToArray(), 1, Cols);
    }

    /// <summary>One product over all rows.</summary>
    [Benchmark]
    public void Decode()
    {
        byte* w = _weights.Pointer;
        float* y = (float*)_output.Pointer;
        fixed (sbyte* xq = _x.Values)
        fixed (float* xd = _x.Scales)
        {
            if (Distance == 0)
            {
                for (int r = 0; r < Rows; r++)
                {
                    y[r] = QuantizedDot.DotQ8_0(w + (r * RowBytes), xq, xd, Blocks);
                }

                return;
            }

            for (int r0 = 0; r0 < Rows; r0 += 2 * Distance)
            {
                for (int r = r0; r < r0 + Distance; r++)
                {
                    QuantizedDot.DotQ8_0x2(w + (r * RowBytes), Distance * RowBytes, xq, xd, Blocks, y + r, Distance);
                }
            }
        }
    }

    /// <summary>Frees the buffers.</summary>
    [GlobalCleanup]
    public void Dispose()
    {
        _weights?.Dispose();
        _output?.Dispose();
        GC.SuppressFinalize(this);
    }
}
