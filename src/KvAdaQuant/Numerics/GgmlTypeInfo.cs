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
        GgmlType.IQ4_NL => (32, 18),
        GgmlType.IQ4_XS => (256, 136),
        GgmlType.I8 => (1, 1),
        GgmlType.I16 => (1, 2),
        GgmlType.I32 => (1, 4),
        GgmlType.I64 => (1, 8),
        GgmlType.F64 => (1, 8),
        _ => null,
    };

    /// <summary>
    /// ggml's name of a tensor type id this library does not hold (the IQ1/IQ2/IQ3 lattice types, ternary and FP4 types), for
    /// error messages; null for ids ggml does not define.
    /// </summary>
    public static string? UnsupportedName(uint id) => id switch
    {
        9 => "Q8_1",
        16 => "IQ2_XXS",
        17 => "IQ2_XS",
        18 => "IQ3_XXS",
        19 => "IQ1_S",
        21 => "IQ3_S",
        22 => "IQ2_S",
        29 => "IQ1_M",
        34 => "TQ1_0",
        35 => "TQ2_0",
        39 => "MXFP4",
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
