using System.Buffers.Binary;
using System.Text;
using KvAdaQuant.Numerics;

namespace KvAdaQuant.Formats.Gguf;

/// <summary>
/// A GGUF (v2/v3) file, memory-mapped: metadata key/values and tensor descriptors are parsed with every
/// length and offset checked against the file size, so a truncated or forged file fails with a clear
/// message and no large allocation. Tensor data stay in the mapping.
/// </summary>
public sealed unsafe class GgufFile : IDisposable
{
    /// <summary>"GGUF" read as a little-endian uint32.</summary>
    public const uint Magic = 0x46554747;

    /// <summary>
    /// Deepest nesting of arrays in arrays read (kvaq's writer writes none; a forged file nesting 12-byte array headers
    /// thousands deep would otherwise overflow the stack, which no handler catches).
    /// </summary>
    public const int MaxArrayNesting = 8;

    private readonly MappedFile _file;
    private readonly Dictionary<string, object> _metadata = new(StringComparer.Ordinal);
    private readonly Dictionary<string, GgufValueType> _types = new(StringComparer.Ordinal);
    private readonly Dictionary<string, GgufValueType> _elementTypes = new(StringComparer.Ordinal);
    private readonly List<string> _keyOrder = [];
    private readonly List<GgufTensorInfo> _tensors = [];
    private readonly Dictionary<string, GgufTensorInfo> _byName = new(StringComparer.Ordinal);

    private GgufFile(MappedFile file)
    {
        _file = file;
    }

    /// <summary>File path.</summary>
    public string Path => _file.Path;

    /// <summary>Format version (2 or 3).</summary>
    public uint Version { get; private set; }

    /// <summary>Data alignment (general.alignment, default 32).</summary>
    public int Alignment { get; private set; } = 32;

    /// <summary>Absolute offset of the tensor data section.</summary>
    public long DataOffset { get; private set; }

    /// <summary>Metadata: numbers as their CLR type, strings, bools, arrays as CLR arrays (string[], float[], int[], ...).</summary>
    public IReadOnlyDictionary<string, object> Metadata => _metadata;

    /// <summary>GGUF type of each metadata value.</summary>
    public IReadOnlyDictionary<string, GgufValueType> MetadataTypes => _types;

    /// <summary>GGUF element type of each array-valued metadata key (a uint32 array reads as <c>int[]</c>; this keeps which it was).</summary>
    public IReadOnlyDictionary<string, GgufValueType> ArrayElementTypes => _elementTypes;

    /// <summary>Metadata keys in file order.</summary>
    public IReadOnlyList<string> MetadataKeys => _keyOrder;

    /// <summary>Tensors in file order.</summary>
    public IReadOnlyList<GgufTensorInfo> Tensors => _tensors;

    /// <summary>Start of the mapping.</summary>
    public byte* BasePointer => _file.Pointer;

    /// <summary>Opens and parses <paramref name="path"/>.</summary>
    public static GgufFile Open(string path)
    {
        var file = new MappedFile(path);
        var g = new GgufFile(file);
        try
        {
            g.Parse();
            return g;
        }
        catch
        {
            file.Dispose();
            throw;
        }
    }

    /// <summary>True when <paramref name="head"/> starts with the GGUF magic.</summary>
    public static bool IsGguf(ReadOnlySpan<byte> head) => head.Length >= 4 && BinaryPrimitives.ReadUInt32LittleEndian(head) == Magic;

    /// <summary>True when <paramref name="path"/> is a file that starts with the GGUF magic (false for a folder or a shorter file).</summary>
    public static bool IsGgufFile(string path)
    {
        if (!System.IO.File.Exists(path))
        {
            return false;
        }

        Span<byte> head = stackalloc byte[4];
        using var fs = System.IO.File.OpenRead(path);
        return fs.ReadAtLeast(head, 4, throwOnEndOfStream: false) == 4 && IsGguf(head);
    }

    /// <summary>Tensor by name, or null.</summary>
    public GgufTensorInfo? FindTensor(string name) => _byName.GetValueOrDefault(name);

    /// <summary>Pointer to a tensor's data.</summary>
    public byte* TensorData(GgufTensorInfo t) => _file.Pointer + t.Offset;

    /// <summary>Metadata value by key, or null.</summary>
    public object? Get(string key) => _metadata.GetValueOrDefault(key);

    /// <summary>Metadata string, or <paramref name="fallback"/>.</summary>
    public string? GetString(string key, string? fallback = null) => _metadata.GetValueOrDefault(key) as string ?? fallback;

    /// <summary>Metadata integer (any integer type), or <paramref name="fallback"/>; throws naming the key when not an integer.</summary>
    public long? GetInteger(string key, long? fallback = null)
    {
        if (!_metadata.TryGetValue(key, out var v))
        {
            return fallback;
        }

        return ToInteger(Path, key, v) ?? throw new ModelFormatException(Path, $"metadata '{key}' should be an integer but is {_types[key]}");
    }

    /// <summary>
    /// A metadata value of any integer type as a long; null when it is no integer. Throws naming <paramref name="path"/> and
    /// <paramref name="key"/> for a uint64 beyond long's range.
    /// </summary>
    public static long? ToInteger(string path, string key, object value) => value switch
    {
        byte b => b,
        sbyte sb => sb,
        ushort us => us,
        short s => s,
        uint ui => ui,
        int i => i,
        ulong ul => ul > long.MaxValue ? throw new ModelFormatException(path, $"metadata '{key}' = {ul} is out of range") : (long)ul,
        long l => l,
        _ => null,
    };

    /// <summary>Metadata float (float32 or float64), or <paramref name="fallback"/>.</summary>
    public double? GetFloat(string key, double? fallback = null) => _metadata.TryGetValue(key, out var v)
        ? v switch
        {
            float f => f,
            double d => d,
            _ => GetInteger(key),
        }
        : fallback;

    /// <inheritdoc/>
    public void Dispose() => _file.Dispose();

    private void Parse()
    {
        var r = new Reader(_file);
        uint magic = r.U32();
        if (magic != Magic)
        {
            throw new ModelFormatException(Path, $"not a GGUF file: magic 0x{magic:x8}, expected 0x{Magic:x8} (\"GGUF\")");
        }

        Version = r.U32();
        if (Version is not (2 or 3))
        {
            throw new ModelFormatException(Path, $"GGUF version {Version} is not supported (expected 2 or 3)");
        }

        ulong tensorCount = r.U64();
        ulong kvCount = r.U64();
        // Every key/value takes at least 12 bytes and every tensor descriptor at least 24: bound the counts by the file size.
        if (kvCount > (ulong)(_file.Length / 12) || tensorCount > (ulong)(_file.Length / 24))
        {
            throw new ModelFormatException(Path, $"header claims {tensorCount} tensors and {kvCount} metadata entries, more than a {_file.Length}-byte file can hold");
        }

        for (ulong i = 0; i < kvCount; i++)
        {
            string key = r.Str("metadata key");
            var type = (GgufValueType)r.U32();
            var elementType = type == GgufValueType.Array ? (GgufValueType)r.PeekU32() : default;
            object value = ReadValue(r, type, key);
            if (!_metadata.TryAdd(key, value))
            {
                throw new ModelFormatException(Path, $"metadata key '{key}' appears twice");
            }

            _types[key] = type;
            _keyOrder.Add(key);
            if (type == GgufValueType.Array)
            {
                _elementTypes[key] = elementType;
            }
        }

        if (GetInteger("general.alignment") is { } a)
        {
            if (a <= 0 || a > 1 << 20 || (a & (a - 1)) != 0)
            {
                throw new ModelFormatException(Path, $"general.alignment {a} must be a power of two");
            }

            Alignment = (int)a;
        }

        var pending = new List<(string Name, long[] Shape, GgmlType Type, ulong Offset)>();
        for (ulong i = 0; i < tensorCount; i++)
        {
            string name = r.Str("tensor name");
            uint nDims = r.U32();
            if (nDims is 0 or > 4)
            {
                throw new ModelFormatException(Path, $"tensor '{name}': {nDims} dimensions (expected 1..4)");
            }

            var shape = new long[nDims];
            for (int d = 0; d < nDims; d++)
            {
                ulong ne = r.U64();
                if (ne == 0 || ne > (ulong)_file.Length * 8)
                {
                    throw new ModelFormatException(Path, $"tensor '{name}': dimension {d} is {ne}, impossible for a {_file.Length}-byte file");
                }

                shape[d] = (long)ne;
            }

            uint rawType = r.U32();
            var type = (GgmlType)rawType;
            if (GgmlTypeInfo.Geometry(type) is null)
            {
                throw new ModelFormatException(Path, GgmlTypeInfo.UnsupportedName(rawType) is { } known
                    ? $"tensor '{name}': type {known} ({rawType}) is not supported (kvaq reads F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL and IQ4_XS)"
                    : $"tensor '{name}': unknown tensor type {rawType}");
            }

            pending.Add((name, shape, type, r.U64()));
        }

        DataOffset = (r.Position + Alignment - 1) / Alignment * Alignment;
        foreach (var (name, shape, type, offset) in pending)
        {
            long elements;
            try
            {
                elements = shape.Aggregate(1L, (x, y) => checked(x * y));
            }
            catch (OverflowException)
            {
                throw new ModelFormatException(Path, $"tensor '{name}': shape [{string.Join(", ", shape)}] overflows");
            }

            var geo = GgmlTypeInfo.Geometry(type)!.Value;
            if (shape[0] % geo.BlockElements != 0)
            {
                throw new ModelFormatException(Path, $"tensor '{name}': row length {shape[0]} is not a multiple of the {type} block size {geo.BlockElements}");
            }

            long bytes;
            try
            {
                bytes = checked(elements / geo.BlockElements * geo.BlockBytes);
            }
            catch (OverflowException)
            {
                throw new ModelFormatException(Path, $"tensor '{name}': {type} [{string.Join(", ", shape)}] takes more bytes than a file can hold");
            }

            if (offset % (ulong)Alignment != 0)
            {
                throw new ModelFormatException(Path, $"tensor '{name}': data offset {offset} is not aligned to {Alignment}");
            }

            // Compared with what is left after the offset: DataOffset + offset + bytes can overflow for a forged shape.
            if (offset > (ulong)_file.Length || bytes > _file.Length - DataOffset - (long)offset)
            {
                throw new ModelFormatException(Path, $"tensor '{name}' ({type} [{string.Join(", ", shape)}], {bytes} bytes at data offset {offset}) runs past the end of the {_file.Length}-byte file: truncated?");
            }

            var info = new GgufTensorInfo(name, shape, type, DataOffset + (long)offset, bytes);
            if (!_byName.TryAdd(name, info))
            {
                throw new ModelFormatException(Path, $"tensor '{name}' appears twice");
            }

            _tensors.Add(info);
        }

        // Tensors sharing bytes read each other's data as their own (llama.cpp refuses any offset but the next free one).
        GgufTensorInfo? previous = null;
        foreach (var t in _tensors.OrderBy(t => t.Offset).ThenBy(t => t.ByteSize))
        {
            if (previous is not null && previous.Offset + previous.ByteSize > t.Offset)
            {
                throw new ModelFormatException(Path, $"tensor '{t.Name}' (data offset {t.Offset - DataOffset}) overlaps tensor '{previous.Name}' ({previous.ByteSize} bytes at data offset {previous.Offset - DataOffset}): a wrong offset, type or shape");
            }

            previous = t;
        }
    }

    private object ReadValue(Reader r, GgufValueType type, string key, int depth = 0) => type switch
    {
        GgufValueType.UInt8 => r.Span(1, key)[0],
        GgufValueType.Int8 => (sbyte)r.Span(1, key)[0],
        GgufValueType.UInt16 => BinaryPrimitives.ReadUInt16LittleEndian(r.Span(2, key)),
        GgufValueType.Int16 => BinaryPrimitives.ReadInt16LittleEndian(r.Span(2, key)),
        GgufValueType.UInt32 => r.U32(),
        GgufValueType.Int32 => (int)r.U32(),
        GgufValueType.Float32 => BinaryPrimitives.ReadSingleLittleEndian(r.Span(4, key)),
        GgufValueType.Bool => r.Span(1, key)[0] != 0,
        GgufValueType.String => r.Str(key),
        GgufValueType.UInt64 => r.U64(),
        GgufValueType.Int64 => (long)r.U64(),
        GgufValueType.Float64 => BinaryPrimitives.ReadDoubleLittleEndian(r.Span(8, key)),
        GgufValueType.Array => ReadArray(r, key, depth + 1),
        _ => throw new ModelFormatException(Path, $"metadata '{key}': unknown value type {(uint)type}"),
    };

    private object ReadArray(Reader r, string key, int depth)
    {
        if (depth > MaxArrayNesting)
        {
            throw new ModelFormatException(Path, $"metadata '{key}': arrays nested more than {MaxArrayNesting} deep (at offset {r.Position})");
        }

        var et = (GgufValueType)r.U32();
        long countAt = r.Position;
        ulong count = r.U64();
        int minSize = et switch
        {
            GgufValueType.UInt8 or GgufValueType.Int8 or GgufValueType.Bool => 1,
            GgufValueType.UInt16 or GgufValueType.Int16 => 2,
            GgufValueType.UInt32 or GgufValueType.Int32 or GgufValueType.Float32 => 4,
            GgufValueType.UInt64 or GgufValueType.Int64 or GgufValueType.Float64 or GgufValueType.String => 8,
            GgufValueType.Array => 12,
            _ => throw new ModelFormatException(Path, $"metadata '{key}': unknown array element type {(uint)et}"),
        };
        if (count > (ulong)((_file.Length - r.Position) / minSize))
        {
            throw new ModelFormatException(Path, $"metadata '{key}': array of {count} elements runs past the end of the file");
        }

        // Only a file over 2 GB can hold more; the count would turn negative as an int.
        if (count > (ulong)(Array.MaxLength / 4))
        {
            throw new ModelFormatException(Path, $"metadata '{key}': array of {count} elements (count at offset {countAt}) is larger than kvaq reads ({Array.MaxLength / 4})");
        }

        int n = (int)count;
        switch (et)
        {
            case GgufValueType.String:
                {
                    var a = new string[n];
                    for (int i = 0; i < n; i++)
                    {
                        a[i] = r.Str(key);
                    }

                    return a;
                }

            case GgufValueType.Float32:
                {
                    var a = new float[n];
                    var s = r.Span(n * 4, key);
                    for (int i = 0; i < n; i++)
                    {
                        a[i] = BinaryPrimitives.ReadSingleLittleEndian(s[(i * 4)..]);
                    }

                    return a;
                }

            case GgufValueType.Int32 or GgufValueType.UInt32:
                {
                    var a = new int[n];
                    var s = r.Span(n * 4, key);
                    for (int i = 0; i < n; i++)
                    {
                        a[i] = BinaryPrimitives.ReadInt32LittleEndian(s[(i * 4)..]);
                    }

                    return a;
                }

            default:
                {
                    var a = new object[n];
                    for (int i = 0; i < n; i++)
                    {
                        a[i] = ReadValue(r, et, key, depth);
                    }

                    return a;
                }
        }
    }

    private sealed class Reader(MappedFile file)
    {
        public long Position { get; private set; }

        public ReadOnlySpan<byte> Span(int n, string what)
        {
            if (Position + n > file.Length)
            {
                throw new ModelFormatException(file.Path, $"{what}: needs {n} bytes at offset {Position} but the file ends at {file.Length}: truncated?");
            }

            var s = file.Span(Position, n);
            Position += n;
            return s;
        }

        public uint U32() => BinaryPrimitives.ReadUInt32LittleEndian(Span(4, "header"));

        public uint PeekU32()
        {
            uint v = U32();
            Position -= 4;
            return v;
        }

        public ulong U64() => BinaryPrimitives.ReadUInt64LittleEndian(Span(8, "header"));

        public string Str(string what)
        {
            ulong len = BinaryPrimitives.ReadUInt64LittleEndian(Span(8, what));
            if (len > (ulong)(file.Length - Position))
            {
                throw new ModelFormatException(file.Path, $"{what}: string of {len} bytes at offset {Position} runs past the end of the file");
            }

            // Only a file over 2 GB can hold more; the length would turn negative as an int.
            if (len > (ulong)Array.MaxLength)
            {
                throw new ModelFormatException(file.Path, $"{what}: string of {len} bytes at offset {Position} is larger than kvaq reads");
            }

            return Encoding.UTF8.GetString(Span((int)len, what));
        }
    }
}
