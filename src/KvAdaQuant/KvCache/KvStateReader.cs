using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text;

namespace KvAdaQuant.KvCache;

/// <summary>
/// Reads a state file's fields, counting the bytes and hashing them like <see cref="KvStateWriter"/>. A read past the
/// end is an <see cref="InvalidDataException"/> naming the file, the <see cref="Section"/> being read and the offset.
/// </summary>
internal sealed class KvStateReader : IDisposable
{
    private readonly Stream _stream;
    private readonly IncrementalHash _hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);

    /// <summary>Reads <paramref name="stream"/> (not owned); <paramref name="source"/> names it in errors.</summary>
    public KvStateReader(Stream stream, string source)
    {
        _stream = stream;
        Source = source;
    }

    /// <summary>The file name used in errors.</summary>
    public string Source { get; }

    /// <summary>Bytes read so far (the offset of the next field).</summary>
    public long Position { get; private set; }

    /// <summary>What is being read, for errors (e.g. "header", "layer 3 V").</summary>
    public string Section { get; set; } = "header";

    /// <summary>Reads exactly <paramref name="bytes"/>.Length bytes.</summary>
    public void Read(Span<byte> bytes)
    {
        int got = _stream.ReadAtLeast(bytes, bytes.Length, throwOnEndOfStream: false);
        if (got < bytes.Length)
        {
            throw new InvalidDataException($"{Source}: truncated state file: the {Section} section needs {bytes.Length:N0} bytes at offset {Position:N0}, the file ends after {got:N0} of them (at offset {Position + got:N0})");
        }

        _hash.AppendData(bytes);
        Position += bytes.Length;
    }

    /// <summary>Counts and hashes <paramref name="bytes"/>, already read from the stream by the caller.</summary>
    public void Skip(ReadOnlySpan<byte> bytes)
    {
        _hash.AppendData(bytes);
        Position += bytes.Length;
    }

    /// <summary>Reads raw values.</summary>
    public void Read<T>(Span<T> values)
        where T : unmanaged => Read(MemoryMarshal.AsBytes(values));

    /// <summary>
    /// Reads <paramref name="count"/> values into a new array. The array is only as large as the data: a file (a seekable
    /// stream) shorter than <paramref name="count"/> values fails before anything is allocated, and another stream is read
    /// in chunks, so that a corrupt count cannot make a huge allocation.
    /// </summary>
    public T[] ReadArray<T>(int count)
        where T : unmanaged
    {
        const int chunk = 1 << 16;
        long bytes = (long)count * Unsafe.SizeOf<T>();
        if (_stream.CanSeek && bytes > _stream.Length - _stream.Position)
        {
            long left = Math.Max(0, _stream.Length - _stream.Position);
            throw new InvalidDataException($"{Source}: truncated state file: the {Section} section needs {bytes:N0} bytes at offset {Position:N0}, the file ends after {left:N0} of them (at offset {Position + left:N0})");
        }

        if (_stream.CanSeek || count <= chunk)
        {
            var all = new T[count];
            Read<T>(all);
            return all;
        }

        var values = new List<T>(chunk);
        var buffer = new T[chunk];
        for (int left = count; left > 0;)
        {
            int n = Math.Min(left, chunk);
            Read(buffer.AsSpan(0, n));
            values.AddRange(buffer.AsSpan(0, n));
            left -= n;
        }

        return [.. values];
    }

    /// <summary>Reads one byte.</summary>
    public byte ReadByte()
    {
        Span<byte> b = stackalloc byte[1];
        Read(b);
        return b[0];
    }

    /// <summary>Reads a 32-bit signed integer.</summary>
    public int ReadInt32()
    {
        Span<byte> b = stackalloc byte[4];
        Read(b);
        return BinaryPrimitives.ReadInt32LittleEndian(b);
    }

    /// <summary>Reads a 32-bit unsigned integer.</summary>
    public uint ReadUInt32()
    {
        Span<byte> b = stackalloc byte[4];
        Read(b);
        return BinaryPrimitives.ReadUInt32LittleEndian(b);
    }

    /// <summary>Reads a 64-bit unsigned integer.</summary>
    public ulong ReadUInt64()
    {
        Span<byte> b = stackalloc byte[8];
        Read(b);
        return BinaryPrimitives.ReadUInt64LittleEndian(b);
    }

    /// <summary>Reads a 32-bit float.</summary>
    public float ReadSingle()
    {
        Span<byte> b = stackalloc byte[4];
        Read(b);
        return BinaryPrimitives.ReadSingleLittleEndian(b);
    }

    /// <summary>Reads a string written by <see cref="KvStateWriter.WriteString"/> of at most <paramref name="maxBytes"/> UTF-8 bytes.</summary>
    public string ReadString(string field, int maxBytes = 4096)
    {
        long at = Position;
        int n = ReadInt32();
        if (n < 0 || n > maxBytes)
        {
            throw new InvalidDataException($"{Source}: corrupt state file: {field} at offset {at:N0} claims {n:N0} bytes (0..{maxBytes:N0} allowed)");
        }

        return Encoding.UTF8.GetString(ReadArray<byte>(n));
    }

    /// <summary>
    /// Reads the 32-byte checksum and compares it with the SHA-256 of everything read before it; a mismatch is an
    /// <see cref="InvalidDataException"/>.
    /// </summary>
    public void VerifyChecksum()
    {
        Section = "checksum";
        Span<byte> expected = stackalloc byte[32];
        _hash.GetHashAndReset(expected);
        Span<byte> stored = stackalloc byte[32];
        int got = _stream.ReadAtLeast(stored, 32, throwOnEndOfStream: false);
        if (got < 32)
        {
            throw new InvalidDataException($"{Source}: truncated state file: the checksum needs 32 bytes at offset {Position:N0}, the file ends after {got}");
        }

        if (!expected.SequenceEqual(stored))
        {
            throw new InvalidDataException($"{Source}: corrupt state file: the SHA-256 checksum at offset {Position:N0} does not match the {Position:N0} bytes before it");
        }

        Position += 32;
    }

    /// <inheritdoc/>
    public void Dispose() => _hash.Dispose();
}
