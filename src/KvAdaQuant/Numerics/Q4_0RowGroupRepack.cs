namespace KvAdaQuant.Numerics;

/// <summary>
/// Repacks a Q4_0 matrix's row groups (<see cref="Q4_0RowGroups"/>) in chunks, on a <see cref="WorkerPool"/> or in a loop;
/// a file-mapped matrix's chunk of rows is released from the process once copied (<see cref="PageAdvice"/>).
/// </summary>
internal sealed unsafe class Q4_0RowGroupRepack(WeightMatrix matrix, byte* destination, int groupsPerChunk) : IParallelWork
{
    /// <summary>Chunks for <paramref name="groups"/> groups of <paramref name="groupsPerChunk"/>.</summary>
    public static int Chunks(int groups, int groupsPerChunk) => (groups + groupsPerChunk - 1) / groupsPerChunk;

    /// <inheritdoc/>
    public void Execute(int index, int worker)
    {
        int groups = matrix.Rows / Q4_0RowGroups.GroupRows;
        int g0 = index * groupsPerChunk;
        int g1 = Math.Min(groups, g0 + groupsPerChunk);
        byte* rows = matrix.RowPointer(g0 * Q4_0RowGroups.GroupRows);
        long bytes = (g1 - g0) * Q4_0RowGroups.GroupRows * matrix.RowByteCount;
        if (matrix.IsFileMapped)
        {
            // one call maps the chunk's file pages instead of a page fault per page of each of 8 row streams.
            PageAdvice.PopulateRead(rows, bytes);
        }

        Q4_0RowGroups.Repack(matrix, destination, g0, g1);
        if (matrix.IsFileMapped)
        {
            PageAdvice.ReleaseFilePages(rows, bytes);
        }
    }
}
