namespace KvAdaQuant.Numerics;

/// <summary>
/// Copies a matrix's rows into one of its products' copies (<see cref="WeightMatrix.Q4_0RowGroupData"/>,
/// <see cref="WeightMatrix.ResidentRowData"/>) in chunks of rows, on a <see cref="WorkerPool"/> or in a loop. For a
/// file-mapped matrix each chunk's pages are faulted in with one call before <paramref name="copy"/> runs and released
/// from the process after (<see cref="PageAdvice"/>), so at most a chunk per thread is resident beside the copy.
/// </summary>
/// <param name="matrix">The matrix whose rows are copied.</param>
/// <param name="rowsPerChunk">Rows per chunk.</param>
/// <param name="copy">Copies rows [r0, r1) into the destination.</param>
internal sealed unsafe class MappedRowsCopy(WeightMatrix matrix, int rowsPerChunk, Action<int, int> copy) : IParallelWork
{
    /// <summary>Chunks this copy has.</summary>
    public int Chunks => (matrix.Rows + rowsPerChunk - 1) / rowsPerChunk;

    /// <inheritdoc/>
    public void Execute(int index, int worker)
    {
        int r0 = index * rowsPerChunk;
        int r1 = Math.Min(matrix.Rows, r0 + rowsPerChunk);
        byte* rows = matrix.RowPointer(r0);
        long bytes = (r1 - r0) * matrix.RowByteCount;
        if (matrix.IsFileMapped)
        {
            // one call maps the chunk's file pages instead of a page fault per page (of up to 8 row streams).
            PageAdvice.PopulateRead(rows, bytes);
        }

        copy(r0, r1);
        if (matrix.IsFileMapped)
        {
            PageAdvice.ReleaseFilePages(rows, bytes);
        }
    }
}
