namespace KvAdaQuant.Numerics;

/// <summary>Repacks a Q4_0 matrix's row groups (<see cref="Q4_0RowGroups"/>) in chunks on a <see cref="WorkerPool"/>.</summary>
internal sealed unsafe class Q4_0RowGroupRepack(WeightMatrix matrix, byte* destination, int groupsPerChunk) : IParallelWork
{
    /// <summary>Chunks for <paramref name="groups"/> groups of <paramref name="groupsPerChunk"/>.</summary>
    public static int Chunks(int groups, int groupsPerChunk) => (groups + groupsPerChunk - 1) / groupsPerChunk;

    /// <inheritdoc/>
    public void Execute(int index, int worker)
    {
        int groups = matrix.Rows / Q4_0RowGroups.GroupRows;
        int g0 = index * groupsPerChunk;
        Q4_0RowGroups.Repack(matrix, destination, g0, Math.Min(groups, g0 + groupsPerChunk));
    }
}
