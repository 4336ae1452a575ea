namespace KvAdaQuant.Gpu.Cuda;

/// <summary>One kernel argument: 8 raw bytes (a device pointer, an int, or a float in the low bytes).</summary>
public readonly record struct CudaArgument(ulong Bits)
{
    /// <summary>A device pointer.</summary>
    public static implicit operator CudaArgument(CudaDeviceBuffer buffer) => new(buffer?.Pointer ?? 0);

    /// <summary>A 32-bit int.</summary>
    public static implicit operator CudaArgument(int value) => new((uint)value);

    /// <summary>A 32-bit float.</summary>
    public static implicit operator CudaArgument(float value) => new(BitConverter.SingleToUInt32Bits(value));

    /// <summary>A 64-bit value (size_t, pointer).</summary>
    public static CudaArgument FromUInt64(ulong value) => new(value);
}
