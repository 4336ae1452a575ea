using System.Numerics.Tensors;

namespace KvAdaQuant.Numerics;

/// <summary>
/// Computes y = W x for a batch of vectors on a <see cref="WorkerPool"/>, split into chunks of rows.
/// Q8_0, Q4_0 and Q4_K weights multiply int8-quantized activations with integer dot products (as llama.cpp
/// does); F32 rows are read in place; other types are dequantized one row at a time into per-thread
/// scratch. Each weight row is read once per batch. Not thread-safe: one per engine.
/// </summary>
public sealed unsafe class MatMulKernel : IParallelWork
{
    private readonly WorkerPool _pool;
    private readonly float[][] _scratch;
    private readonly Q8Activations _xq = new();
    private WeightMatrix? _w;
    private float* _x;
    private float* _y;
    private int _n;
    private int _rowsPerChunk;

    /// <summary>Creates a kernel running on <paramref name="pool"/>.</summary>
    public MatMulKernel(WorkerPool pool)
    {
        _pool = pool;
        _scratch = new float[pool.Threads][];
        for (int i = 0; i < _scratch.Length; i++)
        {
            _scratch[i] = [];
        }
    }

    /// <summary>The pool.</summary>
    public WorkerPool Pool => _pool;

    /// <summary>y[t, r] = sum_c W[r, c] x[t, c] for t in 0..n-1; x is [n, Cols], y is [n, Rows].</summary>
    public void MatMul(WeightMatrix w, ReadOnlySpan<float> x, Span<float> y, int n)
    {
        if (x.Length < n * w.Cols || y.Length < n * w.Rows)
        {
            throw new ArgumentException($"{w.Name}: buffers too small for {n} x [{w.Rows}, {w.Cols}]");
        }

        bool integer = w.Type is GgmlType.Q8_0 or GgmlType.Q4_0 or GgmlType.Q4_K;
        if (integer)
        {
            _xq.Quantize(x, n, w.Cols);
        }

        fixed (float* px = x)
        fixed (float* py = y)
        {
            _w = w;
            _x = px;
            _y = py;
            _n = n;

            // Enough chunks to balance the threads, few enough that dispatch stays cheap.
            int target = _pool.Threads * 8;
            _rowsPerChunk = Math.Max(4, (w.Rows + target - 1) / target);
            if (Q4_0InRowGroups(w))
            {
                _rowsPerChunk = (_rowsPerChunk + 7) & ~7;
            }

            int chunks = (w.Rows + _rowsPerChunk - 1) / _rowsPerChunk;
            _pool.Run(this, chunks);
            _w = null;
        }
    }

    /// <summary>
    /// Whether a Q4_0 matrix is multiplied in groups of 8 rows with one running float per row (the summation order of
    /// llama.cpp's repacked q4_0_8x8 kernels, which its x86 builds use when the row count is a multiple of 8); other
    /// Q4_0 matrices sum each row in 8 float lanes as ggml_vec_dot_q4_0_q8_0 does.
    /// </summary>
    public static bool Q4_0InRowGroups(WeightMatrix w) => w.Type == GgmlType.Q4_0 && w.Rows % 8 == 0;

    /// <inheritdoc/>
    public void Execute(int index, int worker)
    {
        var w = _w!;
        int r0 = index * _rowsPerChunk;
        int r1 = Math.Min(w.Rows, r0 + _rowsPerChunk);
        int cols = w.Cols, rows = w.Rows, n = _n;
        switch (w.Type)
        {
            case GgmlType.F32 when cols % 16 != 0:
                {
                    // Rows llama.cpp's batched F32 kernel (tinyBLAS, 16 lanes) cannot take: it falls back to
                    // ggml_vec_dot_f32, whose order GgmlArithmetic.Dot follows (stories260K's 172-wide FFN down rows).
                    for (int r = r0; r < r1; r++)
                    {
                        var row = new ReadOnlySpan<float>(w.RowPointer(r), cols);
                        for (int t = 0; t < n; t++)
                        {
                            _y[((long)t * rows) + r] = GgmlArithmetic.Dot(row, new ReadOnlySpan<float>(_x + ((long)t * cols), cols));
                        }
                    }

                    break;
                }

            case GgmlType.F32:
                {
                    // Tiles of four rows: each activation vector is read once per four rows.
                    float* tile = stackalloc float[4];
                    int r = r0;
                    for (; r + 4 <= r1; r += 4)
                    {
                        float* w4 = (float*)w.RowPointer(r);
                        for (int t = 0; t < n; t++)
                        {
                            DotTile.Dot4(w4, cols, _x + ((long)t * cols), cols, tile);
                            float* yt = _y + ((long)t * rows) + r;
                            yt[0] = tile[0];
                            yt[1] = tile[1];
                            yt[2] = tile[2];
                            yt[3] = tile[3];
                        }
                    }

                    for (; r < r1; r++)
                    {
                        var row = new ReadOnlySpan<float>(w.RowPointer(r), cols);
                        for (int t = 0; t < n; t++)
                        {
                            _y[((long)t * rows) + r] = TensorPrimitives.Dot(row, new ReadOnlySpan<float>(_x + ((long)t * cols), cols));
                        }
                    }

                    break;
                }

            case GgmlType.Q8_0:
            case GgmlType.Q4_0:
                {
                    int blocks = cols / 32;
                    bool q8 = w.Type == GgmlType.Q8_0;
                    fixed (sbyte* xq = _xq.Values)
                    fixed (float* xd = _xq.Scales)
                    fixed (int* xs = _xq.Sums)
                    {
                        int r = r0;
                        if (!q8 && Q4_0InRowGroups(w))
                        {
                            // llama.cpp repacks these into groups of 8 rows and sums each row block by block in one float.
                            float* group = stackalloc float[8];
                            for (; r + 8 <= r1; r += 8)
                            {
                                for (int t = 0; t < n; t++)
                                {
                                    QuantizedDot.DotQ4_0x8Chain(w.RowPointer(r), w.RowByteCount, xq + ((long)t * cols), xd + ((long)t * blocks), xs + ((long)t * blocks), blocks, group);
                                    new ReadOnlySpan<float>(group, 8).CopyTo(new Span<float>(_y + ((long)t * rows) + r, 8));
                                }
                            }
                        }

                        if (q8 && n > 1)
                        {
                            // Batches (prefill): tiles of four rows share each activation block; identical per-row arithmetic.
                            // (Measured slower for single-token decode, which keeps one row at a time.)
                            float* tile = stackalloc float[4];
                            for (; r + 4 <= r1; r += 4)
                            {
                                for (int t = 0; t < n; t++)
                                {
                                    QuantizedDot.DotQ8_0x4(w.RowPointer(r), w.RowByteCount, xq + ((long)t * cols), xd + ((long)t * blocks), blocks, tile);
                                    float* yt = _y + ((long)t * rows) + r;
                                    yt[0] = tile[0];
                                    yt[1] = tile[1];
                                    yt[2] = tile[2];
                                    yt[3] = tile[3];
                                }
                            }
                        }

                        for (; r < r1; r++)
                        {
                            byte* row = w.RowPointer(r);
                            for (int t = 0; t < n; t++)
                            {
                                sbyte* q = xq + ((long)t * cols);
                                float* d = xd + ((long)t * blocks);
                                // (Q4_0 here: the signed form, whose 8 int lanes are ggml_vec_dot_q4_0_q8_0's; the block-sum form folds
                                // -8 sum(x) into one lane and rounds differently.)
                                _y[((long)t * rows) + r] = q8 ? QuantizedDot.DotQ8_0(row, q, d, blocks) : QuantizedDot.DotQ4_0(row, q, d, blocks);
                            }
                        }
                    }

                    break;
                }

            case GgmlType.Q4_K:
                {
                    int blocks = cols / 32;
                    fixed (sbyte* xq = _xq.Values)
                    fixed (float* xd = _xq.Scales)
                    fixed (int* xs = _xq.Sums)
                    {
                        for (int r = r0; r < r1; r++)
                        {
                            byte* row = w.RowPointer(r);
                            for (int t = 0; t < n; t++)
                            {
                                _y[((long)t * rows) + r] = QuantizedDot.DotQ4_K(row, xq + ((long)t * cols), xd + ((long)t * blocks), xs + ((long)t * blocks), cols / 256);
                            }
                        }
                    }

                    break;
                }

            default:
                {
                    if (_scratch[worker].Length < cols)
                    {
                        _scratch[worker] = new float[cols];
                    }

                    var buf = _scratch[worker].AsSpan(0, cols);
                    for (int r = r0; r < r1; r++)
                    {
                        w.DequantizeRow(r, buf);
                        for (int t = 0; t < n; t++)
                        {
                            _y[((long)t * rows) + r] = TensorPrimitives.Dot(buf, new ReadOnlySpan<float>(_x + ((long)t * cols), cols));
                        }
                    }

                    break;
                }
        }
    }
}
