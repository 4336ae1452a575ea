namespace KvAdaQuant.Numerics;

/// <summary>Block geometry of each ggml tensor type: elements per block and bytes per block.</summary>
public static class GgmlTypeInfo
{
    /// <summary>Returns (elements per block, bytes per block), or null for a type this library cannot hold.</summary>
    public static (int BlockElements, int BlockBytes)? Geometry(GgmlType type) => type switch
    {
        GgmlType.F32 => (1, 4),
        GgmlType.F16 => (1, 2),
        GgmlType.BF16 => (1, 2),
        GgmlType.Q4_0 => (32, 18),
        GgmlType.Q4_1 => (32, 20),
        GgmlType.Q5_0 => (32, 22),
        GgmlType.Q5_1 => (32, 24),
        GgmlType.Q8_0 => (32, 34),
        GgmlType.Q2_K => (256, 84),
        GgmlType.Q3_K => (256, 110),
        GgmlType.Q4_K => (256, 144),
        GgmlType.Q5_K => (256, 176),
        GgmlType.Q6_K => (256, 210),
        GgmlType.Q8_K => (256, 292),
        GgmlType.I8 => (1, 1),
        GgmlType.I16 => (1, 2),
        GgmlType.I32 => (1, 4),
        GgmlType.I64 => (1, 8),
        GgmlType.F64 => (1, 8),
        _ => null,
    };

    /// <summary>True when <see cref="RowDequantizer"/> can turn rows of this type into floats.</summary>
    public static bool IsSupportedWeightType(GgmlType type) => RowDequantizer.Supports(type);

    /// <summary>Bytes taken by <paramref name="elements"/> elements, which must be a whole number of blocks.</summary>
    public static long ByteSize(GgmlType type, long elements)
    {
        var g = Geometry(type) ?? throw new ArgumentException($"unknown tensor type {(int)type}");
        if (elements % g.BlockElements != 0)
        {
            throw new ArgumentException($"{elements} elements is not a whole number of {type} blocks of {g.BlockElements}");
        }

        return elements / g.BlockElements * g.BlockBytes;
    }
}
