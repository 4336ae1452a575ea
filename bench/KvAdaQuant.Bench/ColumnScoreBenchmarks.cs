using BenchmarkDotNet.Attributes;
using KvAdaQuant.Numerics;

namespace KvAdaQuant.Bench;

/// <summary>
/// FP32 decode scores of four query heads over one KV head's 8,192 packed key rows (cache-resident), one thread: the
/// column kernel (<see cref="ColumnScoreKernels"/>, one token per lane, codes never dequantized) against the per-row
/// kernel it replaces at head dims up to 64 (<see cref="FusedAttentionKernels.ScoresPacked"/>, dequantize then dot,
/// sixteen tokens' sums reduced by a shuffle tree), and the column kernel over the same rows in <see cref="KeyTiles"/>
/// (how the quantized store keeps the keys it scores since session 37: no transposition per tile). (Min is shown beside
/// Mean: the machine is shared.)
/// </summary>
[MinColumn]
public unsafe class ColumnScoreBenchmarks : IDisposable
{
    private const int Rows = 8192;
    private const int Heads = 4;
    private NativeBuffer _codes = null!;
    private NativeBuffer _params = null!;
    private NativeBuffer _tiles = null!;
    private float[] _q = null!;
    private float[] _permuted = null!;
    private float[] _scores = null!;

    [Params(2, 4)]
    public int Bits { get; set; } = 4;

    [Params(64)]
    public int HeadDim { get; set; } = 64;

    [Params(32, 64)]
    public int Group { get; set; } = 32;

    [GlobalSetup]
    public void Setup()
    {
        var rng = new Random(1);
        long codeBytes = (long)Rows * HeadDim * Bits / 8;
        int parameters = HeadDim / Group * 2;
        _codes = new NativeBuffer(codeBytes);
        rng.NextBytes(new Span<byte>(_codes.Pointer, (int)codeBytes));
        int rowBytes = HeadDim * Bits / 8;
        _tiles = new NativeBuffer(KeyTiles.Bytes(Rows, rowBytes));
        for (int t = 0; t < Rows; t++)
        {
            KeyTiles.WriteRow(_tiles.Pointer, t, rowBytes, new ReadOnlySpan<byte>(_codes.Pointer + ((long)t * rowBytes), rowBytes));
        }
        _params = new NativeBuffer((long)Rows * parameters * 2);
        var prm = (ushort*)_params.Pointer;
        for (int i = 0; i < Rows * parameters; i++)
        {
            prm[i] = BitConverter.HalfToUInt16Bits((Half)(rng.NextDouble() - 0.5));
        }

        _q = Enumerable.Range(0, Heads * HeadDim).Select(_ => (float)rng.NextDouble()).ToArray();
        _permuted = new float[_q.Length];
        FusedAttentionKernels.Permute(_q, FusedAttentionKernels.PermutationTable(HeadDim, Bits), _permuted);
        _scores = new float[Heads * Rows];
    }

    /// <summary>The per-row kernel (dequantize, dot, reduce).</summary>
    [Benchmark(Baseline = true)]
    public void PerRow()
    {
        fixed (float* q = _permuted, s = _scores)
        {
            FusedAttentionKernels.ScoresPacked(Rows_(), q, Heads, s, Rows);
        }
    }

    /// <summary>The column kernel.</summary>
    [Benchmark]
    public void Columns()
    {
        fixed (float* q = _q, s = _scores)
        {
            ColumnScoreKernels.Scores(Rows_(), q, Heads, s, Rows);
        }
    }

    /// <summary>The column kernel over the same rows in key tiles.</summary>
    [Benchmark]
    public void ColumnsFromTiles()
    {
        fixed (float* q = _q, s = _scores)
        {
            ColumnScoreKernels.Scores(Tiles_(), q, Heads, s, Rows);
        }
    }

    public void Dispose()
    {
        _codes?.Dispose();
        _tiles?.Dispose();
        _params?.Dispose();
        GC.SuppressFinalize(this);
    }

    private PackedRows Rows_() => new(_codes.Pointer, (ushort*)_params.Pointer, Rows, HeadDim, Bits, Group, false, 1, 0);

    private PackedRows Tiles_() => new(_tiles.Pointer, (ushort*)_params.Pointer, Rows, HeadDim, Bits, Group, false, 1, 0, tiled: true);
}
