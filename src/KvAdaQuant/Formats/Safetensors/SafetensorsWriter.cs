using KvAdaQuant.Numerics;
using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using KvAdaQuant.Formats.Gguf;

namespace KvAdaQuant.Formats.Safetensors;

/// <summary>
/// Writes <c>.safetensors</c> files: tensors are laid out in the order added, the JSON header padded to 8 bytes. A tensor
/// is given as bytes, as floats, or as a row source that is streamed: rows are produced and converted to F32, F16 or BF16
/// in parallel chunks of about a million elements and written in order, so a file of any size needs only a few
/// megabytes of memory per thread.
/// </summary>
public sealed class SafetensorsWriter
{
    private const int ChunkElements = RowStreamer.ChunkElements;
    private readonly List<Pending> _tensors = [];
    private readonly HashSet<string> _names = new(StringComparer.Ordinal);

    /// <summary>Tensors added so far.</summary>
    public int TensorCount => _tensors.Count;

    /// <summary>Names of the tensors, in the order written.</summary>
    public IEnumerable<string> TensorNames => _tensors.Select(t => t.Name);

    /// <summary>Bytes of tensor data (the file less its header).</summary>
    public long DataBytes => _tensors.Sum(t => t.ByteCount);

    /// <summary>
    /// The tensors split into shards of at most <paramref name="maxShardBytes"/> bytes of tensor data, each a writer of its
    /// own, as transformers' <c>save_pretrained</c> splits a state dict (huggingface_hub's
    /// <c>split_state_dict_into_shards_factory</c>): whole tensors in order, a new shard begun when the next tensor would take
    /// the current one over the limit, and a tensor larger than the limit put alone in a shard of its own at once (the shard
    /// being filled carries on after it). One writer (this one's tensors) when everything fits.
    /// </summary>
    public IReadOnlyList<SafetensorsWriter> Shard(long maxShardBytes)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(maxShardBytes);
        var shards = new List<List<Pending>>();
        var current = new List<Pending>();
        long currentBytes = 0;
        foreach (var t in _tensors)
        {
            if (t.ByteCount > maxShardBytes)
            {
                shards.Add([t]);
                continue;
            }

            if (currentBytes + t.ByteCount > maxShardBytes)
            {
                shards.Add(current);
                current = [];
                currentBytes = 0;
            }

            current.Add(t);
            currentBytes += t.ByteCount;
        }

        if (current.Count > 0 || shards.Count == 0)
        {
            shards.Add(current);
        }

        return shards.Select(s =>
        {
            var w = new SafetensorsWriter();
            foreach (var t in s)
            {
                w._tensors.Add(t);
                w._names.Add(t.Name);
            }

            return w;
        }).ToList();
    }

    /// <summary>Adds a tensor whose raw little-endian bytes are <paramref name="data"/>.</summary>
    public SafetensorsWriter Add(string name, string dtype, long[] shape, byte[] data)
    {
        long elements = Check(name, dtype, shape);
        if (elements * SafetensorsFile.ElementSize(dtype) != data.Length)
        {
            throw new ArgumentException($"tensor '{name}': {dtype} [{string.Join(", ", shape)}] needs {elements * SafetensorsFile.ElementSize(dtype)} bytes, got {data.Length}", nameof(data));
        }

        _tensors.Add(new Pending(name, dtype, (long[])shape.Clone(), data.Length, data, null));
        return this;
    }

    /// <summary>Adds float data converted to <paramref name="dtype"/> (F32, F16 or BF16, BF16 rounded to nearest even).</summary>
    public SafetensorsWriter Add(string name, string dtype, long[] shape, ReadOnlySpan<float> values)
    {
        CheckFloatType(dtype);
        var data = new byte[values.Length * SafetensorsFile.ElementSize(dtype)];
        Convert(dtype, values, data);
        return Add(name, dtype, shape, data);
    }

    /// <summary>
    /// Adds a tensor of <paramref name="shape"/> (outermost first, as safetensors stores it) whose rows of
    /// <c>shape[^1]</c> elements come from <paramref name="rows"/> when the file is written, converted to
    /// <paramref name="dtype"/> (F32, F16 or BF16).
    /// </summary>
    public SafetensorsWriter Add(string name, string dtype, long[] shape, GgufRowSource rows)
    {
        ArgumentNullException.ThrowIfNull(rows);
        CheckFloatType(dtype);
        long elements = Check(name, dtype, shape);
        if (shape.Length == 0 || shape[^1] is <= 0 or > ChunkElements)
        {
            throw new ArgumentException($"tensor '{name}': rows of shape [{string.Join(", ", shape)}] must hold 1..{ChunkElements} elements");
        }

        _tensors.Add(new Pending(name, dtype, (long[])shape.Clone(), elements * SafetensorsFile.ElementSize(dtype), null, rows));
        return this;
    }

    /// <summary>
    /// Writes the file to <paramref name="path"/> with <paramref name="threads"/> threads (0 = all cores); returns its size.
    /// <paramref name="progress"/> receives the fraction of tensor bytes written.
    /// </summary>
    public long Write(string path, int threads = 1, IProgress<double>? progress = null)
    {
        var header = new Dictionary<string, object>(StringComparer.Ordinal)
        {
            ["__metadata__"] = new Dictionary<string, string> { ["format"] = "pt" },
        };
        long offset = 0;
        foreach (var t in _tensors)
        {
            header[t.Name] = new Dictionary<string, object> { ["dtype"] = t.DType, ["shape"] = t.Shape, ["data_offsets"] = new[] { offset, offset + t.ByteCount } };
            offset += t.ByteCount;
        }

        var json = Encoding.UTF8.GetBytes(JsonSerializer.Serialize(header));
        int padded = (json.Length + 7) / 8 * 8;
        using var fs = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20);
        Span<byte> len = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(len, (ulong)padded);
        fs.Write(len);
        fs.Write(json);
        for (int i = json.Length; i < padded; i++)
        {
            fs.WriteByte((byte)' ');
        }

        long done = 0;
        void Report(long bytes)
        {
            done += bytes;
            progress?.Report(offset == 0 ? 1 : (double)done / offset);
        }

        var streamer = new RowStreamer(threads > 0 ? threads : Environment.ProcessorCount);
        foreach (var t in _tensors)
        {
            long start = fs.Position;
            if (t.Data is { } data)
            {
                fs.Write(data);
                Report(data.Length);
            }
            else
            {
                int cols = (int)t.Shape[^1];
                long rows = t.Shape[..^1].Aggregate(1L, (a, b) => a * b);
                string dtype = t.DType;
                streamer.Write(fs, rows, cols, (long)cols * SafetensorsFile.ElementSize(dtype), t.Rows!, (values, bytes) => Convert(dtype, values, bytes), Report);
            }

            if (fs.Position - start != t.ByteCount)
            {
                throw new InvalidOperationException($"tensor '{t.Name}': wrote {fs.Position - start} bytes, expected {t.ByteCount}");
            }
        }

        return fs.Length;
    }

    /// <summary>Converts floats to little-endian <paramref name="dtype"/> bytes (BF16: round to nearest even, NaN kept NaN).</summary>
    public static void Convert(string dtype, ReadOnlySpan<float> values, Span<byte> destination)
    {
        switch (dtype)
        {
            case "F32":
                if (BitConverter.IsLittleEndian)
                {
                    MemoryMarshal.AsBytes(values).CopyTo(destination);
                    break;
                }

                for (int i = 0; i < values.Length; i++)
                {
                    BinaryPrimitives.WriteSingleLittleEndian(destination[(i * 4)..], values[i]);
                }

                break;
            case "F16":
                for (int i = 0; i < values.Length; i++)
                {
                    BinaryPrimitives.WriteHalfLittleEndian(destination[(i * 2)..], (Half)values[i]);
                }

                break;
            case "BF16":
                for (int i = 0; i < values.Length; i++)
                {
                    BinaryPrimitives.WriteUInt16LittleEndian(destination[(i * 2)..], RowQuantizer.ToBFloat16(values[i]));
                }

                break;
            default:
                throw new ArgumentException($"float data cannot be written as '{dtype}' (F32, F16, BF16)", nameof(dtype));
        }
    }

    private static void CheckFloatType(string dtype)
    {
        if (dtype is not ("F32" or "F16" or "BF16"))
        {
            throw new ArgumentException($"float data cannot be written as '{dtype}' (F32, F16, BF16)", nameof(dtype));
        }
    }

    private long Check(string name, string dtype, long[] shape)
    {
        if (SafetensorsFile.ElementSize(dtype) == 0)
        {
            throw new ArgumentException($"unknown safetensors dtype '{dtype}'", nameof(dtype));
        }

        if (shape.Any(d => d < 0))
        {
            throw new ArgumentException($"tensor '{name}': shape [{string.Join(", ", shape)}] has a negative dimension");
        }

        if (!_names.Add(name))
        {
            throw new ArgumentException($"tensor '{name}' added twice");
        }

        return shape.Aggregate(1L, (a, b) => checked(a * b));
    }

    private sealed record Pending(string Name, string DType, long[] Shape, long ByteCount, byte[]? Data, GgufRowSource? Rows);
}
