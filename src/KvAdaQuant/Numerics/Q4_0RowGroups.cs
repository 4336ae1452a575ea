namespace KvAdaQuant.Numerics;

/// <summary>
/// The interleaved copy of a Q4_0 matrix that the 8-row kernel (<see cref="QuantizedDot.DotQ4_0RowGroup"/>) streams, in
/// the spirit of llama.cpp's block_q4_0x8 repacking: rows are taken in groups of 8, and for each group and each 32-column
/// block one unit of <see cref="UnitBytes"/> bytes holds the 8 rows' FP16 scales (row r at bytes 2r), then their quant
/// bytes in four chunks of 32: chunk c holds bytes 4c..4c+3 of row 0, of row 1, ... of row 7 (<see cref="QuantOffset"/>).
/// One 256-bit load of a chunk puts each row's four bytes (elements 4c..4c+3 in the low nibbles, 16+4c.. in the high)
/// in its own 32-bit lane, where vpdpbusd sums them against broadcast activations: no horizontal reduction. Group g's
/// units are consecutive and the groups follow one another, so a row group is one sequential stream of 8 x (row bytes),
/// the size of the 8 rows. The bytes are the original ones, moved: the arithmetic on them is unchanged. IQ4_NL blocks have
/// the same shape (FP16 d, 16 bytes of codes) and take the same layout (<see cref="LowBitRowGroupDot.DotIq4_NL"/>).
/// </summary>
public static unsafe class Q4_0RowGroups
{
    /// <summary>Rows per group.</summary>
    public const int GroupRows = 8;

    /// <summary>Bytes of one unit: 8 FP16 scales and 8 x 16 quant bytes (8 Q4_0 blocks of 18 bytes).</summary>
    public const int UnitBytes = 144;

    /// <summary>
    /// Whether products of a <paramref name="type"/> matrix of <paramref name="rows"/> rows read a copy in this layout: Q4_0,
    /// and IQ4_NL (blocks of the same shape: FP16 d, 16 code bytes) where AVX-VNNI runs its kernel
    /// (<see cref="LowBitRowGroupDot.DotIq4_NL"/>), rows a multiple of 8.
    /// </summary>
    public static bool UsedFor(GgmlType type, int rows) =>
        rows % GroupRows == 0 && (type == GgmlType.Q4_0 || (type == GgmlType.IQ4_NL && LowBitRowGroupDot.Iq4_XSVectorPathSupported));

    /// <summary>Offset within a unit of quant byte <paramref name="index"/> (0..15) of row <paramref name="row"/> (0..7).</summary>
    public static int QuantOffset(int row, int index) => 16 + ((index / 4) * 32) + (row * 4) + (index % 4);

    /// <summary>
    /// Writes row groups [<paramref name="groupStart"/>, <paramref name="groupEnd"/>) of the Q4_0 matrix <paramref name="w"/>
    /// (rows a multiple of 8) into <paramref name="destination"/>, which holds the whole matrix's copy (w.ByteCount bytes).
    /// </summary>
    public static void Repack(WeightMatrix w, byte* destination, int groupStart, int groupEnd)
    {
        ArgumentNullException.ThrowIfNull(w);
        if (w.Type is not (GgmlType.Q4_0 or GgmlType.IQ4_NL) || w.Rows % GroupRows != 0)
        {
            throw new ArgumentException($"{w.Name}: a {w.Type} matrix of {w.Rows} rows has no Q4_0-layout row groups (Q4_0 or IQ4_NL, rows a multiple of 8)", nameof(w));
        }

        if (groupStart < 0 || groupEnd > w.Rows / GroupRows || groupStart > groupEnd)
        {
            throw new ArgumentOutOfRangeException(nameof(groupEnd), $"{w.Name}: groups [{groupStart}, {groupEnd}) of {w.Rows / GroupRows}");
        }

        int blocks = w.Cols / 32;
        for (int g = groupStart; g < groupEnd; g++)
        {
            byte* unit = destination + ((long)g * blocks * UnitBytes);
            byte* row0 = w.RowPointer(g * GroupRows);
            for (int b = 0; b < blocks; b++, unit += UnitBytes)
            {
                for (int r = 0; r < GroupRows; r++)
                {
                    byte* block = row0 + (r * w.RowByteCount) + (b * 18L);
                    *(ushort*)(unit + (2 * r)) = *(ushort*)block;
                    uint* quants = (uint*)(unit + 16 + (4 * r));
                    uint* source = (uint*)(block + 2);
                    quants[0] = source[0];
                    quants[8] = source[1];
                    quants[16] = source[2];
                    quants[24] = source[3];
                }
            }
        }
    }
}
