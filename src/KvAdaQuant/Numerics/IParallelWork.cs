namespace KvAdaQuant.Numerics;

/// <summary>A body run by <see cref="WorkerPool"/> for each index of a range; instances are reused so dispatch allocates nothing.</summary>
public interface IParallelWork
{
    /// <summary>Processes item <paramref name="index"/>; <paramref name="worker"/> identifies the thread (0..Threads-1) for per-thread scratch.</summary>
    void Execute(int index, int worker);
}
