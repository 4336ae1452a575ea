using BenchmarkDotNet.Attributes;
using KvAdaQuant.Numerics;

namespace KvAdaQuant.Bench;

/// <summary>
/// The low-bit kernels alone (<see cref="LowBitDot"/>: Q2_K, Q3_K, IQ4_XS with Q8_K activations, IQ4_NL with Q8_0 ones), one
/// thread, a 4096 x 2048 matrix row by row (Q2_K 2.7 MB, Q3_K 3.5 MB, IQ4_XS 4.4 MB, IQ4_NL 4.7 MB, beyond L2) times 1 token
/// (decode) or 4 (prefill), beside the Q4_K row-by-row kernel (<see cref="KQuantDot"/>). GB/s of weights: matrix bytes /
/// time. (Min is shown beside Mean: the machine is shared.)
/// </summary>
[MinColumn]
public unsafe class LowBitDotBenchmarks : IDisposable
{
    private const int Rows = 4096;
    private const int Cols = 2048;
    private NativeBuffer _rows = null!;
    private long _rowBytes;
    private readonly Q8KActivations _xk = new();
    private readonly Q8Activations _x0 = new();
    private float[] _y = null!;

    [Params(GgmlType.Q2_K, GgmlType.Q3_K, GgmlType.IQ4_XS, GgmlType.IQ4_NL, GgmlType.Q4_K)]
    public GgmlType Type { get; set; }

    [Params(1, 4)]
    public int Tokens { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        long bytes = GgmlTypeInfo.ByteSize(Type, (long)Rows * Cols);
        _rowBytes = bytes / Rows;
        _rows = new NativeBuffer(bytes);
        var rng = new Random(1);
        rng.NextBytes(new Span<byte>(_rows.Pointer, (int)bytes));
        var (blockElements, blockBytes) = GgmlTypeInfo.Geometry(Type)!.Value;
        _ = blockElements;
        int dAt = Type switch { GgmlType.Q2_K => 80, GgmlType.Q3_K => 108, _ => 0 };
        for (long b = 0; b < bytes / blockBytes; b++)
        {
            // sane FP16 scales over random codes
            *(Half*)(_rows.Pointer + (b * blockBytes) + dAt) = (Half)0.01f;
            if (Type is GgmlType.Q2_K or GgmlType.Q4_K)
            {
                *(Half*)(_rows.Pointer + (b * blockBytes) + dAt + 2) = (Half)0.001f;
            }
        }

        var xf = Enumerable.Range(0, Cols * Tokens).Select(i => (float)Math.Sin(i)).ToArray();
        _xk.Quantize(xf, Tokens, Cols);
        _x0.Quantize(xf, Tokens, Cols);
        _y = new float[Rows * Tokens];
    }

    [Benchmark]
    public void Product()
    {
        fixed (sbyte* xq = _xk.Values)
        fixed (float* xd = _xk.Scales)
        fixed (short* xs = _xk.Sums16)
        fixed (sbyte* x0 = _x0.Values)
        fixed (float* d0 = _x0.Scales)
        fixed (float* y = _y)
        {
            for (int r = 0; r < Rows; r++)
            {
                byte* row = _rows.Pointer + (r * _rowBytes);
                switch (Type)
                {
                    case GgmlType.Q2_K:
                        LowBitDot.DotQ2_K(row, Cols / 256, Tokens, xq, xd, xs, y + r, Rows);
                        break;
                    case GgmlType.Q3_K:
                        LowBitDot.DotQ3_K(row, Cols / 256, Tokens, xq, xd, xs, y + r, Rows);
                        break;
                    case GgmlType.IQ4_XS:
                        LowBitDot.DotIq4_XS(row, Cols / 256, Tokens, xq, xd, y + r, Rows);
                        break;
                    case GgmlType.IQ4_NL:
                        LowBitDot.DotIq4_NL(row, Cols / 32, Tokens, x0, d0, y + r, Rows);
                        break;
                    default:
                        KQuantDot.DotQ4_K(row, Cols / 256, Tokens, xq, xd, xs, y + r, Rows);
                        break;
                }
            }
        }
    }

    public void Dispose()
    {
        _rows?.Dispose();
        GC.SuppressFinalize(this);
    }
}
