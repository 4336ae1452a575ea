using System.Numerics.Tensors;

namespace KvAdaQuant.Numerics;

/// <summary>
/// Computes y = W x for a batch of vectors on a <see cref="WorkerPool"/>, split into chunks of rows.
/// Q8_0, Q4_0, Q5_0, IQ4_NL, Q4_1 and Q5_1 weights multiply activations quantized to Q8_0, Q4_K, Q6_K, Q2_K, Q3_K and IQ4_XS weights (and
/// Q5_K ones in row groups) activations quantized to Q8_K,
/// with integer dot products (as llama.cpp does); F32 rows are read in place, F16 and BF16 rows widened in registers; other types are dequantized one row at a time into per-thread
/// scratch. Each weight row is read once per batch. Not thread-safe: one per engine.
/// </summary>
public sealed unsafe class MatMulKernel : IParallelWork
{
    private readonly WorkerPool _pool;
    private readonly float[][] _scratch;
    private readonly float[][] _tileScales;
    private readonly int[][] _tileCorrections;
    private readonly Q8Activations _xq = new();
    private readonly Q8KActivations _xk = new();
    private float[] _xs1 = [];
    private readonly WeightMatrix?[] _ws = new WeightMatrix?[3];
    private readonly nint[] _ys = new nint[3];
    private readonly nint[] _rowGroups = new nint[3];
    private readonly nint[] _rows = new nint[3];
    private readonly int[] _rowsPerChunk = new int[3];
    private readonly bool[] _finiteHalves = new bool[3];
    private readonly int[] _chunkEnd = new int[3];
    private int _count;
    private float* _x;
    private int _n;

    /// <summary>Creates a kernel running on <paramref name="pool"/>.</summary>
    public MatMulKernel(WorkerPool pool)
    {
        _pool = pool;
        _scratch = new float[pool.Threads][];
        _tileScales = new float[pool.Threads][];
        _tileCorrections = new int[pool.Threads][];
        for (int i = 0; i < _scratch.Length; i++)
        {
            _scratch[i] = [];
            _tileScales[i] = [];
            _tileCorrections[i] = [];
        }
    }

    /// <summary>The pool.</summary>
    public WorkerPool Pool => _pool;

    /// <summary>y[t, r] = sum_c W[r, c] x[t, c] for t in 0..n-1; x is [n, Cols], y is [n, Rows].</summary>
    public void MatMul(WeightMatrix w, ReadOnlySpan<float> x, Span<float> y, int n) => MatMul(w, y, null, default, null, default, x, n);

    /// <summary>
    /// Two or three products of the same input, y_i = W_i x (as for Q, K and V, or the two MLP inputs), in one pass
    /// over the workers: the input is quantized once when the weight types share an integer path. Each product's
    /// arithmetic is exactly that of <see cref="MatMul(WeightMatrix, ReadOnlySpan{float}, Span{float}, int)"/>.
    /// </summary>
    public void MatMul(WeightMatrix w0, Span<float> y0, WeightMatrix? w1, Span<float> y1, WeightMatrix? w2, Span<float> y2, ReadOnlySpan<float> x, int n)
    {
        if (w1 is not null && (w1.Cols != w0.Cols || InputEncoding(w1.Type) != InputEncoding(w0.Type)))
        {
            // Different inputs or input encodings: separate passes.
            MatMul(w0, y0, null, default, null, default, x, n);
            MatMul(w1, y1, w2, y2, null, default, x, n);
            return;
        }

        if (w2 is not null && (w2.Cols != w0.Cols || InputEncoding(w2.Type) != InputEncoding(w0.Type)))
        {
            MatMul(w0, y0, w1, y1, null, default, x, n);
            MatMul(w2, y2, null, default, null, default, x, n);
            return;
        }

        if (x.Length < n * w0.Cols)
        {
            throw new ArgumentException($"{w0.Name}: input holds {x.Length} floats, need {n} x {w0.Cols}");
        }

        switch (InputEncoding(w0.Type))
        {
            case GgmlType.Q8_0:
                _xq.Quantize(x, n, w0.Cols);
                if (w0.Type is GgmlType.Q4_1 or GgmlType.Q5_1 || w1?.Type is GgmlType.Q4_1 or GgmlType.Q5_1 || w2?.Type is GgmlType.Q4_1 or GgmlType.Q5_1)
                {
                    _xs1 = _xq.Q8_1Sums(x, n, w0.Cols);
                }

                break;
            case GgmlType.Q8_K:
                _xk.Quantize(x, n, w0.Cols);
                break;
        }

        fixed (float* px = x)
        fixed (float* p0 = y0)
        fixed (float* p1 = y1)
        fixed (float* p2 = y2)
        {
            _x = px;
            _n = n;
            _count = 0;
            int chunks = 0;
            chunks = Add(w0, y0, p0, n, chunks);
            chunks = w1 is null ? chunks : Add(w1, y1, p1, n, chunks);
            chunks = w2 is null ? chunks : Add(w2, y2, p2, n, chunks);
            _pool.Run(this, chunks);
            Array.Clear(_ws);
            Array.Clear(_rowGroups);
            Array.Clear(_rows);
        }
    }

    /// <summary>
    /// Whether a Q4_0 matrix is multiplied in groups of 8 rows with one running float per row (the summation order of
    /// llama.cpp's repacked q4_0_8x8 kernels, which its x86 builds use when the row count is a multiple of 8), reading
    /// the matrix's interleaved row-group copy (<see cref="Q4_0RowGroups"/>, made on its first product); other Q4_0
    /// matrices sum each row in 8 float lanes as ggml_vec_dot_q4_0_q8_0 does.
    /// </summary>
    public static bool Q4_0InRowGroups(WeightMatrix w) => w.HasQ4_0RowGroups;

    // The least quarter of a work chunk, in rows, at which the Q8_0 batch tiles take rows a quarter apart.
    private const int FarTileRows = 16;

    private float[] TileScratch(int worker, int blocks, out int[] corrections)
    {
        if (_tileScales[worker].Length < blocks * 4)
        {
            _tileScales[worker] = new float[blocks * 4];
            _tileCorrections[worker] = new int[blocks * 32];
        }

        corrections = _tileCorrections[worker];
        return _tileScales[worker];
    }

    // How the products of a weight type take their input: Q8_0 blocks (Q8_0, Q4_0, Q5_0, IQ4_NL; Q4_1 and Q5_1 with the Q8_1
    // sums beside them), Q8_K blocks (Q4_K, Q5_K, Q6_K,
    // Q2_K, Q3_K, IQ4_XS), or
    // floats (F32; a Q5_K matrix without row groups multiplies floats, which stay available).
    private static GgmlType InputEncoding(GgmlType type) => type switch
    {
        GgmlType.Q8_0 or GgmlType.Q4_0 or GgmlType.Q5_0 or GgmlType.IQ4_NL or GgmlType.Q4_1 or GgmlType.Q5_1 => GgmlType.Q8_0,
        GgmlType.Q4_K or GgmlType.Q5_K or GgmlType.Q6_K or GgmlType.Q2_K or GgmlType.Q3_K or GgmlType.IQ4_XS => GgmlType.Q8_K,
        _ => GgmlType.F32,
    };

    // An F16 (finite halves or not) or BF16 tile (HalfDot).
    private static void HalfTile(bool bf16, bool finite, ushort* row, long rowStride, int rows, float* x, long xStride, int tokens, int n, float* output, long rowOutStride, long tokenOutStride)
    {
        if (bf16)
        {
            HalfDot.TileBFloat16(row, rowStride, rows, x, xStride, tokens, n, output, rowOutStride, tokenOutStride);
        }
        else
        {
            HalfDot.Tile(row, rowStride, rows, x, xStride, tokens, n, output, rowOutStride, tokenOutStride, finite);
        }
    }

    private int Add(WeightMatrix w, Span<float> y, float* py, int n, int chunks)
    {
        if (y.Length < n * w.Rows)
        {
            throw new ArgumentException($"{w.Name}: output holds {y.Length} floats, need {n} x {w.Rows}");
        }

        // Enough chunks to balance the threads, few enough that dispatch stays cheap; Q8_0 batches of 2-15 tokens (several
        // sequences' decode steps) in longer chunks, whose row quarters lie further apart (see the Q8_0 tiles below):
        // 1B shape, 8 sequences 66 -> 71 tok/s.
        int target = _pool.Threads * (w.Type == GgmlType.Q8_0 && n > 1 && n < 16 ? 2 : 8);
        // A multiple of 4, so that the F32 kernel's four-row tiles start at the same rows whatever the thread count (a row in a
        // tile and the same row alone are summed in other orders): the same bits with 1, 2 or 16 threads.
        int rowsPerChunk = (Math.Max(4, (w.Rows + target - 1) / target) + 3) & ~3;
        if (w.HasRowGroups)
        {
            rowsPerChunk = (rowsPerChunk + 7) & ~7;
        }

        int m = _count++;
        _ws[m] = w;
        _ys[m] = (nint)py;
        _rowGroups[m] = !w.HasRowGroups ? 0
            : w.HasQ4_0RowGroups ? (nint)w.Q4_0RowGroupData(_pool)
            : w.HasQ4_1RowGroups ? (nint)w.Q4_1RowGroupData(_pool)
            : (nint)w.KQuantRowGroupData(_pool);

        // Q8_0 / F16 / Q4_K / Q6_K rows from their resident copy when the matrix has one (same bytes, huge pages), else from the matrix.
        _rows[m] = w.HasResidentRows ? (nint)w.ResidentRowData(_pool) : (nint)w.RowPointer(0);
        _rowsPerChunk[m] = rowsPerChunk;
        _finiteHalves[m] = w.HalvesAllFinite;
        _chunkEnd[m] = chunks + ((w.Rows + rowsPerChunk - 1) / rowsPerChunk);
        return _chunkEnd[m];
    }

    /// <inheritdoc/>
    public void Execute(int index, int worker)
    {
        int m = 0;
        while (index >= _chunkEnd[m])
        {
            m++;
        }

        var w = _ws[m]!;
        float* y = (float*)_ys[m];
        int r0 = (index - (m == 0 ? 0 : _chunkEnd[m - 1])) * _rowsPerChunk[m];
        int r1 = Math.Min(w.Rows, r0 + _rowsPerChunk[m]);
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
                            y[((long)t * rows) + r] = GgmlArithmetic.Dot(row, new ReadOnlySpan<float>(_x + ((long)t * cols), cols));
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
                            float* yt = y + ((long)t * rows) + r;
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
                            y[((long)t * rows) + r] = TensorPrimitives.Dot(row, new ReadOnlySpan<float>(_x + ((long)t * cols), cols));
                        }
                    }

                    break;
                }

            case GgmlType.Q4_1 when w.HasQ4_1RowGroups:
            case GgmlType.Q5_1 when w.HasQ4_1RowGroups:
            case GgmlType.Q5_0 when w.HasQ4_1RowGroups:
                {
                    // Q4_1, Q5_1 and Q5_0 rows in groups of 8 from the Q4_1-layout copy (Q4_1RowGroups): each row the bits of
                    // its row-by-row kernel, below (Q4_1 / Q5_1 with the Q8_1 sums, unused by Q5_0).
                    int blocks = cols / 32;
                    long groupBytes = 8 * w.RowByteCount;
                    fixed (sbyte* xq = _xq.Values)
                    fixed (float* xd = _xq.Scales)
                    fixed (float* xs1 = _xs1)
                    {
                        for (int r = r0; r < r1; r += 8)
                        {
                            Q4_1RowGroups.DotAvx512((byte*)_rowGroups[m] + ((r / 8) * groupBytes), w.Type, blocks, n, xq, cols, xd, xs1, y + r, rows);
                        }
                    }

                    break;
                }

            case GgmlType.Q5_0:
                {
                    // Q5_0 rows (llama.cpp's fallback for rows that are not a multiple of 256 in K-quant files) row by row,
                    // as ggml_vec_dot_q5_0_q8_0.
                    int blocks = cols / 32;
                    fixed (sbyte* xq = _xq.Values)
                    fixed (float* xd = _xq.Scales)
                    {
                        for (int r = r0; r < r1; r++)
                        {
                            byte* row = w.RowPointer(r);
                            for (int t = 0; t < n; t++)
                            {
                                y[((long)t * rows) + r] = Q5_0Dot.Dot(row, xq + ((long)t * cols), xd + ((long)t * blocks), blocks);
                            }
                        }
                    }

                    break;
                }

            case GgmlType.Q8_0:
            case GgmlType.Q4_0:
                {
                    int blocks = cols / 32;
                    bool q8 = w.Type == GgmlType.Q8_0;
                    byte* rowBase = (byte*)_rows[m];
                    fixed (sbyte* xq = _xq.Values)
                    fixed (float* xd = _xq.Scales)
                    fixed (int* xs = _xq.Sums)
                    {
                        int r = r0;
                        if (!q8 && Q4_0InRowGroups(w))
                        {
                            // llama.cpp repacks these into groups of 8 rows and sums each row block by block in one float
                            // (decode and prefill alike); so do we, from the interleaved copy: one sequential stream per
                            // group. Other Q4_0 rows below: the signed 8-lane form of its vec_dot.
                            long groupBytes = 8 * w.RowByteCount;
                            for (; r + 8 <= r1; r += 8)
                            {
                                byte* group = (byte*)_rowGroups[m] + ((r / 8) * groupBytes);
                                for (int t = 0; t < n; t += 4)
                                {
                                    QuantizedDot.DotQ4_0RowGroup(group, Math.Min(4, n - t), xq + ((long)t * cols), cols, xd + ((long)t * blocks), xs + ((long)t * blocks), blocks, blocks, y + ((long)t * rows) + r, rows);
                                }
                            }
                        }

                        if (q8 && n >= 4)
                        {
                            // Batches (prefill, several sequences' decode steps): tiles of four rows by four tokens share each
                            // weight and activation block; identical per-result arithmetic. A tile's rows lie a quarter of the
                            // chunk apart, as single-token decode takes them: neighbouring rows stream from memory slowly,
                            // which a long prefill hides behind its products but a batch of a few sequences' decode steps
                            // does not (1B shape, 8 sequences: 44 tok/s with neighbours, 66 with rows a quarter apart). In
                            // chunks of fewer than 4 x FarTileRows rows (small models, whose rows stay in the caches) they
                            // are neighbours: stories3M-q80's prefill ran 3-5 % slower with its 5-row quarters.
                            var tileScales = TileScratch(worker, blocks, out var tileCorrections);
                            int part = (r1 - r) / 4 >= FarTileRows ? (r1 - r) / 4 : 1;
                            int tiles = part > 1 ? part : (r1 - r) / 4;
                            long rowStride = part * w.RowByteCount;
                            for (int i = 0; i < tiles; i++)
                            {
                                int first = part > 1 ? r + i : r + (4 * i);
                                byte* tileRows = rowBase + (first * w.RowByteCount);
                                int t = 0;
                                fixed (float* ts = tileScales)
                                fixed (int* tc = tileCorrections)
                                {
                                    // The first token tile computes the row constants the others read.
                                    for (; t + 4 <= n; t += 4)
                                    {
                                        sbyte* q = xq + ((long)t * cols);
                                        float* d = xd + ((long)t * blocks);
                                        float* o = y + ((long)t * rows) + first;
                                        if (t == 0)
                                        {
                                            QuantizedDot.DotQ8_0Tile4x4Preparing(tileRows, rowStride, ts, tc, q, cols, d, blocks, blocks, o, rows, part);
                                        }
                                        else
                                        {
                                            QuantizedDot.DotQ8_0Tile4x4Prepared(tileRows, rowStride, ts, tc, q, cols, d, blocks, blocks, o, rows, part);
                                        }
                                    }
                                }

                                // One to three tokens over: in one pass over the tile's rows.
                                if (t < n)
                                {
                                    QuantizedDot.DotQ8_0x4Tokens(n - t, tileRows, rowStride, xq + ((long)t * cols), cols, xd + ((long)t * blocks), blocks, blocks, y + ((long)t * rows) + first, part, rows);
                                }
                            }

                            r += 4 * tiles;
                        }

                        // Single-token decode: rows i, i + p (, i + 2p, i + 3p) of the chunk, p a quarter (or a half) of it
                        // where that is at least DecodePairDistance rows: four (two) chains in flight, the same bits as one
                        // row at a time (rows close together would be slower, see DotQ8_0x2).
                        // Batches of two or three tokens (several sequences' decode steps) take the same rows, all tokens
                        // in one pass over decode's four rows (DotQ8_0x4Tokens2/3), over its row pairs one token after the
                        // other while the rows are in the cache.
                        int ways = (r1 - r) / 4 >= QuantizedDot.DecodePairDistance ? 4 : (r1 - r) / 2 >= QuantizedDot.DecodePairDistance ? 2 : 1;
                        if (q8 && n < 4 && ways > 1)
                        {
                            int part = (r1 - r) / ways;
                            long stride = part * w.RowByteCount;
                            for (int i = 0; i < part; i++)
                            {
                                byte* first = rowBase + ((r + i) * w.RowByteCount);
                                if (ways == 4)
                                {
                                    // All the tokens in one pass over the four rows (each block loaded and prepared once).
                                    QuantizedDot.DotQ8_0x4Tokens(n, first, stride, xq, cols, xd, blocks, blocks, y + r + i, part, rows);
                                    continue;
                                }

                                for (int t = 0; t < n; t++)
                                {
                                    QuantizedDot.DotQ8_0x2(first, stride, xq + ((long)t * cols), xd + ((long)t * blocks), blocks, y + ((long)t * rows) + r + i, part);
                                }
                            }

                            r += ways * part;
                        }

                        for (; r < r1; r++)
                        {
                            byte* row = rowBase + (r * w.RowByteCount);
                            for (int t = 0; t < n; t++)
                            {
                                sbyte* q = xq + ((long)t * cols);
                                float* d = xd + ((long)t * blocks);
                                // (Q4_0 here: the signed form, whose 8 int lanes are ggml_vec_dot_q4_0_q8_0's; the block-sum form folds
                                // -8 sum(x) into one lane and rounds differently.)
                                y[((long)t * rows) + r] = q8 ? QuantizedDot.DotQ8_0(row, q, d, blocks) : QuantizedDot.DotQ4_0(row, q, d, blocks);
                            }
                        }
                    }

                    break;
                }

            case GgmlType.F16:
            case GgmlType.BF16:
                {
                    // Halves widened in registers; every result has the single dot's arithmetic (HalfDot). Prefill: tiles of four
                    // rows by four tokens (each widened half serves four tokens, each activation load four rows). Decode: four
                    // rows a quarter of the chunk apart (four chains in flight, as for Q8_0: neighbouring rows streamed together
                    // are slow). F16 matrices with no Inf or NaN half (scanned once) widen by the shorter finite-only conversion;
                    // BF16 values are the upper halves of floats.
                    byte* rowBase = (byte*)_rows[m];
                    bool finite = _finiteHalves[m], bf16 = w.Type == GgmlType.BF16;
                    long rowHalves = w.RowByteCount / 2;
                    int r = r0;
                    if (n == 1)
                    {
                        int part = (r1 - r0) / 4;
                        for (int i = 0; i < part; i++)
                        {
                            HalfTile(bf16, finite, (ushort*)(rowBase + ((r0 + i) * w.RowByteCount)), part * rowHalves, 4, _x, cols, 1, cols, y + r0 + i, part, rows);
                        }

                        r = r0 + (4 * part);
                    }

                    int rest = n == 1 ? 1 : 4;
                    for (; r < r1; r += rest)
                    {
                        int k = Math.Min(rest, r1 - r);
                        HalfTile(bf16, finite, (ushort*)(rowBase + (r * w.RowByteCount)), rowHalves, k, _x, cols, n, cols, y + r, 1, rows);
                    }

                    break;
                }

            case GgmlType.Q4_K:
            case GgmlType.Q6_K:
            case GgmlType.Q5_K when w.HasKQuantRowGroups:
            case GgmlType.Q2_K when w.HasKQuantRowGroups:
            case GgmlType.Q3_K when w.HasKQuantRowGroups:
            case GgmlType.IQ4_XS when w.HasKQuantRowGroups:
                {
                    // K-quant rows times Q8_K activations: each super-block unpacked once for up to four tokens; the same
                    // bits per token whatever the batch. Rows in groups of 8 from the row-group copy (KQuantRowGroupDot; Q2_K, Q3_K and IQ4_XS LowBitRowGroupDot),
                    // other matrices row by row (KQuantDot).
                    int superBlocks = cols / 256;
                    bool q6 = w.Type == GgmlType.Q6_K;
                    byte* rowBase = (byte*)_rows[m];
                    fixed (sbyte* xq = _xk.Values)
                    fixed (float* xd = _xk.Scales)
                    fixed (short* xs = _xk.Sums16)
                    fixed (int* xp16 = _xk.Sums16Pairs)
                    fixed (int* xp32 = _xk.Sums32Pairs)
                    {
                        if (w.HasKQuantRowGroups)
                        {
                            long groupBytes = 8 * w.RowByteCount;
                            for (int r = r0; r < r1; r += 8)
                            {
                                byte* group = (byte*)_rowGroups[m] + ((r / 8) * groupBytes);
                                for (int t = 0; t < n; t += 4)
                                {
                                    int tokens = Math.Min(4, n - t);
                                    sbyte* xt = xq + ((long)t * cols);
                                    float* dt = xd + ((long)t * superBlocks);
                                    short* st = xs + ((long)t * superBlocks * 16);
                                    float* yt = y + ((long)t * rows) + r;
                                    switch (w.Type)
                                    {
                                        case GgmlType.Q6_K:
                                            KQuantRowGroupDot.DotQ6_K(group, superBlocks, tokens, xt, cols, dt, st, xp16 + ((long)t * superBlocks * 8), yt, rows);
                                            break;
                                        case GgmlType.Q5_K:
                                            KQuantRowGroupDot.DotQ5_K(group, superBlocks, tokens, xt, cols, dt, st, xp32 + ((long)t * superBlocks * 4), yt, rows);
                                            break;
                                        case GgmlType.Q2_K:
                                            LowBitRowGroupDot.DotQ2_K(group, superBlocks, tokens, xt, cols, dt, st, xp16 + ((long)t * superBlocks * 8), yt, rows);
                                            break;
                                        case GgmlType.Q3_K:
                                            LowBitRowGroupDot.DotQ3_K(group, superBlocks, tokens, xt, cols, dt, st, xp16 + ((long)t * superBlocks * 8), yt, rows);
                                            break;
                                        case GgmlType.IQ4_XS:
                                            LowBitRowGroupDot.DotIq4_XS(group, superBlocks, tokens, xt, cols, dt, st, yt, rows);
                                            break;
                                        default:
                                            KQuantRowGroupDot.DotQ4_K(group, superBlocks, tokens, xt, cols, dt, st, xp32 + ((long)t * superBlocks * 4), yt, rows);
                                            break;
                                    }
                                }
                            }

                            break;
                        }

                        for (int r = r0; r < r1; r++)
                        {
                            byte* row = rowBase + (r * w.RowByteCount);
                            for (int t = 0; t < n; t += 4)
                            {
                                int tokens = Math.Min(4, n - t);
                                if (q6)
                                {
                                    KQuantDot.DotQ6_K(row, superBlocks, tokens, xq + ((long)t * cols), xd + ((long)t * superBlocks), y + ((long)t * rows) + r, rows);
                                }
                                else
                                {
                                    KQuantDot.DotQ4_K(row, superBlocks, tokens, xq + ((long)t * cols), xd + ((long)t * superBlocks), xs + ((long)t * superBlocks * 16), y + ((long)t * rows) + r, rows);
                                }
                            }
                        }
                    }

                    break;
                }

            case GgmlType.Q2_K:
            case GgmlType.Q3_K:
            case GgmlType.IQ4_XS:
                {
                    // Low-bit K-quant rows times Q8_K activations, row by row, each super-block unpacked once for up to four tokens.
                    int superBlocks = cols / 256;
                    fixed (sbyte* xq = _xk.Values)
                    fixed (float* xd = _xk.Scales)
                    fixed (short* xs = _xk.Sums16)
                    {
                        for (int r = r0; r < r1; r++)
                        {
                            byte* row = w.RowPointer(r);
                            for (int t = 0; t < n; t += 4)
                            {
                                int tokens = Math.Min(4, n - t);
                                sbyte* xt = xq + ((long)t * cols);
                                float* dt = xd + ((long)t * superBlocks);
                                float* yt = y + ((long)t * rows) + r;
                                switch (w.Type)
                                {
                                    case GgmlType.Q2_K:
                                        LowBitDot.DotQ2_K(row, superBlocks, tokens, xt, dt, xs + ((long)t * superBlocks * 16), yt, rows);
                                        break;
                                    case GgmlType.Q3_K:
                                        LowBitDot.DotQ3_K(row, superBlocks, tokens, xt, dt, xs + ((long)t * superBlocks * 16), yt, rows);
                                        break;
                                    default:
                                        LowBitDot.DotIq4_XS(row, superBlocks, tokens, xt, dt, yt, rows);
                                        break;
                                }
                            }
                        }
                    }

                    break;
                }

            case GgmlType.Q4_1:
            case GgmlType.Q5_1:
                {
                    // Q4_1 / Q5_1 rows times Q8_0 activations with their Q8_1 sums (ggml_vec_dot_q4_1_q8_1, q5_1_q8_1).
                    int blocks = cols / 32;
                    bool five = w.Type == GgmlType.Q5_1;
                    fixed (sbyte* xq = _xq.Values)
                    fixed (float* xd = _xq.Scales)
                    fixed (float* xs1 = _xs1)
                    {
                        for (int r = r0; r < r1; r++)
                        {
                            byte* row = w.RowPointer(r);
                            for (int t = 0; t < n; t += 4)
                            {
                                LowBitDot.DotQ4_1(row, blocks, Math.Min(4, n - t), five, xq + ((long)t * cols), xd + ((long)t * blocks), xs1 + ((long)t * blocks), y + ((long)t * rows) + r, rows);
                            }
                        }
                    }

                    break;
                }

            case GgmlType.IQ4_NL:
                {
                    // IQ4_NL rows times Q8_0 activations, each block looked up once for up to four tokens: in groups of 8 rows
                    // from the Q4_0-layout copy as llama.cpp repacks them (one float per row, block after block), other
                    // matrices row by row (ggml_vec_dot_iq4_nl_q8_0's eight lanes).
                    int blocks = cols / 32;
                    fixed (sbyte* xq = _xq.Values)
                    fixed (float* xd = _xq.Scales)
                    fixed (int* xs = _xq.Sums)
                    {
                        if (w.HasQ4_0RowGroups)
                        {
                            long groupBytes = 8 * w.RowByteCount;
                            for (int r = r0; r < r1; r += 8)
                            {
                                byte* group = (byte*)_rowGroups[m] + ((r / 8) * groupBytes);
                                for (int t = 0; t < n; t += 4)
                                {
                                    LowBitRowGroupDot.DotIq4_NL(group, Math.Min(4, n - t), xq + ((long)t * cols), cols, xd + ((long)t * blocks), xs + ((long)t * blocks), blocks, blocks, y + ((long)t * rows) + r, rows);
                                }
                            }

                            break;
                        }

                        for (int r = r0; r < r1; r++)
                        {
                            byte* row = w.RowPointer(r);
                            for (int t = 0; t < n; t += 4)
                            {
                                LowBitDot.DotIq4_NL(row, blocks, Math.Min(4, n - t), xq + ((long)t * cols), xd + ((long)t * blocks), y + ((long)t * rows) + r, rows);
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
                            y[((long)t * rows) + r] = TensorPrimitives.Dot(buf, new ReadOnlySpan<float>(_x + ((long)t * cols), cols));
                        }
                    }

                    break;
                }
        }
    }
}
