namespace KvAdaQuant.Gpu.Cuda;

/// <summary>A pair of CUDA events timing work queued between <see cref="Start"/> and <see cref="Stop"/>.</summary>
public sealed unsafe class CudaEventTimer : IDisposable
{
    private readonly CudaDriverApi _api;
    private nint _start;
    private nint _stop;

    /// <summary>Creates the two events.</summary>
    public CudaEventTimer(CudaContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        _api = context.Api;
        nint a, b;
        _api.Check(_api.cuEventCreate(&a, 0), "cuEventCreate");
        _api.Check(_api.cuEventCreate(&b, 0), "cuEventCreate");
        _start = a;
        _stop = b;
    }

    /// <summary>Records the start event.</summary>
    public void Start() => _api.Check(_api.cuEventRecord(_start, 0), "cuEventRecord");

    /// <summary>Records the stop event.</summary>
    public void Stop() => _api.Check(_api.cuEventRecord(_stop, 0), "cuEventRecord");

    /// <summary>Waits for the stop event and returns the milliseconds between the two.</summary>
    public float ElapsedMilliseconds()
    {
        _api.Check(_api.cuEventSynchronize(_stop), "cuEventSynchronize");
        float ms;
        _api.Check(_api.cuEventElapsedTime(&ms, _start, _stop), "cuEventElapsedTime");
        return ms;
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        if (_start != 0)
        {
            _api.cuEventDestroy(_start);
            _api.cuEventDestroy(_stop);
            _start = 0;
            _stop = 0;
        }
    }
}
