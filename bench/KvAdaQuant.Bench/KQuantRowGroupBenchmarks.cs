using BenchmarkDotNet.Attributes;
using KvAdaQuant.Numerics;

namespace KvAdaQuant.Bench;

/// <summary>
/// The Q4_K, Q5_K and Q6_K kernels alone, one thread: a 4096 x 2048 matrix (Q4_K 4.7 MB, Q5_K 5.8 MB, Q6_K 6.9 MB,
/// beyond L2) times 1
/// token (decode) or a 4-token tile (prefill), row by row (<see cref="KQuantDot"/>, <c>Layout = Rows</c>) against the
/// 8-row groups (<see cref="KQuantRowGroupDot"/>, <c>Layout = RowGroups</c>); Q5_K row by row is the float path (rows
/// dequantized, then float dot products), which the engine took for Q5_K before the row groups. GB/s of weights: matrix bytes / time.
/// (Min is shown beside Mean: the machine is shared.)
/// </summary>
[MinColumn]
public unsafe class KQuantRowGroupBenchmarks : IDisposable
{
    private const int Rows = 4096;
    private const int Cols = 2048;
    private const int SuperBlocks = Cols / 256;
    private NativeBuffer _rows = null!;
    private NativeBuffer _groups = null!;
    private WeightMatrix _matrix = null!;
    private readonly Q8KActivations _x = new();
    private float[] _y = null!;
    private float[] _xf = null!;
    private float[] _row = null!;

    [Params(GgmlType.Q4_K, GgmlType.Q5_K, GgmlType.Q6_K)]
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
        int blockBytes = KQuantRowGroups.UnitBytes(Type) / KQuantRowGroups.GroupRows;
        for (long b = 0; b < bytes / blockBytes; b++)
        {
            // sane FP16 scales over random codes
            *(Half*)(_rows.Pointer + (b * blockBytes) + (Type == GgmlType.Q6_K ? 208 : 0)) = (Half)0.01f;
            if (Type != GgmlType.Q6_K)
            {
                *(Half*)(_rows.Pointer + (b * blockBytes) + 2) = (Half)0.001f;
            }
        }

        _matrix = new WeightMatrix("bench", Type, Rows, Cols, _rows.Pointer);
        _groups = new NativeBuffer(bytes);
        KQuantRowGroups.Repack(_matrix, _groups.Pointer, 0, Rows / KQuantRowGroups.GroupRows);
        _xf = Enumerable.Range(0, Cols * Tokens).Select(i => (float)Math.Sin(i)).ToArray();
        _x.Quantize(_xf, Tokens, Cols);
        _row = new float[Cols];
        _y = new float[Rows * Tokens];
    }

    [Benchmark]
    public void Product()
    {
        bool q6 = Type == GgmlType.Q6_K;
        fixed (sbyte* xq = _x.Values)
        fixed (float* xd = _x.Scales)
        fixed (short* xs = _x.Sums16)
        fixed (int* xp = q6 ? _x.Sums16Pairs : _x.Sums32Pairs)
        fixed (float* y = _y)
        {
            if (Layout == "Rows")
            {
                if (Type == GgmlType.Q5_K)
                {
                    // no per-row integer Q5_K kernel: what the engine did before the row groups, dequantize and dot in floats
                    for (int r = 0; r < Rows; r++)
                    {
                        _matrix.DequantizeRow(r, _row);
                        for (int t = 0; t < Tokens; t++)
                        {
                            y[(t * Rows) + r] = System.Numerics.Tensors.TensorPrimitives.Dot(_row, _xf.AsSpan(t * Cols, Cols));
                        }
                    }

                    return;
                }

                for (int r = 0; r < Rows; r++)
                {
                    byte* row = _rows.Pointer + (r * _matrix.RowByteCount);
                    if (q6)
                    {
                        KQuantDot.DotQ6_K(row, SuperBlocks, Tokens, xq, xd, y + r, Rows);
                    }
                    else
                    {
                        KQuantDot.DotQ4_K(row, SuperBlocks, Tokens, xq, xd, xs, y + r, Rows);
                    }
                }

                return;
            }

            for (int r = 0; r < Rows; r += 8)
            {
                byte* group = _groups.Pointer + (r * _matrix.RowByteCount);
                switch (Type)
                {
                    case GgmlType.Q6_K:
                        KQuantRowGroupDot.DotQ6_K(group, SuperBlocks, Tokens, xq, Cols, xd, xs, xp, y + r, Rows);
                        break;
                    case GgmlType.Q5_K:
                        KQuantRowGroupDot.DotQ5_K(group, SuperBlocks, Tokens, xq, Cols, xd, xs, xp, y + r, Rows);
                        break;
                    default:
                        KQuantRowGroupDot.DotQ4_K(group, SuperBlocks, Tokens, xq, Cols, xd, xs, xp, y + r, Rows);
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
