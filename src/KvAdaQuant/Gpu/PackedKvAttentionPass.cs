using KvAdaQuant.Gpu.Cuda;

namespace KvAdaQuant.Gpu;

/// <summary>
/// One prepared decode-attention pass on the GPU: the split kernel over the packed tokens (for the fast kernel with
/// the residual window over its last blocks of each head, and optionally the combine fused into it), or the generic
/// split kernel, the residual window's kernel and the combine kernel; <see cref="Run"/> queues them and allocates nothing.
/// </summary>
public sealed class PackedKvAttentionPass : IDisposable
{
    private readonly List<CudaLaunch> _launches;
    private readonly CudaDeviceBuffer[] _scratch;

    internal PackedKvAttentionPass(List<CudaLaunch> launches, CudaDeviceBuffer[] scratch, int splits, int tokensPerSplit, bool fast)
    {
        _launches = launches;
        _scratch = scratch;
        Splits = splits;
        TokensPerSplit = tokensPerSplit;
        UsesFastKernel = fast;
    }

    /// <summary>Splits of the packed tokens (the residual window adds one partial per block it is split over).</summary>
    public int Splits { get; }

    /// <summary>Packed tokens per split.</summary>
    public int TokensPerSplit { get; }

    /// <summary>Whether the K4V2 tensor-core kernel runs (else the generic FP32 kernel).</summary>
    public bool UsesFastKernel { get; }

    /// <summary>Queues the pass on the default stream.</summary>
    public void Run()
    {
        foreach (CudaLaunch launch in _launches)
        {
            launch.Launch();
        }
    }

    /// <summary>Kernel launches in one pass.</summary>
    public int LaunchCount => _launches.Count;

    /// <summary>Queues only launch <paramref name="index"/> (to time stages).</summary>
    public void RunLaunch(int index) => _launches[index].Launch();

    /// <inheritdoc/>
    public void Dispose()
    {
        foreach (CudaLaunch launch in _launches)
        {
            launch.Dispose();
        }

        foreach (CudaDeviceBuffer buffer in _scratch)
        {
            buffer.Dispose();
        }
    }
}
