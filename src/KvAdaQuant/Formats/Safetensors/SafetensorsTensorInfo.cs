namespace KvAdaQuant.Formats.Safetensors;

/// <summary>One tensor of a safetensors file: dtype name, shape, and absolute byte range in the file.</summary>
public sealed record SafetensorsTensorInfo(string Name, string DType, long[] Shape, long Offset, long ByteCount)
{
    /// <summary>Number of elements.</summary>
    public long ElementCount => Shape.Aggregate(1L, (a, b) => a * b);
}
