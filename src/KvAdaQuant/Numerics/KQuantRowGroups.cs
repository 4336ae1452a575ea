namespace KvAdaQuant.Numerics;

/// <summary>
/// The interleaved copies of Q4_K, Q5_K and Q6_K matrices that the 8-row kernels (<see cref="KQuantRowGroupDot"/>) stream, in
/// the spirit of llama.cpp's block_q4_Kx8 repacking (the layout here is kvaq's own). Rows are taken in groups of 8; for
/// each group and each super-block of 256 columns one unit holds the 8 rows' super-blocks, rearranged so that one
/// 256-bit load gives each row 4 bytes in its own 32-bit lane (row r at bytes 4r..4r+3 of every 32-byte vector): the
/// integer dot products build up lane by lane against broadcast activations (vpdpbusd), and the 6-bit or int8 scales
/// of all 8 rows are unpacked by a few vector operations per super-block, not per row. A group's units follow one
/// another, and the groups follow one another, so a row group is one sequential stream of 8 x (row bytes). The bytes
/// are the original ones, moved.
/// <para>
/// Q4_K unit (<see cref="Q4_KUnitBytes"/> = 8 x 144): d of rows 0..7 (FP16, bytes 2r), dmin of rows 0..7 (16 + 2r), the
/// three 32-bit words of each row's 12 packed scale/min bytes (word k of row r at 32 + 32k + 4r), then 32 chunks of 32
/// bytes: chunk 4c + g (at <see cref="Q4_KQuantOffset"/>) holds bytes 32g + 4c .. 32g + 4c + 3 of each row's 128 nibble
/// bytes, whose low nibbles are values 64g + 4c.. (sub-block 2g) and high nibbles 64g + 32 + 4c.. (sub-block 2g + 1).
/// </para>
/// <para>
/// Q5_K unit (<see cref="Q5_KUnitBytes"/> = 8 x 176): as Q4_K's up to its scale words (bytes 0..127), then the 32 bytes of
/// high bits qh as 8 chunks (chunk c at 128 + 32c: bytes 4c..4c+3 of each row's qh, whose bit 2g is the fifth bit of
/// value 64g + 4c + k, bit 2g + 1 that of value 64g + 32 + 4c + k), then the nibbles as in Q4_K, from byte 384
/// (<see cref="Q5_KQuantOffset"/>).
/// </para>
/// <para>
/// Q6_K unit (<see cref="Q6_KUnitBytes"/> = 8 x 210): d of rows 0..7 (FP16), the 16 int8 scales of each row as four
/// vectors (scales 4v..4v+3 of row r at 16 + 32v + 4r), then for half h (values 128h..) and c = 0..7 three chunks
/// (<see cref="Q6_KQuantOffset"/>): bytes 4c.. of ql[64h..] (values 128h + 4c.. and, high nibbles, 128h + 64 + 4c..), of
/// ql[64h + 32..] (values 128h + 32 + 4c.., 128h + 96 + 4c..) and of qh[32h..] (their upper two bits).
/// </para>
/// <para>
/// Q2_K, Q3_K and IQ4_XS units (<see cref="Q2_KUnitBytes"/> = 8 x 84, <see cref="Q3_KUnitBytes"/> = 8 x 110,
/// <see cref="Iq4_XSUnitBytes"/> = 8 x 136, for <see cref="LowBitRowGroupDot"/>) are dword-interleaved: chunk i (32 bytes at
/// 32i) holds dword i of each row's super-block, row r at bytes 4r..4r+3, and a super-block's last two bytes when its size
/// is not a multiple of 4 (Q3_K's d) follow the chunks, row r at 2r (<see cref="InterleavedOffset"/>). Q2_K: chunks 0-3
/// the 16 scale/min bytes, 4-19 the 64 bytes of 2-bit codes, 20 d and dmin. Q3_K: chunks 0-7 hmask, 8-23 the 2-bit codes,
/// 24-26 the 12 packed scale bytes, then the 8 d. IQ4_XS: chunk 0 d and scales_h, 1 scales_l, 2-33 the 128 nibble bytes.
/// </para>
/// </summary>
public static unsafe class KQuantRowGroups
{
    /// <summary>Rows per group.</summary>
    public const int GroupRows = 8;

    /// <summary>Bytes of one Q4_K unit: 8 super-blocks of 144 bytes.</summary>
    public const int Q4_KUnitBytes = GroupRows * KQuantDot.Q4_KBlockBytes;

    /// <summary>Bytes of one Q5_K super-block: d, dmin (FP16), 12 bytes of packed 6-bit scales and mins, qh[32], 128 bytes of nibbles.</summary>
    public const int Q5_KBlockBytes = 176;

    /// <summary>Bytes of one Q5_K unit: 8 super-blocks of 176 bytes.</summary>
    public const int Q5_KUnitBytes = GroupRows * Q5_KBlockBytes;

    /// <summary>Bytes of one Q6_K unit: 8 super-blocks of 210 bytes.</summary>
    public const int Q6_KUnitBytes = GroupRows * KQuantDot.Q6_KBlockBytes;

    /// <summary>Bytes of one Q2_K unit: 8 super-blocks of 84 bytes.</summary>
    public const int Q2_KUnitBytes = GroupRows * LowBitDot.Q2_KBlockBytes;

    /// <summary>Bytes of one Q3_K unit: 8 super-blocks of 110 bytes.</summary>
    public const int Q3_KUnitBytes = GroupRows * LowBitDot.Q3_KBlockBytes;

    /// <summary>Bytes of one IQ4_XS unit: 8 super-blocks of 136 bytes.</summary>
    public const int Iq4_XSUnitBytes = GroupRows * LowBitDot.Iq4_XSBlockBytes;

    /// <summary>
    /// Whether the row-group layout exists for a matrix of <paramref name="type"/> with <paramref name="rows"/> rows: Q4_K,
    /// Q5_K, Q6_K, Q2_K, Q3_K or IQ4_XS, rows a multiple of 8. (Whether products use it is <see cref="WeightMatrix.HasKQuantRowGroups"/>.)
    /// </summary>
    public static bool Applies(GgmlType type, int rows) => type is GgmlType.Q4_K or GgmlType.Q5_K or GgmlType.Q6_K or GgmlType.Q2_K or GgmlType.Q3_K or GgmlType.IQ4_XS && rows % GroupRows == 0;

    /// <summary>
    /// Whether products of <paramref name="type"/> read the row-group copy on this machine: where the layout
    /// <see cref="Applies"/>, except IQ4_XS without AVX-VNNI (its kernel adds 128 to the signed codes, which only vpdpbusd
    /// multiplies without saturating; those machines keep the row-by-row kernel).
    /// </summary>
    public static bool UsedFor(GgmlType type, int rows) => Applies(type, rows) && (type != GgmlType.IQ4_XS || LowBitRowGroupDot.Iq4_XSVectorPathSupported);

    /// <summary>Bytes of one unit of <paramref name="type"/> (Q4_K, Q5_K, Q6_K, Q2_K, Q3_K or IQ4_XS).</summary>
    public static int UnitBytes(GgmlType type) => type switch
    {
        GgmlType.Q4_K => Q4_KUnitBytes,
        GgmlType.Q5_K => Q5_KUnitBytes,
        GgmlType.Q6_K => Q6_KUnitBytes,
        GgmlType.Q2_K => Q2_KUnitBytes,
        GgmlType.Q3_K => Q3_KUnitBytes,
        GgmlType.IQ4_XS => Iq4_XSUnitBytes,
        _ => throw new ArgumentException($"{type} has no K-quant row groups", nameof(type)),
    };

    /// <summary>
    /// Offset within a dword-interleaved unit (Q2_K, Q3_K, IQ4_XS) of byte <paramref name="index"/> of row <paramref name="row"/>'s
    /// super-block of <paramref name="blockBytes"/> bytes: dword index / 4 of every row in one 32-byte chunk, row r at 4r; the
    /// bytes after the last whole dword (blockBytes % 4 of them) after all the chunks, row r at r x (blockBytes % 4).
    /// </summary>
    public static int InterleavedOffset(int row, int index, int blockBytes)
    {
        int whole = blockBytes & ~3;
        return index < whole
            ? ((index / 4) * 32) + (row * 4) + (index % 4)
            : (whole * GroupRows) + (row * (blockBytes - whole)) + (index - whole);
    }

    /// <summary>Offset within a Q4_K unit of nibble byte <paramref name="index"/> (0..127) of row <paramref name="row"/> (0..7).</summary>
    public static int Q4_KQuantOffset(int row, int index)
    {
        int g = index / 32, c = (index % 32) / 4;
        return 128 + ((c * 4) + g) * 32 + (row * 4) + (index % 4);
    }

    /// <summary>
    /// Offset within a Q5_K unit of byte <paramref name="index"/> (0..159: qh[0..31], then the 128 nibble bytes) of row
    /// <paramref name="row"/> (0..7).
    /// </summary>
    public static int Q5_KQuantOffset(int row, int index)
    {
        if (index < 32)
        {
            return 128 + ((index / 4) * 32) + (row * 4) + (index % 4);
        }

        return 256 + Q4_KQuantOffset(row, index - 32);
    }

    /// <summary>
    /// Offset within a Q6_K unit of byte <paramref name="index"/> (0..191: ql[0..127], then qh[0..63]) of row
    /// <paramref name="row"/> (0..7).
    /// </summary>
    public static int Q6_KQuantOffset(int row, int index)
    {
        int h, c, k;
        if (index < 128)
        {
            h = index / 64;
            k = (index % 64) / 32;
            c = (index % 32) / 4;
        }
        else
        {
            h = (index - 128) / 32;
            k = 2;
            c = (index % 32) / 4;
        }

        return 144 + ((((h * 8) + c) * 3) + k) * 32 + (row * 4) + (index % 4);
    }

    /// <summary>
    /// Writes row groups [<paramref name="groupStart"/>, <paramref name="groupEnd"/>) of the Q4_K, Q5_K or Q6_K matrix
    /// <paramref name="w"/> (rows a multiple of 8) into <paramref name="destination"/>, which holds the whole matrix's copy
    /// (w.ByteCount bytes).
    /// </summary>
    public static void Repack(WeightMatrix w, byte* destination, int groupStart, int groupEnd)
    {
        ArgumentNullException.ThrowIfNull(w);
        if (!Applies(w.Type, w.Rows))
        {
            throw new ArgumentException($"{w.Name}: a {w.Type} matrix of {w.Rows} rows has no K-quant row groups (Q4_K, Q5_K, Q6_K, Q2_K, Q3_K or IQ4_XS, rows a multiple of 8)", nameof(w));
        }

        if (groupStart < 0 || groupEnd > w.Rows / GroupRows || groupStart > groupEnd)
        {
            throw new ArgumentOutOfRangeException(nameof(groupEnd), $"{w.Name}: groups [{groupStart}, {groupEnd}) of {w.Rows / GroupRows}");
        }

        int superBlocks = w.Cols / 256;
        int unitBytes = UnitBytes(w.Type);
        int blockBytes = unitBytes / GroupRows;
        for (int g = groupStart; g < groupEnd; g++)
        {
            byte* unit = destination + ((long)g * superBlocks * unitBytes);
            byte* row0 = w.RowPointer(g * GroupRows);
            for (int b = 0; b < superBlocks; b++, unit += unitBytes)
            {
                for (int r = 0; r < GroupRows; r++)
                {
                    byte* block = row0 + (r * w.RowByteCount) + ((long)b * blockBytes);
                    switch (w.Type)
                    {
                        case GgmlType.Q6_K:
                            RepackQ6_K(block, unit, r);
                            break;
                        case GgmlType.Q5_K:
                            RepackQ5_K(block, unit, r);
                            break;
                        case GgmlType.Q2_K:
                        case GgmlType.Q3_K:
                        case GgmlType.IQ4_XS:
                            RepackInterleaved(block, blockBytes, unit, r);
                            break;
                        default:
                            RepackQ4_K(block, unit, r);
                            break;
                    }
                }
            }
        }
    }

    // (InterleavedOffset written out: dword i to chunk i, lane r; a last half-dword after the chunks, at 2r)
    private static void RepackInterleaved(byte* block, int blockBytes, byte* unit, int r)
    {
        int dwords = blockBytes / 4;
        for (int i = 0; i < dwords; i++)
        {
            *(uint*)(unit + (32 * i) + (4 * r)) = ((uint*)block)[i];
        }

        if (blockBytes % 4 == 2)
        {
            *(ushort*)(unit + (dwords * 32) + (2 * r)) = *(ushort*)(block + (4 * dwords));
        }
    }

    private static void RepackQ5_K(byte* block, byte* unit, int r)
    {
        // scales as Q4_K's; qh words c to chunk c; the nibbles as Q4_K's, 256 bytes later.
        for (int c = 0; c < 8; c++)
        {
            *(uint*)(unit + 128 + (32 * c) + (4 * r)) = ((uint*)(block + 16))[c];
        }

        RepackQ4_KParts(block, block + 48, unit, unit + 384, r);
    }

    private static void RepackQ4_K(byte* block, byte* unit, int r) => RepackQ4_KParts(block, block + 16, unit, unit + 128, r);

    private static void RepackQ4_KParts(byte* block, byte* nibbles, byte* unit, byte* chunks, int r)
    {
        *(ushort*)(unit + (2 * r)) = *(ushort*)block;
        *(ushort*)(unit + 16 + (2 * r)) = *(ushort*)(block + 2);
        for (int k = 0; k < 3; k++)
        {
            *(uint*)(unit + 32 + (32 * k) + (4 * r)) = *(uint*)(block + 4 + (4 * k));
        }

        // (Q4_KQuantOffset written out: nibble word 8g + c to chunk 4c + g)
        uint* quants = (uint*)nibbles;
        byte* row = chunks + (4 * r);
        for (int g = 0; g < 4; g++)
        {
            for (int c = 0; c < 8; c++)
            {
                *(uint*)(row + ((((c * 4) + g) * 32))) = quants[(g * 8) + c];
            }
        }
    }

    private static void RepackQ6_K(byte* block, byte* unit, int r)
    {
        *(ushort*)(unit + (2 * r)) = *(ushort*)(block + 208);
        for (int v = 0; v < 4; v++)
        {
            *(uint*)(unit + 16 + (32 * v) + (4 * r)) = *(uint*)(block + 192 + (4 * v));
        }

        // (Q6_KQuantOffset written out: for half h and c, words 16h + c, 16h + 8 + c of ql and 8h + c of qh to the
        // chunk triple 8h + c)
        uint* quants = (uint*)block;
        for (int h = 0; h < 2; h++)
        {
            for (int c = 0; c < 8; c++)
            {
                byte* triple = unit + 144 + (((h * 8) + c) * 96) + (4 * r);
                *(uint*)triple = quants[(h * 16) + c];
                *(uint*)(triple + 32) = quants[(h * 16) + 8 + c];
                *(uint*)(triple + 64) = quants[32 + (h * 8) + c];
            }
        }
    }
}
