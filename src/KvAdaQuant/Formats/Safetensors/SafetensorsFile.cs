using System.Buffers.Binary;
using System.Text.Json;

namespace KvAdaQuant.Formats.Safetensors;

/// <summary>
/// A <c>.safetensors</c> file, memory-mapped: an 8-byte little-endian header length, a JSON header naming each
/// tensor's dtype, shape and <c>data_offsets</c> within the data section that follows. Every length, offset and
/// size is checked against the file before use, so a truncated or forged file fails with a clear message.
/// </summary>
public sealed unsafe class SafetensorsFile : IDisposable
{
    /// <summary>Largest header accepted (the format's own limit is 100 MB).</summary>
    public const long MaxHeaderBytes = 100L << 20;

    private static readonly Dictionary<string, int> ElementSizes = new(StringComparer.Ordinal)
    {
        ["BOOL"] = 1,
        ["U8"] = 1,
        ["I8"] = 1,
        ["F8_E4M3"] = 1,
        ["F8_E5M2"] = 1,
        ["I16"] = 2,
        ["U16"] = 2,
        ["F16"] = 2,
        ["BF16"] = 2,
        ["I32"] = 4,
        ["U32"] = 4,
        ["F32"] = 4,
        ["I64"] = 8,
        ["U64"] = 8,
        ["F64"] = 8,
    };

    private readonly MappedFile _file;
    private readonly Dictionary<string, SafetensorsTensorInfo> _tensors = new(StringComparer.Ordinal);

    private SafetensorsFile(MappedFile file)
    {
        _file = file;
    }

    /// <summary>File path.</summary>
    public string Path => _file.Path;

    /// <summary>Tensors by name.</summary>
    public IReadOnlyDictionary<string, SafetensorsTensorInfo> Tensors => _tensors;

    /// <summary>Opens and checks <paramref name="path"/>.</summary>
    public static SafetensorsFile Open(string path)
    {
        var mapped = new MappedFile(path);
        var f = new SafetensorsFile(mapped);
        try
        {
            f.Parse();
            return f;
        }
        catch
        {
            mapped.Dispose();
            throw;
        }
    }

    /// <summary>Bytes per element of a safetensors dtype, or 0 when unknown.</summary>
    public static int ElementSize(string dtype) => ElementSizes.GetValueOrDefault(dtype);

    /// <summary>Pointer to a tensor's data.</summary>
    public byte* Data(SafetensorsTensorInfo t) => _file.Pointer + t.Offset;

    /// <inheritdoc/>
    public void Dispose() => _file.Dispose();

    private void Parse()
    {
        if (_file.Length < 8)
        {
            throw new ModelFormatException(Path, $"file is {_file.Length} bytes long: too short for the 8-byte safetensors header length");
        }

        ulong headerLength = BinaryPrimitives.ReadUInt64LittleEndian(_file.Span(0, 8));
        if (headerLength > (ulong)(_file.Length - 8))
        {
            throw new ModelFormatException(Path, $"header length {headerLength} is larger than the rest of the {_file.Length}-byte file: truncated or not a safetensors file?");
        }

        if (headerLength > MaxHeaderBytes)
        {
            throw new ModelFormatException(Path, $"header length {headerLength} exceeds the {MaxHeaderBytes}-byte limit");
        }

        long dataStart = 8 + (long)headerLength;
        long dataLength = _file.Length - dataStart;
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(_file.Span(8, (int)headerLength).ToArray());
        }
        catch (JsonException e)
        {
            throw new ModelFormatException(Path, $"header is not valid JSON: {e.Message}");
        }

        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
            {
                throw new ModelFormatException(Path, $"header should be a JSON object, found {doc.RootElement.ValueKind}");
            }

            try
            {
                foreach (var entry in doc.RootElement.EnumerateObject())
                {
                    if (entry.Name == "__metadata__")
                    {
                        continue;
                    }

                    if (!_tensors.TryAdd(entry.Name, ParseTensor(entry.Name, entry.Value, dataStart, dataLength)))
                    {
                        throw new ModelFormatException(Path, $"tensor '{entry.Name}' appears twice in the header");
                    }
                }
            }
            catch (InvalidOperationException e)
            {
                // A string that is not valid UTF-8 (or holds an escaped lone surrogate) cannot be read as a name or dtype.
                throw new ModelFormatException(Path, $"header (bytes 8..{dataStart}) holds text that cannot be read: {e.Message}");
            }
        }
    }

    private SafetensorsTensorInfo ParseTensor(string name, JsonElement e, long dataStart, long dataLength)
    {
        if (e.ValueKind != JsonValueKind.Object
            || !e.TryGetProperty("dtype", out var dt) || dt.ValueKind != JsonValueKind.String
            || !e.TryGetProperty("shape", out var sh) || sh.ValueKind != JsonValueKind.Array
            || !e.TryGetProperty("data_offsets", out var off) || off.ValueKind != JsonValueKind.Array || off.GetArrayLength() != 2)
        {
            throw new ModelFormatException(Path, $"tensor '{name}': header entry needs \"dtype\", \"shape\" and two \"data_offsets\"");
        }

        string dtype = dt.GetString()!;
        int elementSize = ElementSize(dtype);
        if (elementSize == 0)
        {
            throw new ModelFormatException(Path, $"tensor '{name}': unknown dtype '{dtype}'");
        }

        var shape = new long[sh.GetArrayLength()];
        long elements = 1;
        int d = 0;
        foreach (var x in sh.EnumerateArray())
        {
            if (x.ValueKind != JsonValueKind.Number || !x.TryGetInt64(out long v) || v < 0 || v > dataLength)
            {
                throw new ModelFormatException(Path, $"tensor '{name}': dimension {d} = {x} is impossible for a data section of {dataLength} bytes");
            }

            shape[d++] = v;
            elements = v == 0 ? 0 : (elements > dataLength / v ? dataLength + 1 : elements * v);
        }

        if (off[0].ValueKind != JsonValueKind.Number || off[1].ValueKind != JsonValueKind.Number
            || !off[0].TryGetInt64(out long begin) || !off[1].TryGetInt64(out long end) || begin < 0 || end < begin)
        {
            throw new ModelFormatException(Path, $"tensor '{name}': data_offsets [{off[0]}, {off[1]}] are not an increasing pair of byte offsets");
        }

        if (end > dataLength)
        {
            throw new ModelFormatException(Path, $"tensor '{name}': data ends at byte {end} of the data section but the file holds only {dataLength} data bytes: truncated?");
        }

        if (elements > dataLength || elements * elementSize != end - begin)
        {
            throw new ModelFormatException(Path, $"tensor '{name}': {dtype} [{string.Join(", ", shape)}] needs {(elements > dataLength ? "more than the file's" : (elements * elementSize).ToString(System.Globalization.CultureInfo.InvariantCulture))} bytes but data_offsets give {end - begin}");
        }

        return new SafetensorsTensorInfo(name, dtype, shape, dataStart + begin, end - begin);
    }
}
