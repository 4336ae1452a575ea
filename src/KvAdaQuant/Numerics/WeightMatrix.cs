namespace KvAdaQuant.Numerics;

/// <summary>
/// A row-major weight matrix W of shape [Rows, Cols] in any supported ggml type, held in unmanaged or
/// memory-mapped memory it does not own. Products compute y = W x for each input vector x. A Q4_0, Q4_K or Q6_K matrix
/// whose row count is a multiple of 8 also gets, on its first product, an interleaved copy it owns
/// (<see cref="Q4_0RowGroups"/>, <see cref="KQuantRowGroups"/>), which the matrix kernels read instead of the rows; <see cref="RowData"/> and <see cref="RowPointer"/> keep giving the
/// original rows.
/// </summary>
public sealed unsafe class WeightMatrix : IDisposable
{
    private readonly byte* _data;
    private readonly Lock _copyLock = new();
    private NativeBuffer? _copy;
    private bool _finalizerSuppressed;

    /// <summary>Wraps <paramref name="rows"/> x <paramref name="cols"/> elements of <paramref name="type"/> at <paramref name="data"/>.</summary>
    public WeightMatrix(string name, GgmlType type, int rows, int cols, byte* data)
    {
        if (!RowDequantizer.Supports(type))
        {
            throw new NotSupportedException($"tensor '{name}': type {type} is not supported for weights");
        }

        Name = name;
        Type = type;
        Rows = rows;
        Cols = cols;
        RowByteCount = GgmlTypeInfo.ByteSize(type, cols);
        _data = data;
    }

    /// <summary>Tensor name as in the model file.</summary>
    public string Name { get; }

    /// <summary>Element type.</summary>
    public GgmlType Type { get; }

    /// <summary>Output dimension.</summary>
    public int Rows { get; }

    /// <summary>Input dimension.</summary>
    public int Cols { get; }

    /// <summary>Bytes in one row.</summary>
    public long RowByteCount { get; }

    /// <summary>Total bytes of the matrix.</summary>
    public long ByteCount => RowByteCount * Rows;

    /// <summary>
    /// Raw bytes of row <paramref name="row"/>: from the resident copy once it is made (the same bytes; reading the
    /// mapping again would fault its released pages back in beside the copy, as the token embedding's lookups did when
    /// the classifier shares it), else from the data.
    /// </summary>
    public ReadOnlySpan<byte> RowData(int row) => new(RowSource() + (row * RowByteCount), checked((int)RowByteCount));

    /// <summary>Writes row <paramref name="row"/> as floats into <paramref name="dst"/> (length Cols).</summary>
    public void DequantizeRow(int row, Span<float> dst)
    {
        RowDequantizer.Dequantize(Type, RowData(row), dst[..Cols]);
        if (IsFileMapped && HasRowGroups && IsRepacked && Interlocked.Increment(ref _lookups) % LookupsPerRelease == 0)
        {
            // Lookups in a matrix whose products read a row-group copy (a token embedding that is also the classifier)
            // read the mapping, and each faults its row in with neighbours (fault-around and large page-cache folios:
            // 64 KB or more here), which would rebuild the mapping beside the copy token by token. Every
            // LookupsPerRelease lookups the matrix's mapped pages are dropped again: the growth stays a few MB, and
            // the drop (a page-table walk plus a TLB shootdown) is paid once per 64 tokens (dropping a 2 MB window
            // after every lookup cost 1-5 % of Q4_0 decode at ctx 128).
            PageAdvice.ReleaseFilePages(_data, ByteCount);
        }
    }

    /// <summary>Lookups (<see cref="DequantizeRow"/>) in a row-group matrix between two drops of its mapped pages.</summary>
    internal const int LookupsPerRelease = 64;

    private int _lookups;

    // The resident copy where one has been made (identical layout), else the mapped or owned data.
    private byte* RowSource() => HasResidentRows && Volatile.Read(ref _copy) is { } copy ? copy.Pointer : _data;

    /// <summary>Pointer to the first byte of row <paramref name="row"/>.</summary>
    public byte* RowPointer(int row) => _data + (row * RowByteCount);

    /// <summary>
    /// Whether the data lies in a read-only file mapping: after the products' copy (row groups or resident rows) is made, the original pages are
    /// then dropped from the process (<see cref="PageAdvice"/>), so the copy does not double the resident memory; rows
    /// read later come back from the file.
    /// </summary>
    public bool IsFileMapped { get; init; }

    /// <summary>
    /// Whether products read a row-group copy in the Q4_0 layout (<see cref="Q4_0RowGroups"/>): Q4_0, or IQ4_NL (the same
    /// 18-byte blocks) where the CPU has AVX-VNNI (<see cref="LowBitRowGroupDot.DotIq4_NL"/>), with a row count that is a
    /// multiple of 8.
    /// </summary>
    public bool HasQ4_0RowGroups => Q4_0RowGroups.UsedFor(Type, Rows);

    /// <summary>
    /// Whether products read the K-quant row-group copy (<see cref="KQuantRowGroups"/>): Q4_K, Q5_K, Q6_K, Q2_K, Q3_K or IQ4_XS (the
    /// last where the CPU has AVX-VNNI, <see cref="KQuantRowGroups.UsedFor"/>) with a row count that is a multiple of 8.
    /// </summary>
    public bool HasKQuantRowGroups => KQuantRowGroups.UsedFor(Type, Rows);

    /// <summary>
    /// Whether products read the Q4_1-layout row-group copy (<see cref="Q4_1RowGroups"/>): Q4_1, Q5_1 or Q5_0 with a row count
    /// that is a multiple of 8, where the CPU runs its 512-bit kernel (<see cref="Q4_1RowGroups.UsedFor"/>).
    /// </summary>
    public bool HasQ4_1RowGroups => Q4_1RowGroups.UsedFor(Type, Rows);

    /// <summary>
    /// Whether products read a row-group copy of any layout (<see cref="HasQ4_0RowGroups"/>, <see cref="HasKQuantRowGroups"/>,
    /// <see cref="HasQ4_1RowGroups"/>).
    /// </summary>
    public bool HasRowGroups => HasQ4_0RowGroups || HasKQuantRowGroups || HasQ4_1RowGroups;

    /// <summary>
    /// Whether products read a resident copy of the rows (the same bytes in the same layout, in transparent huge pages):
    /// file-mapped Q8_0, F16 and BF16 matrices, and Q4_K and Q6_K ones without row groups. A file mapping comes in 4 KB pages; streaming the matrices from huge
    /// pages instead made 1B Q8_0 decode and prefill faster (README, Speed vs llama.cpp).
    /// </summary>
    public bool HasResidentRows => IsFileMapped && (Type is GgmlType.Q8_0 or GgmlType.F16 or GgmlType.BF16 || (Type is GgmlType.Q4_K or GgmlType.Q6_K && !HasKQuantRowGroups));

    /// <summary>
    /// Whether every half of an F16 matrix is finite (no Inf or NaN), so that products may widen them by
    /// <see cref="HalfBits.FiniteToSingle16"/>: scanned once, on the first call (thread-safe; concurrent first calls may
    /// both scan). False for other types.
    /// </summary>
    public bool HalvesAllFinite
    {
        get
        {
            if (Type != GgmlType.F16)
            {
                return false;
            }

            int known = Volatile.Read(ref _halvesFinite);
            if (known == 0)
            {
                // (from the resident copy where it exists: the mapped pages it replaced stay released)
                known = HalfBits.HasNonFinite((ushort*)RowSource(), (long)Rows * Cols) ? 2 : 1;
                Volatile.Write(ref _halvesFinite, known);
            }

            return known == 1;
        }
    }

    // 0: not scanned yet; 1: all halves finite; 2: some infinite or NaN.
    private int _halvesFinite;

    /// <summary>Whether the products' copy (row groups or resident rows) exists now.</summary>
    public bool IsRepacked => Volatile.Read(ref _copy) is not null;

    /// <summary>
    /// The Q4_0 row-group copy (<see cref="Q4_0RowGroups"/>; row group g at g * 8 * <see cref="RowByteCount"/>), made on
    /// the first call, on <paramref name="pool"/> when given (thread-safe: concurrent first calls make one copy).
    /// </summary>
    public byte* Q4_0RowGroupData(WorkerPool? pool = null) =>
        RowGroupData(HasQ4_0RowGroups, "Q4_0-layout row groups (Q4_0 or IQ4_NL, rows a multiple of 8)", pool);

    /// <summary>
    /// The K-quant row-group copy (<see cref="KQuantRowGroups"/>; row group g at g * 8 * <see cref="RowByteCount"/>),
    /// made on the first call like <see cref="Q4_0RowGroupData"/>.
    /// </summary>
    public byte* KQuantRowGroupData(WorkerPool? pool = null) =>
        RowGroupData(HasKQuantRowGroups, "K-quant row groups (Q4_K, Q5_K, Q6_K, Q2_K, Q3_K or IQ4_XS, rows a multiple of 8)", pool);

    /// <summary>
    /// The Q4_1-layout row-group copy (<see cref="Q4_1RowGroups"/>: Q4_1, Q5_1, Q5_0; row group g at g * 8 * <see cref="RowByteCount"/>), made on
    /// the first call like <see cref="Q4_0RowGroupData"/>.
    /// </summary>
    public byte* Q4_1RowGroupData(WorkerPool? pool = null) =>
        RowGroupData(HasQ4_1RowGroups, "Q4_1-layout row groups (Q4_1, Q5_1 or Q5_0, rows a multiple of 8, on CPUs with AVX-512 BW; Q5_1 and Q5_0 also GFNI)", pool);

    /// <summary>
    /// The resident copy of the rows (row r at r * <see cref="RowByteCount"/>, the bytes of <see cref="RowPointer"/>),
    /// made on the first call like <see cref="Q4_0RowGroupData"/>; the mapped pages are released as they are copied.
    /// </summary>
    public byte* ResidentRowData(WorkerPool? pool = null)
    {
        if (Volatile.Read(ref _copy) is { } made)
        {
            return made.Pointer;
        }

        if (!HasResidentRows)
        {
            throw new InvalidOperationException($"{Name}: only file-mapped Q8_0, F16, BF16, and Q4_K and Q6_K matrices without row groups get a resident copy (this is {(IsFileMapped ? "file-mapped" : "not file-mapped")} {Type} with {Rows} rows)");
        }

        return Copy(pool, IdentityCopy);
    }

    // The row-group copy of either layout, made once.
    private byte* RowGroupData(bool applies, string layout, WorkerPool? pool)
    {
        if (Volatile.Read(ref _copy) is { } made)
        {
            return made.Pointer;
        }

        if (!applies)
        {
            throw new InvalidOperationException($"{Name}: a {Type} matrix of {Rows} rows has no {layout}");
        }

        return Copy(pool, RowGroupCopy);
    }

    // Chunks of about 4 MB; MappedRowsCopy releases each chunk's mapped rows once copied.
    private MappedRowsCopy RowGroupCopy(nint destination)
    {
        const int g = 8; // Q4_0RowGroups, KQuantRowGroups and Q4_1RowGroups alike
        int groupsPerChunk = (int)Math.Clamp((4L << 20) / (g * RowByteCount), 1, Rows / g);
        return HasQ4_0RowGroups
            ? new MappedRowsCopy(this, groupsPerChunk * g, (r0, r1) => Q4_0RowGroups.Repack(this, (byte*)destination, r0 / g, r1 / g))
            : HasQ4_1RowGroups
            ? new MappedRowsCopy(this, groupsPerChunk * g, (r0, r1) => Q4_1RowGroups.Repack(this, (byte*)destination, r0 / g, r1 / g))
            : new MappedRowsCopy(this, groupsPerChunk * g, (r0, r1) => KQuantRowGroups.Repack(this, (byte*)destination, r0 / g, r1 / g));
    }

    private MappedRowsCopy IdentityCopy(nint destination) => new(this, (int)Math.Clamp((4L << 20) / RowByteCount, 1, Rows), (r0, r1) =>
    {
        long bytes = (r1 - r0) * RowByteCount;
        Buffer.MemoryCopy(RowPointer(r0), (byte*)destination + (r0 * RowByteCount), bytes, bytes);
    });

    // Makes the products' copy once (the callers have checked that none exists yet).
    private byte* Copy(WorkerPool? pool, Func<nint, MappedRowsCopy> work)
    {
        NativeBuffer? buffer;
        lock (_copyLock)
        {
            buffer = _copy;
            if (buffer is null)
            {
                // huge pages (where the kernel grants them): 512 times fewer page faults while the copy is written, and
                // fewer TLB misses while the kernels stream it.
                buffer = new NativeBuffer(ByteCount, zeroed: false, alignment: PageAdvice.HugePageBytes);
                PageAdvice.UseHugePages(buffer.Pointer, buffer.Length);
                var copy = work((nint)buffer.Pointer);
                int chunks = copy.Chunks;
                try
                {
                    if (pool is null)
                    {
                        for (int i = 0; i < chunks; i++)
                        {
                            copy.Execute(i, 0);
                        }
                    }
                    else
                    {
                        pool.Run(copy, chunks);
                    }
                }
                catch
                {
                    buffer.Dispose();
                    throw;
                }

                if (IsFileMapped)
                {
                    // the pages straddling two chunks, which neither released.
                    PageAdvice.ReleaseFilePages(_data, ByteCount);
                }

                GC.AddMemoryPressure(ByteCount);
                if (_finalizerSuppressed)
                {
                    // a copy made again after Dispose: freed at collection if never disposed again.
                    GC.ReRegisterForFinalize(this);
                    _finalizerSuppressed = false;
                }

                Volatile.Write(ref _copy, buffer);
            }
        }

        return buffer.Pointer;
    }

    /// <summary>Frees the products' copy, if any. The matrix stays usable: the next product makes the copy again.</summary>
    public void Dispose()
    {
        lock (_copyLock)
        {
            FreeCopy();
            GC.SuppressFinalize(this);
            _finalizerSuppressed = true;
        }
    }

    /// <summary>Frees the products' copy of a matrix that was never disposed.</summary>
    ~WeightMatrix()
    {
        lock (_copyLock)
        {
            FreeCopy();
        }
    }

    // Under _copyLock.
    private void FreeCopy()
    {
        if (_copy is not null)
        {
            _copy.Dispose();
            _copy = null;
            GC.RemoveMemoryPressure(ByteCount);
        }
    }
}
