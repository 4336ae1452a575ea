using System.Runtime.InteropServices;

namespace KvAdaQuant.Numerics;

/// <summary>A 64-byte aligned block of unmanaged memory, zeroed on allocation.</summary>
public sealed unsafe class NativeBuffer : IDisposable
{
    private void* _ptr;

    /// <summary>Allocates <paramref name="bytes"/> zeroed bytes aligned to 64.</summary>
    public NativeBuffer(long bytes)
        : this(bytes, zeroed: true, alignment: 64)
    {
    }

    /// <summary>
    /// Allocates <paramref name="bytes"/> bytes aligned to <paramref name="alignment"/> (a power of two), zeroed or left
    /// as they come (for a buffer the caller fills whole).
    /// </summary>
    public NativeBuffer(long bytes, bool zeroed, int alignment)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(bytes);
        if (alignment < 1 || (alignment & (alignment - 1)) != 0)
        {
            throw new ArgumentOutOfRangeException(nameof(alignment), alignment, "alignment must be a power of two");
        }

        Length = bytes;
        _ptr = NativeMemory.AlignedAlloc((nuint)Math.Max(bytes, 1), (nuint)alignment);
        if (zeroed)
        {
            NativeMemory.Clear(_ptr, (nuint)Math.Max(bytes, 1));
        }
    }

    /// <summary>Size in bytes.</summary>
    public long Length { get; }

    /// <summary>Start of the memory.</summary>
    public byte* Pointer => (byte*)_ptr;

    /// <summary>The memory as a span of <typeparamref name="T"/>, from element <paramref name="start"/>.</summary>
    public Span<T> AsSpan<T>(long start, int count)
        where T : unmanaged
    {
        if (start < 0 || count < 0 || (start + count) * sizeof(T) > Length)
        {
            throw new ArgumentOutOfRangeException(nameof(count));
        }

        return new Span<T>((T*)_ptr + start, count);
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        if (_ptr != null)
        {
            NativeMemory.AlignedFree(_ptr);
            _ptr = null;
        }
    }
}
