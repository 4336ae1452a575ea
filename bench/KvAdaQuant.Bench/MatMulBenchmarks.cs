using BenchmarkDotNet.Attributes;
using KvAdaQuant.Numerics;

namespace KvAdaQuant.Bench;

/// <summary>
/// Matrix-vector (decode, Tokens = 1) and matrix-matrix (prefill, Tokens = 64) products for the weight types, at a
/// Llama-3.2-1B MLP shape, two threads. GB/s of weights read: bytes / time (per token for prefill, it reads them once).
/// </summary>
[MemoryDiagnoser]
public unsafe class MatMulBenchmarks : IDisposable
{
    private const int Rows = 8192;
    private const int Cols = 2048;
    private NativeBuffer _buffer = null!;
    private WeightMatrix _matrix = null!;
    private float[] _x = null!;
    private float[] _y = null!;
    private readonly WorkerPool _pool = new(2);
    private MatMulKernel _kernel = null!;

    [Params(GgmlType.F32, GgmlType.F16, GgmlType.BF16, GgmlType.Q8_0, GgmlType.Q4_0, GgmlType.Q5_0, GgmlType.Q4_K, GgmlType.Q5_K, GgmlType.Q6_K)]
    public GgmlType Type { get; set; }

    [Params(1, 64)]
    public int Tokens { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        long bytes = GgmlTypeInfo.ByteSize(Type, (long)Rows * Cols);
        _buffer = new NativeBuffer(bytes);
        var rng = new Random(1);
        var span = new Span<byte>(_buffer.Pointer, (int)bytes);
        rng.NextBytes(span);
        if (Type == GgmlType.F32)
        {
            var f = new Span<float>(_buffer.Pointer, Rows * Cols);
            for (int i = 0; i < f.Length; i++)
            {
                f[i] = (float)(rng.NextDouble() - 0.5);
            }
        }
        else if (Type == GgmlType.F16)
        {
            var h = new Span<Half>(_buffer.Pointer, Rows * Cols);
            for (int i = 0; i < h.Length; i++)
            {
                h[i] = (Half)(rng.NextDouble() - 0.5);
            }
        }
        else if (Type == GgmlType.BF16)
        {
            var h = new Span<ushort>(_buffer.Pointer, Rows * Cols);
            for (int i = 0; i < h.Length; i++)
            {
                h[i] = RowQuantizer.ToBFloat16((float)(rng.NextDouble() - 0.5));
            }
        }
        else
        {
            // Sane block scales over random codes (random bytes would make some scales NaN or infinite).
            int blockBytes = (int)GgmlTypeInfo.ByteSize(Type, Type is GgmlType.Q4_K or GgmlType.Q5_K or GgmlType.Q6_K ? 256 : 32);
            for (long b = 0; b < bytes / blockBytes; b++)
            {
                // (Q6_K keeps its scale d in the block's last two bytes.)
                *(Half*)(_buffer.Pointer + (b * blockBytes) + (Type == GgmlType.Q6_K ? 208 : 0)) = (Half)0.01f;
                if (Type is GgmlType.Q4_K or GgmlType.Q5_K)
                {
                    *(Half*)(_buffer.Pointer + (b * blockBytes) + 2) = (Half)0.001f;
                }
            }
        }

        _matrix = new WeightMatrix("bench", Type, Rows, Cols, _buffer.Pointer);
        _x = Enumerable.Range(0, Cols * Tokens).Select(i => (float)Math.Sin(i)).ToArray();
        _y = new float[Rows * Tokens];
        _kernel = new MatMulKernel(_pool);
    }

    [Benchmark]
    public void MatMul() => _kernel.MatMul(_matrix, _x, _y, Tokens);

    [GlobalCleanup]
    public void Dispose()
    {
        _buffer?.Dispose();
        _pool.Dispose();
        GC.SuppressFinalize(this);
    }
}
