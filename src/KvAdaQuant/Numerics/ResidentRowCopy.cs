namespace KvAdaQuant.Numerics;

/// <summary>
/// Copies a file-mapped matrix's rows, unchanged, into its resident copy (<see cref="WeightMatrix.ResidentRowData"/>) in
/// chunks, on a <see cref="WorkerPool"/> or in a loop; each chunk's mapped pages are released once copied.
/// </summary>
internal sealed unsafe class ResidentRowCopy(WeightMatrix matrix, nint destination, int rowsPerChunk) : IParallelWork
{
    /// <summary>Chunks for <paramref name="rows"/> rows of <paramref name="rowsPerChunk"/>.</summary>
    public static int Chunks(int rows, int rowsPerChunk) => (rows + rowsPerChunk - 1) / rowsPerChunk;

    /// <inheritdoc/>
    public void Execute(int index, int worker)
    {
        int r0 = index * rowsPerChunk;
        int r1 = Math.Min(matrix.Rows, r0 + rowsPerChunk);
        byte* rows = matrix.RowPointer(r0);
        long bytes = (r1 - r0) * matrix.RowByteCount;
        if (matrix.IsFileMapped)
        {
            PageAdvice.PopulateRead(rows, bytes);
        }

        Buffer.MemoryCopy(rows, (byte*)destination + (r0 * matrix.RowByteCount), bytes, bytes);
        if (matrix.IsFileMapped)
        {
            PageAdvice.ReleaseFilePages(rows, bytes);
        }
    }
}
