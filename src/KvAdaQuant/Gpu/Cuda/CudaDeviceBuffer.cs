namespace KvAdaQuant.Gpu.Cuda;

/// <summary>A block of device memory (cuMemAlloc), freed on dispose.</summary>
public sealed unsafe class CudaDeviceBuffer : IDisposable
{
    private readonly CudaDriverApi _api;

    internal CudaDeviceBuffer(CudaContext context, long bytes)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(bytes);
        _api = context.Api;
        ulong ptr;
        _api.Check(_api.cuMemAlloc(&ptr, (nuint)bytes), $"cuMemAlloc({bytes} bytes)");
        Pointer = ptr;
        Length = bytes;
    }

    /// <summary>Device address.</summary>
    public ulong Pointer { get; private set; }

    /// <summary>Size in bytes.</summary>
    public long Length { get; }

    /// <summary>Copies host data to the start of the buffer.</summary>
    public void CopyFrom<T>(ReadOnlySpan<T> data)
        where T : unmanaged
    {
        long bytes = (long)data.Length * sizeof(T);
        if (bytes > Length)
        {
            throw new ArgumentException($"data: {bytes} bytes do not fit in {Length}.", nameof(data));
        }

        fixed (T* p = data)
        {
            _api.Check(_api.cuMemcpyHtoD(Pointer, p, (nuint)bytes), "cuMemcpyHtoD");
        }
    }

    /// <summary>Copies host data into the buffer at <paramref name="byteOffset"/>.</summary>
    public void CopyFrom<T>(ReadOnlySpan<T> data, long byteOffset)
        where T : unmanaged
    {
        long bytes = (long)data.Length * sizeof(T);
        if (byteOffset < 0 || byteOffset + bytes > Length)
        {
            throw new ArgumentException($"data: {bytes} bytes at offset {byteOffset} do not fit in {Length}.", nameof(data));
        }

        fixed (T* p = data)
        {
            _api.Check(_api.cuMemcpyHtoD(Pointer + (ulong)byteOffset, p, (nuint)bytes), "cuMemcpyHtoD");
        }
    }

    /// <summary>Copies the start of the buffer to host memory.</summary>
    public void CopyTo<T>(Span<T> data)
        where T : unmanaged
    {
        long bytes = (long)data.Length * sizeof(T);
        if (bytes > Length)
        {
            throw new ArgumentException($"data: {bytes} bytes exceed the buffer's {Length}.", nameof(data));
        }

        fixed (T* p = data)
        {
            _api.Check(_api.cuMemcpyDtoH(p, Pointer, (nuint)bytes), "cuMemcpyDtoH");
        }
    }

    /// <summary>Fills the buffer with a 32-bit pattern (used to poison outputs before a check).</summary>
    public void Fill(uint pattern) => _api.Check(_api.cuMemsetD32(Pointer, pattern, (nuint)(Length / 4)), "cuMemsetD32");

    /// <inheritdoc/>
    public void Dispose()
    {
        if (Pointer != 0)
        {
            _api.cuMemFree(Pointer);
            Pointer = 0;
        }
    }
}
