namespace KvAdaQuant.Numerics;

/// <summary>
/// A run of consecutive cached rows of one KV head for <see cref="FusedAttentionKernels"/>: <see cref="Count"/> rows
/// of <see cref="HeadDim"/> codes of <see cref="Bits"/> bits packed little-endian (code c at bits [c*b, c*b+b) of the
/// row), and per row its FP16 group parameters [group][scale, zero] (symmetric: [group][scale], dequantized as
/// scale * SymStep * c + scale * SymOffset). Bits 16 and 32 describe FP16 / FP32 rows without parameters.
/// With <see cref="Tiled"/> the codes lie in <see cref="KeyTiles"/> (the int8 score path's key layout) instead of
/// row after row; the parameters are per row either way.
/// </summary>
internal readonly unsafe struct PackedRows(byte* codes, ushort* parameters, int count, int headDim, int bits, int groupChannels, bool symmetric, float symStep, float symOffset, bool tiled = false)
{
    /// <summary>First byte of the first row.</summary>
    public byte* Codes { get; } = codes;

    /// <summary>FP16 bits of the first row's parameters (null for FP16/FP32 rows).</summary>
    public ushort* Params { get; } = parameters;

    /// <summary>Rows.</summary>
    public int Count { get; } = count;

    /// <summary>Elements per row.</summary>
    public int HeadDim { get; } = headDim;

    /// <summary>Bits per element: 2, 4, 8 (packed codes), 16 or 32.</summary>
    public int Bits { get; } = bits;

    /// <summary>Channels per parameter group.</summary>
    public int GroupChannels { get; } = groupChannels;

    /// <summary>Whether the parameters are scales only.</summary>
    public bool Symmetric { get; } = symmetric;

    /// <summary>Symmetric step multiplier (a = scale * SymStep).</summary>
    public float SymStep { get; } = symStep;

    /// <summary>Symmetric offset multiplier (b = scale * SymOffset).</summary>
    public float SymOffset { get; } = symOffset;

    /// <summary>Whether the codes are in <see cref="KeyTiles"/> (from a tile boundary) rather than row after row.</summary>
    public bool Tiled { get; } = tiled;

    /// <summary>Bytes per row.</summary>
    public int RowBytes => HeadDim * Bits / 8;
}
