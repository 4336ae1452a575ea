using KvAdaQuant.Numerics;

namespace KvAdaQuant.Formats.Gguf;

/// <summary>One tensor of a GGUF file: name, shape (ne[0] innermost), type and absolute offset of its data in the file.</summary>
public sealed record GgufTensorInfo(string Name, long[] Shape, GgmlType Type, long Offset, long ByteSize)
{
    /// <summary>Number of elements.</summary>
    public long Elements => Shape.Aggregate(1L, (a, b) => a * b);
}
