using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace KvAdaQuant.Numerics;

/// <summary>
/// The row-group copy of a Q4_1 or Q5_1 matrix, and its 8-row kernel. Rows are taken in groups of 8; for each group and
/// each 32-column block one unit holds the 8 rows' blocks, rearranged so that the 512-bit kernel (<see cref="DotAvx512"/>)
/// reads every part with one load: the 8 FP16 steps d (row r at bytes 2r), the 8 FP16 minimums m (at 16 + 2r), for Q5_1
/// the fifth bits of each pair of rows (8 bytes per pair, <see cref="FifthBitsOffset"/>, their bits permuted so that one
/// GF(2) affine byte transform spreads them over the pair's 64 codes), then the rows' 16 nibble bytes, row r at
/// <see cref="NibbleOffset"/> + 16r (unchanged). A unit is 8 x 20 bytes (Q4_1) or 8 x 24 (Q5_1), group g's units follow
/// one another, and the groups follow one another: one sequential stream of the 8 rows' bytes.
/// <para>
/// The kernel gives each row exactly the arithmetic of <see cref="LowBitDot.DotQ4_1"/> (ggml_vec_dot_q4_1_q8_1 /
/// q5_1_q8_1): per block the exact integer products of the codes in 8 lanes (lane i: values 4i..4i+3) fused-added times
/// d x dx into 8 float lanes, the minimums m x s added block by block to one float, the lanes summed at the end as
/// <see cref="GgmlArithmetic.Sum8(Vector256{float})"/> does; so the results are the row kernel's bits. What changes is the
/// work per block: one pair of rows per 512-bit vector (their codes unpacked by one shift and one mask, the activations
/// arranged once per block for all 8 rows), the 8 rows' d and m converted by one 16-lane conversion, and the 8 rows'
/// minimum sums in the lanes of one vector, so no row waits on a chain of scalar adds.
/// </para>
/// </summary>
public static unsafe class Q4_1RowGroups
{
    /// <summary>Rows per group.</summary>
    public const int GroupRows = 8;

    /// <summary>Offset within a Q5_1 unit of the fifth bits of row pair <paramref name="pair"/> (rows 2 pair, 2 pair + 1).</summary>
    public static int FifthBitsOffset(int pair) => 32 + (8 * pair);

    /// <summary>Offset within a unit of row 0's nibble bytes (row r's at this + 16r): 32 for Q4_1, 64 for Q5_1.</summary>
    public static int NibbleOffset(bool fiveBit) => fiveBit ? 64 : 32;

    /// <summary>Bytes of one unit: 8 blocks of 20 (Q4_1) or 24 (Q5_1) bytes.</summary>
    public static int UnitBytes(bool fiveBit) => GroupRows * (fiveBit ? LowBitDot.Q5_1BlockBytes : LowBitDot.Q4_1BlockBytes);

    /// <summary>True when the 8-row kernel runs on this machine: AVX-512 (F and BW) with 512-bit vectors accelerated; Q5_1 also GFNI.</summary>
    public static bool VectorPathSupported(bool fiveBit) =>
        Avx512F.IsSupported && Avx512BW.IsSupported && Vector512.IsHardwareAccelerated && (!fiveBit || Gfni.V512.IsSupported);

    /// <summary>
    /// Whether products of a <paramref name="type"/> matrix of <paramref name="rows"/> rows read a copy in this layout: Q4_1 or
    /// Q5_1, rows a multiple of 8, where the 8-row kernel runs (<see cref="VectorPathSupported"/>); other machines keep the
    /// row-by-row kernel, which is faster than this kernel's scalar twin.
    /// </summary>
    public static bool UsedFor(GgmlType type, int rows) =>
        rows % GroupRows == 0 && type is GgmlType.Q4_1 or GgmlType.Q5_1 && VectorPathSupported(type == GgmlType.Q5_1);

    /// <summary>
    /// Which fifth bit of the pair lands in bit <paramref name="bit"/> (0..63) of the pair's stored 64-bit word: the GF(2)
    /// transform (<see cref="DotAvx512"/>) gives code byte p = 8q + j of the pair's vector bit q of stored byte j, so stored
    /// bit 8j + q holds the fifth bit of the value at byte p. The pair's code bytes are row 2k's values 0..15, row 2k+1's
    /// values 0..15, row 2k's 16..31, row 2k+1's 16..31. Returns (row within the pair, value index).
    /// </summary>
    public static (int Row, int Value) FifthBitSource(int bit)
    {
        int j = bit / 8, q = bit % 8, p = (8 * q) + j;
        return ((p / 16) % 2, ((p / 32) * 16) + (p % 16));
    }

    /// <summary>
    /// Writes row groups [<paramref name="groupStart"/>, <paramref name="groupEnd"/>) of the Q4_1 or Q5_1 matrix <paramref name="w"/>
    /// (rows a multiple of 8) into <paramref name="destination"/>, which holds the whole matrix's copy (w.ByteCount bytes).
    /// </summary>
    public static void Repack(WeightMatrix w, byte* destination, int groupStart, int groupEnd)
    {
        ArgumentNullException.ThrowIfNull(w);
        if (w.Type is not (GgmlType.Q4_1 or GgmlType.Q5_1) || w.Rows % GroupRows != 0)
        {
            throw new ArgumentException($"{w.Name}: a {w.Type} matrix of {w.Rows} rows has no Q4_1 / Q5_1 row groups (Q4_1 or Q5_1, rows a multiple of 8)", nameof(w));
        }

        if (groupStart < 0 || groupEnd > w.Rows / GroupRows || groupStart > groupEnd)
        {
            throw new ArgumentOutOfRangeException(nameof(groupEnd), $"{w.Name}: groups [{groupStart}, {groupEnd}) of {w.Rows / GroupRows}");
        }

        bool five = w.Type == GgmlType.Q5_1;
        int blocks = w.Cols / 32, blockBytes = five ? LowBitDot.Q5_1BlockBytes : LowBitDot.Q4_1BlockBytes, unitBytes = UnitBytes(five);
        int nibbles = NibbleOffset(five);
        for (int g = groupStart; g < groupEnd; g++)
        {
            byte* unit = destination + ((long)g * blocks * unitBytes);
            byte* row0 = w.RowPointer(g * GroupRows);
            for (int b = 0; b < blocks; b++, unit += unitBytes)
            {
                for (int r = 0; r < GroupRows; r++)
                {
                    byte* block = row0 + (r * w.RowByteCount) + ((long)b * blockBytes);
                    *(ushort*)(unit + (2 * r)) = *(ushort*)block;
                    *(ushort*)(unit + 16 + (2 * r)) = *(ushort*)(block + 2);
                    Buffer.MemoryCopy(block + (five ? 8 : 4), unit + nibbles + (16 * r), 16, 16);
                }

                if (five)
                {
                    for (int k = 0; k < GroupRows / 2; k++)
                    {
                        uint qh0 = *(uint*)(row0 + (2 * k * w.RowByteCount) + ((long)b * blockBytes) + 4);
                        uint qh1 = *(uint*)(row0 + (((2 * k) + 1) * w.RowByteCount) + ((long)b * blockBytes) + 4);
                        ulong word = 0;
                        for (int bit = 0; bit < 64; bit++)
                        {
                            var (row, value) = FifthBitSource(bit);
                            word |= (ulong)(((row == 0 ? qh0 : qh1) >> value) & 1) << bit;
                        }

                        *(ulong*)(unit + FifthBitsOffset(k)) = word;
                    }
                }
            }
        }
    }

    /// <summary>
    /// output[t x outStride + r] = row r · x_t for the 8 Q4_1 (<paramref name="fiveBit"/> false) or Q5_1 rows of a row group
    /// (<paramref name="group"/>: its first unit) of <paramref name="blocks"/> blocks and <paramref name="tokens"/> (at least 1)
    /// activation vectors quantized to Q8_0 with their Q8_1 sums (token t's values at t x <paramref name="xStride"/>, its
    /// scales and sums at t x <paramref name="blocks"/>); the 512-bit kernel where it runs, else the scalar twin.
    /// </summary>
    public static void Dot(byte* group, int blocks, int tokens, bool fiveBit, sbyte* xq, long xStride, float* xd, float* xs1, float* output, long outStride)
    {
        if (VectorPathSupported(fiveBit))
        {
            DotAvx512(group, blocks, tokens, fiveBit, xq, xStride, xd, xs1, output, outStride);
        }
        else
        {
            DotScalar(group, blocks, tokens, fiveBit, xq, xStride, xd, xs1, output, outStride);
        }
    }

    /// <summary>
    /// Scalar twin of <see cref="Dot"/>: each row's blocks read back from the unit (the fifth bits through
    /// <see cref="FifthBitSource"/>) and multiplied as <see cref="LowBitDot.DotQ4_1Scalar"/> does.
    /// </summary>
    public static void DotScalar(byte* group, int blocks, int tokens, bool fiveBit, sbyte* xq, long xStride, float* xd, float* xs1, float* output, long outStride)
    {
        CheckTokens(tokens);
        int unitBytes = UnitBytes(fiveBit), nibbles = NibbleOffset(fiveBit);
        Span<float> lanes = stackalloc float[8];
        Span<int> sums = stackalloc int[8];
        int t = 0;
        for (; t + 2 <= tokens; t += 2)
        {
            TwoTokens(group, blocks, fiveBit, xq + (t * xStride), xStride, xd + (t * (long)blocks), xs1 + (t * (long)blocks), output + (t * outStride), outStride);
        }

        for (; t < tokens; t++)
        {
            sbyte* x = xq + (t * xStride);
            for (int r = 0; r < GroupRows; r++)
            {
                lanes.Clear();
                float mins = 0;
                for (int b = 0; b < blocks; b++)
                {
                    byte* unit = group + ((long)b * unitBytes);
                    byte* qs = unit + nibbles + (16 * r);
                    ulong fifth = fiveBit ? *(ulong*)(unit + FifthBitsOffset(r / 2)) : 0;
                    sums.Clear();
                    for (int e = 0; e < 32; e++)
                    {
                        int code = e < 16 ? qs[e] & 0xF : qs[e - 16] >> 4;
                        if (fiveBit)
                        {
                            // the code byte of value e in the pair's vector, and the stored bit that lands there
                            int p = ((e / 16) * 32) + ((r % 2) * 16) + (e % 16);
                            int bit = (8 * (p % 8)) + (p / 8);
                            code |= (int)((fifth >> bit) & 1) << 4;
                        }

                        sums[e / 4] += code * x[(b * 32) + e];
                    }

                    float s = HalfBits.ToSingleNoSubnormals(*(ushort*)(unit + (2 * r))) * xd[(t * (long)blocks) + b];
                    for (int i = 0; i < 8; i++)
                    {
                        lanes[i] = MathF.FusedMultiplyAdd(sums[i], s, lanes[i]);
                    }

                    mins += HalfBits.ToSingleNoSubnormals(*(ushort*)(unit + 16 + (2 * r))) * xs1[(t * (long)blocks) + b];
                }

                output[(t * outStride) + r] = GgmlArithmetic.Sum8Scalar(lanes) + mins;
            }
        }
    }

    /// <summary>
    /// The 512-bit path of <see cref="Dot"/> (AVX-512 F and BW; Q5_1 also GFNI). Per block: the 16 FP16 d and m of the unit
    /// converted at once and multiplied by the token's dx and s (d x dx in lanes 0..7, m x s in lanes 8..15, added to the
    /// running minimum sums there); the activations arranged as values 0..15, 0..15, 16..31, 16..31; per pair of rows one
    /// 256-bit load of their nibbles broadcast to both halves, shifted by 0 or 4 per half and masked, so that the vector
    /// holds row 2k's values 0..15, row 2k+1's 0..15, row 2k's 16..31, row 2k+1's 16..31 (Q5_1: the fifth bits ORed in by one
    /// GF(2) affine transform of the pair's stored word), whose integer products land in the 32-bit lanes of ggml's lanes
    /// 0..3 of row 2k, 0..3 of row 2k+1, 4..7 of row 2k, 4..7 of row 2k+1; each lane fused-added times its row's d x dx.
    /// </summary>
    public static void DotAvx512(byte* group, int blocks, int tokens, bool fiveBit, sbyte* xq, long xStride, float* xd, float* xs1, float* output, long outStride)
    {
        CheckTokens(tokens);
        int unitBytes = UnitBytes(fiveBit), nibbles = NibbleOffset(fiveBit);
        var shifts = Vector512.Create(0UL, 0, 0, 0, 4, 4, 4, 4);
        var nibble = Vector512.Create((byte)0xF);
        var ones = Vector512.Create((short)1);
        var spread = Vector512.Create(1UL << 24, 2UL << 24, 4UL << 24, 8UL << 24, 16UL << 24, 32UL << 24, 64UL << 24, 128UL << 24).AsByte();
        var arrange = Vector512.Create(0L, 1, 0, 1, 2, 3, 2, 3);
        var pick0 = Vector512.Create(0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1);
        var pick1 = pick0 + Vector512.Create(2);
        var pick2 = pick0 + Vector512.Create(4);
        var pick3 = pick0 + Vector512.Create(6);
        int t = 0;
        for (; t + 2 <= tokens; t += 2)
        {
            TwoTokens(group, blocks, fiveBit, xq + (t * xStride), xStride, xd + (t * (long)blocks), xs1 + (t * (long)blocks), output + (t * outStride), outStride);
        }

        for (; t < tokens; t++)
        {
            sbyte* x = xq + (t * xStride);
            float* dx = xd + (t * (long)blocks);
            float* sx = xs1 + (t * (long)blocks);
            var acc0 = Vector512<float>.Zero;
            var acc1 = Vector512<float>.Zero;
            var acc2 = Vector512<float>.Zero;
            var acc3 = Vector512<float>.Zero;
            var mins = Vector512<float>.Zero;
            byte* unit = group;
            for (int b = 0; b < blocks; b++, unit += unitBytes)
            {
                var halves = HalfBits.ToSingle16NoSubnormals(Avx512F.ConvertToVector512Int32(Vector256.Load((ushort*)unit)));
                var scaled = halves * Vector512.Create(Vector256.Create(dx[b]), Vector256.Create(sx[b]));
                mins += scaled;
                var xb = Avx512F.PermuteVar8x64(Vector256.Load(x + (b * 32)).AsInt64().ToVector512Unsafe(), arrange).AsSByte();
                byte* q = unit + nibbles;
                acc0 = Avx512F.FusedMultiplyAdd(PairSum(q, unit, 0, fiveBit, shifts, nibble, spread, xb, ones), Avx512F.PermuteVar16x32(scaled, pick0), acc0);
                acc1 = Avx512F.FusedMultiplyAdd(PairSum(q + 32, unit, 1, fiveBit, shifts, nibble, spread, xb, ones), Avx512F.PermuteVar16x32(scaled, pick1), acc1);
                acc2 = Avx512F.FusedMultiplyAdd(PairSum(q + 64, unit, 2, fiveBit, shifts, nibble, spread, xb, ones), Avx512F.PermuteVar16x32(scaled, pick2), acc2);
                acc3 = Avx512F.FusedMultiplyAdd(PairSum(q + 96, unit, 3, fiveBit, shifts, nibble, spread, xb, ones), Avx512F.PermuteVar16x32(scaled, pick3), acc3);
            }

            float* o = output + (t * outStride);
            Finish(acc0, mins, 0, o);
            Finish(acc1, mins, 2, o);
            Finish(acc2, mins, 4, o);
            Finish(acc3, mins, 6, o);
        }
    }

    // Two tokens at once (prefill): each unit's codes and halves prepared once for both; per token the arithmetic of DotAvx512's loop.
    private static void TwoTokens(byte* group, int blocks, bool fiveBit, sbyte* x, long xStride, float* dx, float* sx, float* output, long outStride)
    {
        int unitBytes = UnitBytes(fiveBit), nibbles = NibbleOffset(fiveBit);
        var shifts = Vector512.Create(0UL, 0, 0, 0, 4, 4, 4, 4);
        var nibble = Vector512.Create((byte)0xF);
        var ones = Vector512.Create((short)1);
        var spread = Vector512.Create(1UL << 24, 2UL << 24, 4UL << 24, 8UL << 24, 16UL << 24, 32UL << 24, 64UL << 24, 128UL << 24).AsByte();
        var arrange = Vector512.Create(0L, 1, 0, 1, 2, 3, 2, 3);
        var pick0 = Vector512.Create(0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1);
        var pick1 = pick0 + Vector512.Create(2);
        var pick2 = pick0 + Vector512.Create(4);
        var pick3 = pick0 + Vector512.Create(6);
        var a0 = Vector512<float>.Zero;
        var a1 = Vector512<float>.Zero;
        var a2 = Vector512<float>.Zero;
        var a3 = Vector512<float>.Zero;
        var b0 = Vector512<float>.Zero;
        var b1 = Vector512<float>.Zero;
        var b2 = Vector512<float>.Zero;
        var b3 = Vector512<float>.Zero;
        var minsA = Vector512<float>.Zero;
        var minsB = Vector512<float>.Zero;
        byte* unit = group;
        for (int b = 0; b < blocks; b++, unit += unitBytes)
        {
            var halves = HalfBits.ToSingle16NoSubnormals(Avx512F.ConvertToVector512Int32(Vector256.Load((ushort*)unit)));
            var scaledA = halves * Vector512.Create(Vector256.Create(dx[b]), Vector256.Create(sx[b]));
            var scaledB = halves * Vector512.Create(Vector256.Create(dx[blocks + b]), Vector256.Create(sx[blocks + b]));
            minsA += scaledA;
            minsB += scaledB;
            var xa = Avx512F.PermuteVar8x64(Vector256.Load(x + (b * 32)).AsInt64().ToVector512Unsafe(), arrange).AsSByte();
            var xb = Avx512F.PermuteVar8x64(Vector256.Load(x + xStride + (b * 32)).AsInt64().ToVector512Unsafe(), arrange).AsSByte();
            byte* q = unit + nibbles;
            var c0 = PairCodes(q, unit, 0, fiveBit, shifts, nibble, spread);
            var c1 = PairCodes(q + 32, unit, 1, fiveBit, shifts, nibble, spread);
            var c2 = PairCodes(q + 64, unit, 2, fiveBit, shifts, nibble, spread);
            var c3 = PairCodes(q + 96, unit, 3, fiveBit, shifts, nibble, spread);
            a0 = Avx512F.FusedMultiplyAdd(CodeSum(c0, xa, ones), Avx512F.PermuteVar16x32(scaledA, pick0), a0);
            a1 = Avx512F.FusedMultiplyAdd(CodeSum(c1, xa, ones), Avx512F.PermuteVar16x32(scaledA, pick1), a1);
            a2 = Avx512F.FusedMultiplyAdd(CodeSum(c2, xa, ones), Avx512F.PermuteVar16x32(scaledA, pick2), a2);
            a3 = Avx512F.FusedMultiplyAdd(CodeSum(c3, xa, ones), Avx512F.PermuteVar16x32(scaledA, pick3), a3);
            b0 = Avx512F.FusedMultiplyAdd(CodeSum(c0, xb, ones), Avx512F.PermuteVar16x32(scaledB, pick0), b0);
            b1 = Avx512F.FusedMultiplyAdd(CodeSum(c1, xb, ones), Avx512F.PermuteVar16x32(scaledB, pick1), b1);
            b2 = Avx512F.FusedMultiplyAdd(CodeSum(c2, xb, ones), Avx512F.PermuteVar16x32(scaledB, pick2), b2);
            b3 = Avx512F.FusedMultiplyAdd(CodeSum(c3, xb, ones), Avx512F.PermuteVar16x32(scaledB, pick3), b3);
        }

        Finish(a0, minsA, 0, output);
        Finish(a1, minsA, 2, output);
        Finish(a2, minsA, 4, output);
        Finish(a3, minsA, 6, output);
        Finish(b0, minsB, 0, output + outStride);
        Finish(b1, minsB, 2, output + outStride);
        Finish(b2, minsB, 4, output + outStride);
        Finish(b3, minsB, 6, output + outStride);
    }

    // The integer products of one pair of rows' codes with the arranged activations, as floats (lanes as DotAvx512 says).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> PairSum(byte* nibbles, byte* unit, int pair, bool fiveBit, Vector512<ulong> shifts, Vector512<byte> nibble, Vector512<byte> spread, Vector512<sbyte> xb, Vector512<short> ones)
        => CodeSum(PairCodes(nibbles, unit, pair, fiveBit, shifts, nibble, spread), xb, ones);

    // One pair of rows' 64 codes, in the order DotAvx512 describes.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<byte> PairCodes(byte* nibbles, byte* unit, int pair, bool fiveBit, Vector512<ulong> shifts, Vector512<byte> nibble, Vector512<byte> spread)
    {
        var codes = Avx512F.ShiftRightLogicalVariable(Vector512.Create(Vector256.Load((ulong*)nibbles)), shifts).AsByte() & nibble;
        if (fiveBit)
        {
            codes |= Gfni.V512.GaloisFieldAffineTransform(Vector512.Create(*(ulong*)(unit + FifthBitsOffset(pair))).AsByte(), spread, 0);
        }

        return codes;
    }

    // Codes times arranged activations, exact in 16 int32 lanes, as floats.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> CodeSum(Vector512<byte> codes, Vector512<sbyte> xb, Vector512<short> ones)
        => Avx512F.ConvertToVector512Single(Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(codes, xb), ones));

    // Rows first, first + 1 from a pair's accumulator: ggml's lane sum (Sum8: upper half plus lower, then pairs) plus the row's minimums.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Finish(Vector512<float> acc, Vector512<float> mins, int first, float* output)
    {
        var t4 = acc.GetUpper() + acc.GetLower();
        output[first] = ((t4.GetElement(0) + t4.GetElement(2)) + (t4.GetElement(1) + t4.GetElement(3))) + mins.GetElement(8 + first);
        output[first + 1] = ((t4.GetElement(4) + t4.GetElement(6)) + (t4.GetElement(5) + t4.GetElement(7))) + mins.GetElement(9 + first);
    }

    private static void CheckTokens(int tokens)
    {
        if (tokens < 1)
        {
            throw new ArgumentOutOfRangeException(nameof(tokens), tokens, "Q4_1 / Q5_1 row-group products take at least 1 token");
        }
    }
}
