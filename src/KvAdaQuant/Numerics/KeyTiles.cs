namespace KvAdaQuant.Numerics;

/// <summary>
/// The key layout of the int8 score path: rows in tiles of <see cref="Tokens"/> tokens, each tile the transpose of its
/// rows' dwords, so that dword k (code bytes 4k..4k+3) of the tile's token i lies at byte 64 k + 4 i of the tile. One
/// 64-byte load then gives a code column of sixteen tokens in order, which the row layout needs sixteen 16-byte loads,
/// twelve inserts and eight unpacks to assemble (per four columns). Tiles follow each other, so a run of tokens is still
/// read front to back; the bytes are the same as the rows' (the last tile of a head is padded to whole tiles).
/// Rows must be whole dwords (every key layout <see cref="Int8AttentionKernels.Supports"/> takes is).
/// </summary>
internal static unsafe class KeyTiles
{
    /// <summary>Tokens per tile: the sixteen int32 lanes of a 512-bit vector.</summary>
    public const int Tokens = 16;

    /// <summary>Bytes a head of <paramref name="rows"/> rows takes in tiles (whole tiles).</summary>
    public static long Bytes(int rows, int rowBytes) => (long)((rows + Tokens - 1) / Tokens) * Tokens * rowBytes;

    /// <summary>The offset of byte <paramref name="index"/> of row <paramref name="token"/> from the first tile.</summary>
    public static long Offset(int token, int index, int rowBytes) =>
        ((long)(token / Tokens) * Tokens * rowBytes) + ((index >> 2) * 64) + ((token % Tokens) * 4) + (index & 3);

    /// <summary>Row <paramref name="token"/>'s <paramref name="rowBytes"/> code bytes out of the tiles at <paramref name="tiles"/>.</summary>
    public static void ReadRow(byte* tiles, int token, int rowBytes, Span<byte> row)
    {
        byte* d = tiles + Offset(token, 0, rowBytes);
        for (int k = 0; k < rowBytes / 4; k++)
        {
            new ReadOnlySpan<byte>(d + (64 * k), 4).CopyTo(row[(4 * k)..]);
        }
    }

    /// <summary>Writes row <paramref name="token"/> into the tiles at <paramref name="tiles"/>.</summary>
    public static void WriteRow(byte* tiles, int token, int rowBytes, ReadOnlySpan<byte> row)
    {
        byte* d = tiles + Offset(token, 0, rowBytes);
        for (int k = 0; k < rowBytes / 4; k++)
        {
            row.Slice(4 * k, 4).CopyTo(new Span<byte>(d + (64 * k), 4));
        }
    }
}
