namespace KvAdaQuant.Gpu;

/// <summary>
/// Bit packing of one token's codes in the GPU layout. For 1..8 bits the row is a little-endian bit stream:
/// code d occupies bits [d*b, d*b+b), byte k holding bits 8k..8k+7 least significant first (so 4-bit code d is
/// the low nibble of byte d/2 for even d; 3-, 5- and 6-bit codes straddle bytes). Ternary codes (1.58 bits)
/// go five to a byte in base 3: byte d/5 = sum of code(5i + j) * 3^j, j = 0..4.
/// </summary>
public static class PackedKvCodes
{
    private static ReadOnlySpan<byte> PowersOfThree => [1, 3, 9, 27, 81];

    /// <summary>Reads code <paramref name="d"/> of a row.</summary>
    public static int Get(ReadOnlySpan<byte> row, int bitsCode, int d)
    {
        if (bitsCode == PackedKvFormat.TernaryCode)
        {
            return row[d / 5] / PowersOfThree[d % 5] % 3;
        }

        int bit = d * bitsCode;
        int index = bit >> 3;
        int shift = bit & 7;
        int word = row[index];
        if (shift + bitsCode > 8)
        {
            word |= row[index + 1] << 8;
        }

        return (word >> shift) & ((1 << bitsCode) - 1);
    }

    /// <summary>Writes code <paramref name="d"/> of a row (the row starts zeroed for ternary).</summary>
    public static void Set(Span<byte> row, int bitsCode, int d, int code)
    {
        if (bitsCode == PackedKvFormat.TernaryCode)
        {
            int old = Get(row, bitsCode, d);
            row[d / 5] = (byte)(row[d / 5] + ((code - old) * PowersOfThree[d % 5]));
            return;
        }

        int bit = d * bitsCode;
        int index = bit >> 3;
        int shift = bit & 7;
        int mask = ((1 << bitsCode) - 1) << shift;
        int word = row[index] | (shift + bitsCode > 8 ? row[index + 1] << 8 : 0);
        word = (word & ~mask) | ((code << shift) & mask);
        row[index] = (byte)word;
        if (shift + bitsCode > 8)
        {
            row[index + 1] = (byte)(word >> 8);
        }
    }
}
