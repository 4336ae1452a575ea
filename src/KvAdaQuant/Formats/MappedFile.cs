using System.IO.MemoryMappedFiles;

namespace KvAdaQuant.Formats;

/// <summary>A read-only memory-mapped file exposed as a pointer; weights are read in place, never copied.</summary>
public sealed unsafe class MappedFile : IDisposable
{
    private readonly MemoryMappedFile? _mmf;
    private readonly MemoryMappedViewAccessor? _view;
    private byte* _ptr;

    /// <summary>Maps <paramref name="path"/>.</summary>
    public MappedFile(string path)
    {
        Path = path;
        var info = new FileInfo(path);
        if (!info.Exists)
        {
            throw new FileNotFoundException($"{path}: file not found", path);
        }

        Length = info.Length;
        if (Length == 0)
        {
            throw new ModelFormatException(path, "file is empty");
        }

        _mmf = MemoryMappedFile.CreateFromFile(path, FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
        _view = _mmf.CreateViewAccessor(0, Length, MemoryMappedFileAccess.Read);
        byte* p = null;
        _view.SafeMemoryMappedViewHandle.AcquirePointer(ref p);
        _ptr = p + _view.PointerOffset;
    }

    /// <summary>File path.</summary>
    public string Path { get; }

    /// <summary>File size in bytes.</summary>
    public long Length { get; }

    /// <summary>Start of the mapping.</summary>
    public byte* Pointer => _ptr;

    /// <summary>A span over [offset, offset + length), checked against the file size.</summary>
    public ReadOnlySpan<byte> Span(long offset, int length)
    {
        if (offset < 0 || length < 0 || offset + length > Length)
        {
            throw new ModelFormatException(Path, $"read of {length} bytes at offset {offset} runs past the end of the file ({Length} bytes): truncated?");
        }

        return new ReadOnlySpan<byte>(_ptr + offset, length);
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        if (_ptr != null)
        {
            _view!.SafeMemoryMappedViewHandle.ReleasePointer();
            _ptr = null;
        }

        _view?.Dispose();
        _mmf?.Dispose();
    }
}
