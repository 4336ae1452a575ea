using System.Buffers.Binary;
using System.Text;
using KvAdaQuant.Numerics;

namespace KvAdaQuant.Formats.Gguf;

/// <summary>
/// Writes GGUF v3 files as llama.cpp reads them: header, metadata, tensor descriptors, then each tensor's
/// data at an offset aligned to <see cref="Alignment"/> (32), laid out in descriptor order with zero padding
/// (llama.cpp rejects any other offset). Tensors are given as row sources and streamed: rows are produced
/// and quantized in parallel chunks of about a million elements and written in order, so a file of any
/// size needs only a few megabytes of memory per thread.
/// </summary>
public sealed class GgufWriter
{
    private const int ChunkElements = RowStreamer.ChunkElements;
    private readonly List<(string Key, GgufValueType Type, GgufValueType ElementType, object Value)> _metadata = [];
    private readonly List<PendingTensor> _tensors = [];
    private readonly HashSet<string> _keys = new(StringComparer.Ordinal);
    private readonly HashSet<string> _names = new(StringComparer.Ordinal);

    /// <summary>Data alignment in bytes (llama.cpp's default, 32).</summary>
    public int Alignment => 32;

    /// <summary>Tensors added so far, in file order.</summary>
    public int TensorCount => _tensors.Count;

    /// <summary>Sets a string value.</summary>
    public void Set(string key, string value) => Add(key, GgufValueType.String, default, value);

    /// <summary>Sets a uint32 value.</summary>
    public void Set(string key, uint value) => Add(key, GgufValueType.UInt32, default, value);

    /// <summary>Sets an int32 value.</summary>
    public void Set(string key, int value) => Add(key, GgufValueType.Int32, default, value);

    /// <summary>Sets a uint64 value.</summary>
    public void Set(string key, ulong value) => Add(key, GgufValueType.UInt64, default, value);

    /// <summary>Sets a float32 value.</summary>
    public void Set(string key, float value) => Add(key, GgufValueType.Float32, default, value);

    /// <summary>Sets a bool value.</summary>
    public void Set(string key, bool value) => Add(key, GgufValueType.Bool, default, value);

    /// <summary>Sets an array of strings.</summary>
    public void Set(string key, string[] values) => Add(key, GgufValueType.Array, GgufValueType.String, values);

    /// <summary>Sets an array of float32.</summary>
    public void Set(string key, float[] values) => Add(key, GgufValueType.Array, GgufValueType.Float32, values);

    /// <summary>Sets an array of int32.</summary>
    public void Set(string key, int[] values) => Add(key, GgufValueType.Array, GgufValueType.Int32, values);

    /// <summary>
    /// Sets a value of any GGUF type: <paramref name="value"/> is a scalar of <paramref name="type"/> (any CLR integer
    /// that fits, for integer types), or for <see cref="GgufValueType.Array"/> an array whose items are scalars of
    /// <paramref name="elementType"/> (as <see cref="GgufFile.Metadata"/> returns them). Nested arrays are refused.
    /// </summary>
    public void SetValue(string key, GgufValueType type, object value, GgufValueType elementType = default)
    {
        ArgumentNullException.ThrowIfNull(value);
        if (type == GgufValueType.Array)
        {
            if (value is not Array items || elementType is GgufValueType.Array || !Enum.IsDefined(elementType))
            {
                throw new ArgumentException($"metadata '{key}': an array value needs a scalar element type and a CLR array, got {elementType} and {value.GetType().Name}");
            }

            foreach (var item in items)
            {
                CheckScalar(key, elementType, item);
            }
        }
        else
        {
            CheckScalar(key, type, value);
        }

        Add(key, type, elementType, value);
    }

    /// <summary>Copies metadata <paramref name="key"/> of <paramref name="source"/> unchanged (same GGUF type and value).</summary>
    public void Copy(GgufFile source, string key)
    {
        var value = source.Get(key) ?? throw new ArgumentException($"{source.Path}: no metadata '{key}' to copy");
        var type = source.MetadataTypes[key];
        SetValue(key, type, value, type == GgufValueType.Array ? source.ArrayElementTypes[key] : default);
    }

    /// <summary>
    /// Adds a tensor of <paramref name="shape"/> (ne[0] innermost, as GGUF stores it) whose rows come from
    /// <paramref name="source"/> and are written as <paramref name="type"/>.
    /// </summary>
    public void AddTensor(string name, GgmlType type, long[] shape, GgufRowSource source)
    {
        ArgumentNullException.ThrowIfNull(source);
        if (Encoding.UTF8.GetByteCount(name) is 0 or >= 64)
        {
            throw new ArgumentException($"tensor name '{name}' must be 1..63 bytes (llama.cpp's GGML_MAX_NAME)");
        }

        if (!RowQuantizer.Supports(type))
        {
            throw new NotSupportedException($"tensor '{name}': writing type {type} is not supported (F32, F16, Q8_0, Q4_0)");
        }

        if (shape.Length is 0 or > 4 || shape.Any(d => d <= 0))
        {
            throw new ArgumentException($"tensor '{name}': shape [{string.Join(", ", shape)}] must have 1..4 positive dimensions");
        }

        var geo = GgmlTypeInfo.Geometry(type)!.Value;
        if (shape[0] % geo.BlockElements != 0)
        {
            throw new ArgumentException($"tensor '{name}': row length {shape[0]} is not a multiple of the {type} block size {geo.BlockElements}");
        }

        if (shape[0] > ChunkElements)
        {
            throw new ArgumentException($"tensor '{name}': rows of {shape[0]} elements are longer than the writer's chunk of {ChunkElements}");
        }

        if (!_names.Add(name))
        {
            throw new ArgumentException($"tensor '{name}' added twice");
        }

        long rows = shape.Skip(1).Aggregate(1L, (a, b) => checked(a * b));
        _tensors.Add(new PendingTensor(name, type, (long[])shape.Clone(), rows, GgmlTypeInfo.ByteSize(type, checked(rows * shape[0])), source));
    }

    /// <summary>
    /// Writes the file to <paramref name="path"/> (through a temporary file renamed at the end) using
    /// <paramref name="threads"/> threads (0 = all cores); returns the file size. <paramref name="progress"/>
    /// receives the fraction of tensor bytes written.
    /// </summary>
    public long Write(string path, int threads = 0, IProgress<double>? progress = null)
    {
        var full = Path.GetFullPath(path);
        var dir = Path.GetDirectoryName(full)!;
        if (!Directory.Exists(dir))
        {
            throw new DirectoryNotFoundException($"{path}: output folder {dir} does not exist");
        }

        var tmp = TemporaryPath(full);
        try
        {
            long size;
            using (var fs = new FileStream(tmp, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20))
            {
                WriteHeader(fs);
                WriteData(fs, threads > 0 ? threads : Environment.ProcessorCount, progress);
                size = fs.Length;
            }

            File.Move(tmp, full, overwrite: true);
            return size;
        }
        catch
        {
            File.Delete(tmp);
            throw;
        }
    }

    /// <summary>The temporary file <see cref="Write"/> writes before renaming it to <paramref name="path"/>: <c>path.partial</c>.</summary>
    public static string TemporaryPath(string path) => Path.GetFullPath(path) + ".partial";

    private static long Pad(long x, long n) => (x + n - 1) / n * n;

    private static void WriteString(Stream s, string value)
    {
        var bytes = Encoding.UTF8.GetBytes(value);
        WriteU64(s, (ulong)bytes.Length);
        s.Write(bytes);
    }

    private static void WriteU32(Stream s, uint v)
    {
        Span<byte> b = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(b, v);
        s.Write(b);
    }

    private static void WriteU64(Stream s, ulong v)
    {
        Span<byte> b = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(b, v);
        s.Write(b);
    }

    private static void CheckScalar(string key, GgufValueType type, object? value)
    {
        bool ok = type switch
        {
            GgufValueType.String => value is string,
            GgufValueType.Bool => value is bool,
            GgufValueType.Float32 => value is float,
            GgufValueType.Float64 => value is double or float,
            GgufValueType.UInt8 or GgufValueType.Int8 or GgufValueType.UInt16 or GgufValueType.Int16 or GgufValueType.UInt32
                or GgufValueType.Int32 or GgufValueType.UInt64 or GgufValueType.Int64 => value is byte or sbyte or ushort or short or uint or int or ulong or long,
            _ => false,
        };
        if (!ok)
        {
            throw new ArgumentException($"metadata '{key}': a {value?.GetType().Name ?? "null"} cannot be written as GGUF {type}");
        }
    }

    /// <summary>Bits of an integer of any CLR width, two's complement, truncated to the GGUF width by the caller.</summary>
    private static ulong IntegerBits(object value) => value switch
    {
        byte b => b,
        sbyte sb => unchecked((ulong)sb),
        ushort us => us,
        short sh => unchecked((ulong)sh),
        uint ui => ui,
        int i => unchecked((ulong)i),
        ulong ul => ul,
        long l => unchecked((ulong)l),
        _ => throw new NotSupportedException($"{value.GetType().Name} is not an integer"),
    };

    private static void WriteScalar(Stream s, GgufValueType type, object value)
    {
        Span<byte> b = stackalloc byte[8];
        switch (type)
        {
            case GgufValueType.String:
                WriteString(s, (string)value);
                break;
            case GgufValueType.UInt8 or GgufValueType.Int8:
                s.WriteByte(unchecked((byte)IntegerBits(value)));
                break;
            case GgufValueType.UInt16 or GgufValueType.Int16:
                BinaryPrimitives.WriteUInt16LittleEndian(b, unchecked((ushort)IntegerBits(value)));
                s.Write(b[..2]);
                break;
            case GgufValueType.UInt32 or GgufValueType.Int32:
                WriteU32(s, unchecked((uint)IntegerBits(value)));
                break;
            case GgufValueType.UInt64 or GgufValueType.Int64:
                WriteU64(s, IntegerBits(value));
                break;
            case GgufValueType.Float32:
                WriteU32(s, BitConverter.SingleToUInt32Bits((float)value));
                break;
            case GgufValueType.Float64:
                WriteU64(s, BitConverter.DoubleToUInt64Bits(Convert.ToDouble(value, System.Globalization.CultureInfo.InvariantCulture)));
                break;
            case GgufValueType.Bool:
                s.WriteByte((bool)value ? (byte)1 : (byte)0);
                break;
            default:
                throw new NotSupportedException($"metadata type {type}");
        }
    }

    private void Add(string key, GgufValueType type, GgufValueType elementType, object value)
    {
        ArgumentException.ThrowIfNullOrEmpty(key);
        ArgumentNullException.ThrowIfNull(value);
        if (!_keys.Add(key))
        {
            throw new ArgumentException($"metadata key '{key}' set twice");
        }

        _metadata.Add((key, type, elementType, value));
    }

    private void WriteHeader(Stream fs)
    {
        var s = new BufferedStream(fs, 1 << 20);
        WriteU32(s, GgufFile.Magic);
        WriteU32(s, 3);
        WriteU64(s, (ulong)_tensors.Count);
        WriteU64(s, (ulong)_metadata.Count);
        foreach (var (key, type, elementType, value) in _metadata)
        {
            WriteString(s, key);
            WriteU32(s, (uint)type);
            if (type != GgufValueType.Array)
            {
                WriteScalar(s, type, value);
                continue;
            }

            WriteU32(s, (uint)elementType);
            var array = (Array)value;
            WriteU64(s, (ulong)array.Length);
            foreach (var item in array)
            {
                WriteScalar(s, elementType, item!);
            }
        }

        long offset = 0;
        foreach (var t in _tensors)
        {
            WriteString(s, t.Name);
            WriteU32(s, (uint)t.Shape.Length);
            foreach (var d in t.Shape)
            {
                WriteU64(s, (ulong)d);
            }

            WriteU32(s, (uint)t.Type);
            WriteU64(s, (ulong)offset);
            offset += Pad(t.ByteSize, Alignment);
        }

        s.Flush();
        WriteZeros(fs, Pad(fs.Position, Alignment) - fs.Position);
    }

    private void WriteData(FileStream fs, int threads, IProgress<double>? progress)
    {
        long total = _tensors.Sum(t => t.ByteSize);
        long done = 0;
        var streamer = new RowStreamer(threads);
        foreach (var t in _tensors)
        {
            long start = fs.Position;
            int cols = (int)t.Shape[0];
            streamer.Write(fs, t.Rows, cols, GgmlTypeInfo.ByteSize(t.Type, cols), t.Source, (values, bytes) => RowQuantizer.Quantize(t.Type, values, bytes), bytes =>
            {
                done += bytes;
                progress?.Report(total == 0 ? 1 : (double)done / total);
            });

            if (fs.Position - start != t.ByteSize)
            {
                throw new InvalidOperationException($"tensor '{t.Name}': wrote {fs.Position - start} bytes, expected {t.ByteSize}");
            }

            WriteZeros(fs, Pad(fs.Position, Alignment) - fs.Position);
        }
    }

    private static void WriteZeros(Stream s, long n)
    {
        Span<byte> zeros = stackalloc byte[64];
        while (n > 0)
        {
            int k = (int)Math.Min(n, zeros.Length);
            s.Write(zeros[..k]);
            n -= k;
        }
    }

    private sealed record PendingTensor(string Name, GgmlType Type, long[] Shape, long Rows, long ByteSize, GgufRowSource Source);
}
