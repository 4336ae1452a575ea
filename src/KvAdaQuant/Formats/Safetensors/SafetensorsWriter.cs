using System.Buffers.Binary;
using System.Text;
using System.Text.Json;

namespace KvAdaQuant.Formats.Safetensors;

/// <summary>Writes <c>.safetensors</c> files: tensors are laid out in the order added, the JSON header padded to 8 bytes.</summary>
public sealed class SafetensorsWriter
{
    private readonly List<(string Name, string DType, long[] Shape, byte[] Data)> _tensors = [];

    /// <summary>Adds a tensor whose raw little-endian bytes are <paramref name="data"/>.</summary>
    public SafetensorsWriter Add(string name, string dtype, long[] shape, byte[] data)
    {
        int size = SafetensorsFile.ElementSize(dtype);
        if (size == 0)
        {
            throw new ArgumentException($"unknown safetensors dtype '{dtype}'", nameof(dtype));
        }

        long elements = shape.Aggregate(1L, (a, b) => a * b);
        if (elements * size != data.Length)
        {
            throw new ArgumentException($"tensor '{name}': {dtype} [{string.Join(", ", shape)}] needs {elements * size} bytes, got {data.Length}", nameof(data));
        }

        _tensors.Add((name, dtype, shape, data));
        return this;
    }

    /// <summary>Adds float data converted to <paramref name="dtype"/> (F32, F16 or BF16, BF16 rounded to nearest even).</summary>
    public SafetensorsWriter Add(string name, string dtype, long[] shape, ReadOnlySpan<float> values)
    {
        byte[] data;
        switch (dtype)
        {
            case "F32":
                data = new byte[values.Length * 4];
                for (int i = 0; i < values.Length; i++)
                {
                    BinaryPrimitives.WriteSingleLittleEndian(data.AsSpan(i * 4), values[i]);
                }

                break;
            case "F16":
                data = new byte[values.Length * 2];
                for (int i = 0; i < values.Length; i++)
                {
                    BinaryPrimitives.WriteHalfLittleEndian(data.AsSpan(i * 2), (Half)values[i]);
                }

                break;
            case "BF16":
                data = new byte[values.Length * 2];
                for (int i = 0; i < values.Length; i++)
                {
                    uint bits = BitConverter.SingleToUInt32Bits(values[i]);
                    uint rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16;
                    BinaryPrimitives.WriteUInt16LittleEndian(data.AsSpan(i * 2), (ushort)rounded);
                }

                break;
            default:
                throw new ArgumentException($"float data cannot be written as '{dtype}' (F32, F16, BF16)", nameof(dtype));
        }

        return Add(name, dtype, shape, data);
    }

    /// <summary>Writes the file to <paramref name="path"/>.</summary>
    public void Write(string path)
    {
        var header = new Dictionary<string, object>(StringComparer.Ordinal)
        {
            ["__metadata__"] = new Dictionary<string, string> { ["format"] = "pt" },
        };
        long offset = 0;
        foreach (var (name, dtype, shape, data) in _tensors)
        {
            header[name] = new Dictionary<string, object> { ["dtype"] = dtype, ["shape"] = shape, ["data_offsets"] = new[] { offset, offset + data.Length } };
            offset += data.Length;
        }

        var json = Encoding.UTF8.GetBytes(JsonSerializer.Serialize(header));
        int padded = (json.Length + 7) / 8 * 8;
        using var fs = File.Create(path);
        Span<byte> len = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(len, (ulong)padded);
        fs.Write(len);
        fs.Write(json);
        for (int i = json.Length; i < padded; i++)
        {
            fs.WriteByte((byte)' ');
        }

        foreach (var t in _tensors)
        {
            fs.Write(t.Data);
        }
    }
}
