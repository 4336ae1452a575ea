namespace KvAdaQuant.Gpu.Cuda;

/// <summary>A CUDA driver or NVRTC call failed, or no CUDA device or library is present.</summary>
public sealed class CudaException : Exception
{
    /// <summary>Creates the exception.</summary>
    public CudaException(string message)
        : base(message)
    {
    }

    /// <summary>Creates the exception with a cause.</summary>
    public CudaException(string message, Exception inner)
        : base(message, inner)
    {
    }
}
