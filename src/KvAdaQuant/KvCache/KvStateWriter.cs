using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text;

namespace KvAdaQuant.KvCache;

/// <summary>
/// Writes a state file's fields little-endian to a stream, counting the bytes and hashing them (SHA-256) for the
/// trailing checksum (<see cref="WriteChecksum"/>).
/// </summary>
internal sealed class KvStateWriter : IDisposable
{
    private readonly Stream _stream;
    private readonly IncrementalHash _hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);

    /// <summary>Writes to <paramref name="stream"/> (not owned).</summary>
    public KvStateWriter(Stream stream) => _stream = stream;

    /// <summary>Bytes written so far.</summary>
    public long Position { get; private set; }

    /// <summary>Writes raw bytes.</summary>
    public void Write(ReadOnlySpan<byte> bytes)
    {
        _stream.Write(bytes);
        _hash.AppendData(bytes);
        Position += bytes.Length;
    }

    /// <summary>Writes the raw bytes of <paramref name="values"/> (little-endian machines only, as every .NET target here).</summary>
    public void Write<T>(ReadOnlySpan<T> values)
        where T : unmanaged => Write(MemoryMarshal.AsBytes(values));

    /// <summary>Writes one byte.</summary>
    public void WriteByte(byte value) => Write([value]);

    /// <summary>Writes a 32-bit signed integer.</summary>
    public void WriteInt32(int value)
    {
        Span<byte> b = stackalloc byte[4];
        BinaryPrimitives.WriteInt32LittleEndian(b, value);
        Write(b);
    }

    /// <summary>Writes a 32-bit unsigned integer.</summary>
    public void WriteUInt32(uint value)
    {
        Span<byte> b = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(b, value);
        Write(b);
    }

    /// <summary>Writes a 64-bit unsigned integer.</summary>
    public void WriteUInt64(ulong value)
    {
        Span<byte> b = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(b, value);
        Write(b);
    }

    /// <summary>Writes a 32-bit float.</summary>
    public void WriteSingle(float value)
    {
        Span<byte> b = stackalloc byte[4];
        BinaryPrimitives.WriteSingleLittleEndian(b, value);
        Write(b);
    }

    /// <summary>Writes a string: its UTF-8 byte count as an int32, then the bytes.</summary>
    public void WriteString(string value)
    {
        var bytes = Encoding.UTF8.GetBytes(value);
        WriteInt32(bytes.Length);
        Write(bytes);
    }

    /// <summary>Writes the SHA-256 of everything written so far (32 bytes, not hashed themselves).</summary>
    public void WriteChecksum()
    {
        Span<byte> digest = stackalloc byte[32];
        _hash.GetHashAndReset(digest);
        _stream.Write(digest);
        Position += digest.Length;
    }

    /// <inheritdoc/>
    public void Dispose() => _hash.Dispose();
}
