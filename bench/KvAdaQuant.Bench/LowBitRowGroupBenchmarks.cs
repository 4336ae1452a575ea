using BenchmarkDotNet.Attributes;
using KvAdaQuant.Numerics;

namespace KvAdaQuant.Bench;

/// <summary>
/// The Q2_K, Q3_K, IQ4_XS, IQ4_NL, Q4_1 and Q5_1 kernels alone, one thread: a 4096 x 2048 matrix (Q2_K 2.7 MB, Q3_K 3.5 MB,
/// IQ4_XS 4.4 MB, IQ4_NL 4.7 MB, Q4_1 5.2 MB, Q5_1 6.3 MB, Q5_0 5.8 MB) times 1 token (decode) or 4 (prefill), row by row
/// (<see cref="LowBitDot"/>, <c>Layout = Rows</c>) against the 8-row groups (<see cref="LowBitRowGroupDot"/>,
/// <see cref="Q4_1RowGroups"/>, <c>Layout = RowGroups</c>; the same bits for the K-quant types, Q4_1, Q5_1 and Q5_0 (whose rows go
/// token by token through <see cref="Q5_0Dot"/>), llama.cpp's
/// repacked order for IQ4_NL, whose groups take the Q4_0 layout). GB/s of weights:
/// matrix bytes / time. (Min is shown beside Mean: the machine is shared.)
/// </summary>
[MinColumn]
public unsafe class LowBitRowGroupBenchmarks : IDisposable
{
    private const int Rows = 4096;
    private const int Cols = 2048;
    private const int SuperBlocks = Cols / 256;
    private NativeBuffer _rows = null!;
    private NativeBuffer _groups = null!;
    private WeightMatrix _matrix = null!;
    private readonly Q8KActivations _x = new();
    private readonly Q8Activations _x0 = new();
    private float[] _s1 = null!;
    private float[] _y = null!;

    private bool Q4_1Family => Q4_1RowGroups.Takes(Type);

    [Params(GgmlType.Q2_K, GgmlType.Q3_K, GgmlType.IQ4_XS, GgmlType.IQ4_NL, GgmlType.Q4_1, GgmlType.Q5_1, GgmlType.Q5_0)]
    public GgmlType Type { get; set; }

    [Params("Rows", "RowGroups")]
    public string Layout { get; set; } = "RowGroups";

    [Params(1, 4)]
    public int Tokens { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        long bytes = GgmlTypeInfo.ByteSize(Type, (long)Rows * Cols);
        _rows = new NativeBuffer(bytes);
        var rng = new Random(1);
        rng.NextBytes(new Span<byte>(_rows.Pointer, (int)bytes));
        int blockBytes = GgmlTypeInfo.Geometry(Type)!.Value.BlockBytes;
        int dAt = Type switch { GgmlType.Q2_K => 80, GgmlType.Q3_K => 108, _ => 0 };
        for (long b = 0; b < bytes / blockBytes; b++)
        {
            // sane FP16 scales over random codes
            *(Half*)(_rows.Pointer + (b * blockBytes) + dAt) = (Half)0.01f;
            if (Type is GgmlType.Q2_K or GgmlType.Q4_1 or GgmlType.Q5_1)
            {
                *(Half*)(_rows.Pointer + (b * blockBytes) + dAt + 2) = (Half)0.001f;
            }
        }

        _matrix = new WeightMatrix("bench", Type, Rows, Cols, _rows.Pointer);
        _groups = new NativeBuffer(bytes);
        if (Type == GgmlType.IQ4_NL)
        {
            Q4_0RowGroups.Repack(_matrix, _groups.Pointer, 0, Rows / Q4_0RowGroups.GroupRows);
        }
        else if (Q4_1Family)
        {
            Q4_1RowGroups.Repack(_matrix, _groups.Pointer, 0, Rows / Q4_1RowGroups.GroupRows);
        }
        else
        {
            KQuantRowGroups.Repack(_matrix, _groups.Pointer, 0, Rows / KQuantRowGroups.GroupRows);
        }

        var xf = Enumerable.Range(0, Cols * Tokens).Select(i => (float)Math.Sin(i)).ToArray();
        _x.Quantize(xf, Tokens, Cols);
        _x0.Quantize(xf, Tokens, Cols);
        _s1 = _x0.Q8_1Sums(xf, Tokens, Cols);
        _y = new float[Rows * Tokens];
    }

    [Benchmark]
    public void Product()
    {
        fixed (sbyte* xq = _x.Values)
        fixed (float* xd = _x.Scales)
        fixed (short* xs = _x.Sums16)
        fixed (int* xp = _x.Sums16Pairs)
        fixed (sbyte* x0 = _x0.Values)
        fixed (float* d0 = _x0.Scales)
        fixed (int* s0 = _x0.Sums)
        fixed (float* s1 = _s1)
        fixed (float* y = _y)
        {
            if (Layout == "Rows")
            {
                for (int r = 0; r < Rows; r++)
                {
                    byte* row = _rows.Pointer + (r * _matrix.RowByteCount);
                    switch (Type)
                    {
                        case GgmlType.Q2_K:
                            LowBitDot.DotQ2_K(row, SuperBlocks, Tokens, xq, xd, xs, y + r, Rows);
                            break;
                        case GgmlType.Q3_K:
                            LowBitDot.DotQ3_K(row, SuperBlocks, Tokens, xq, xd, xs, y + r, Rows);
                            break;
                        case GgmlType.IQ4_NL:
                            LowBitDot.DotIq4_NL(row, Cols / 32, Tokens, x0, d0, y + r, Rows);
                            break;
                        case GgmlType.Q4_1:
                        case GgmlType.Q5_1:
                            LowBitDot.DotQ4_1(row, Cols / 32, Tokens, Type == GgmlType.Q5_1, x0, d0, s1, y + r, Rows);
                            break;
                        case GgmlType.Q5_0:
                            for (int t = 0; t < Tokens; t++)
                            {
                                y[r + (t * Rows)] = Q5_0Dot.Dot(row, x0 + (t * Cols), d0 + (t * (Cols / 32)), Cols / 32);
                            }

                            break;
                        default:
                            LowBitDot.DotIq4_XS(row, SuperBlocks, Tokens, xq, xd, y + r, Rows);
                            break;
                    }
                }

                return;
            }

            for (int r = 0; r < Rows; r += 8)
            {
                byte* group = _groups.Pointer + (r * _matrix.RowByteCount);
                switch (Type)
                {
                    case GgmlType.Q2_K:
                        LowBitRowGroupDot.DotQ2_K(group, SuperBlocks, Tokens, xq, Cols, xd, xs, xp, y + r, Rows);
                        break;
                    case GgmlType.Q3_K:
                        LowBitRowGroupDot.DotQ3_K(group, SuperBlocks, Tokens, xq, Cols, xd, xs, xp, y + r, Rows);
                        break;
                    case GgmlType.IQ4_NL:
                        LowBitRowGroupDot.DotIq4_NL(group, Tokens, x0, Cols, d0, s0, Cols / 32, Cols / 32, y + r, Rows);
                        break;
                    case GgmlType.Q4_1:
                    case GgmlType.Q5_1:
                    case GgmlType.Q5_0:
                        Q4_1RowGroups.Dot(group, Type, Cols / 32, Tokens, x0, Cols, d0, s1, y + r, Rows);
                        break;
                    default:
                        LowBitRowGroupDot.DotIq4_XS(group, SuperBlocks, Tokens, xq, Cols, xd, xs, y + r, Rows);
                        break;
                }
            }
        }
    }

    [GlobalCleanup]
    public void Dispose()
    {
        _matrix?.Dispose();
        _rows?.Dispose();
        _groups?.Dispose();
        GC.SuppressFinalize(this);
    }
}
