using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace KvAdaQuant.Numerics;

/// <summary>
/// The row-group copy of a Q4_1, Q5_1 or Q5_0 matrix (the blocks of 32 whose products ggml sums in eight float lanes per
/// row, and llama.cpp does not repack), and its 8-row kernel. Rows are taken in groups of 8; for each group and each
/// 32-column block one unit holds the 8 rows' blocks, rearranged so that the 512-bit kernel (<see cref="DotAvx512"/>)
/// reads every part with one load: the 8 FP16 steps d (row r at bytes 2r), for Q4_1 / Q5_1 the 8 FP16 minimums m (at
/// 16 + 2r), for Q5_1 / Q5_0 the fifth bits of each pair of rows (8 bytes per pair, <see cref="FifthBitsOffset"/>, their
/// bits permuted so that one GF(2) affine byte transform spreads them over the pair's 64 codes), then the rows' 16 nibble
/// bytes, row r at <see cref="NibbleOffset"/> + 16r (unchanged). A unit is 8 blocks' bytes (8 x 20, 24 or 22), group g's
/// units follow one another, and the groups follow one another: one sequential stream of the 8 rows' bytes.
/// <para>
/// The kernel gives each row exactly the arithmetic of the row-by-row kernels (<see cref="LowBitDot.DotQ4_1"/>:
/// ggml_vec_dot_q4_1_q8_1 / q5_1_q8_1; <see cref="Q5_0Dot"/>: ggml_vec_dot_q5_0_q8_0): per block the exact integer
/// products of the values in 8 lanes (lane i: values 4i..4i+3; Q5_0's values are the codes minus 16, taken as the codes'
/// products minus 16 x the lane's activation sum, the same integer) fused-added times d x dx into 8 float lanes, for Q4_1 /
/// Q5_1 the minimums m x s added block by block to one float, the lanes summed at the end as
/// <see cref="GgmlArithmetic.Sum8(Vector256{float})"/> does; so the results are the row kernels' bits. What changes is the
/// work per block: one pair of rows per 512-bit vector (their codes unpacked by one shift and one mask, the activations
/// arranged once per block for all 8 rows), the 8 rows' d (and m) converted by one conversion, and the 8 rows' minimum sums
/// in the lanes of one vector, so no row waits on a chain of scalar adds.
/// </para>
/// </summary>
public static unsafe class Q4_1RowGroups
{
    /// <summary>Rows per group.</summary>
    public const int GroupRows = 8;

    /// <summary>Whether <paramref name="type"/> has this layout: Q4_1, Q5_1 or Q5_0.</summary>
    public static bool Takes(GgmlType type) => type is GgmlType.Q4_1 or GgmlType.Q5_1 or GgmlType.Q5_0;

    /// <summary>Whether <paramref name="type"/>'s blocks carry fifth bits (Q5_1, Q5_0).</summary>
    public static bool HasFifthBits(GgmlType type) => type is GgmlType.Q5_1 or GgmlType.Q5_0;

    /// <summary>Whether <paramref name="type"/>'s blocks carry a minimum m (Q4_1, Q5_1).</summary>
    public static bool HasMinimums(GgmlType type) => type is GgmlType.Q4_1 or GgmlType.Q5_1;

    /// <summary>Offset within a unit of the fifth bits of row pair <paramref name="pair"/> (rows 2 pair, 2 pair + 1): after the d (and m).</summary>
    public static int FifthBitsOffset(GgmlType type, int pair) => (HasMinimums(type) ? 32 : 16) + (8 * pair);

    /// <summary>Offset within a unit of row 0's nibble bytes (row r's at this + 16r): 32 for Q4_1, 64 for Q5_1, 48 for Q5_0.</summary>
    public static int NibbleOffset(GgmlType type) => (HasMinimums(type) ? 32 : 16) + (HasFifthBits(type) ? 32 : 0);

    /// <summary>Bytes of one block of <paramref name="type"/>: 20 (Q4_1), 24 (Q5_1) or 22 (Q5_0).</summary>
    public static int BlockBytes(GgmlType type) => type switch
    {
        GgmlType.Q4_1 => LowBitDot.Q4_1BlockBytes,
        GgmlType.Q5_1 => LowBitDot.Q5_1BlockBytes,
        GgmlType.Q5_0 => Q5_0Dot.BlockBytes,
        _ => throw new ArgumentException($"{type} has no Q4_1-layout row groups (Q4_1, Q5_1 or Q5_0)", nameof(type)),
    };

    /// <summary>Bytes of one unit: 8 blocks.</summary>
    public static int UnitBytes(GgmlType type) => GroupRows * BlockBytes(type);

    /// <summary>True when the 8-row kernel runs on this machine: AVX-512 (F and BW) with 512-bit vectors accelerated; Q5_1 and Q5_0 also GFNI.</summary>
    public static bool VectorPathSupported(GgmlType type) =>
        Avx512F.IsSupported && Avx512BW.IsSupported && Vector512.IsHardwareAccelerated && (!HasFifthBits(type) || Gfni.V512.IsSupported);

    /// <summary>
    /// Whether products of a <paramref name="type"/> matrix of <paramref name="rows"/> rows read a copy in this layout: Q4_1,
    /// Q5_1 or Q5_0, rows a multiple of 8, where the 8-row kernel runs (<see cref="VectorPathSupported"/>); other machines
    /// keep the row-by-row kernels, which are faster than this kernel's scalar twin.
    /// </summary>
    public static bool UsedFor(GgmlType type, int rows) => rows % GroupRows == 0 && Takes(type) && VectorPathSupported(type);

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
        if (!Takes(w.Type) || w.Rows % GroupRows != 0)
        {
            throw new ArgumentException($"{w.Name}: a {w.Type} matrix of {w.Rows} rows has no Q4_1-layout row groups (Q4_1, Q5_1 or Q5_0, rows a multiple of 8)", nameof(w));
        }

        if (groupStart < 0 || groupEnd > w.Rows / GroupRows || groupStart > groupEnd)
        {
            throw new ArgumentOutOfRangeException(nameof(groupEnd), $"{w.Name}: groups [{groupStart}, {groupEnd}) of {w.Rows / GroupRows}");
        }

        var type = w.Type;
        bool five = HasFifthBits(type), mins = HasMinimums(type);
        int blocks = w.Cols / 32, blockBytes = BlockBytes(type), unitBytes = UnitBytes(type);
        int nibbles = NibbleOffset(type);

        // the block's fields: d at 0; Q4_1 / Q5_1 m at 2; Q5_1 qh at 4 (Q5_0 at 2); nibbles after them
        int qhAt = mins ? 4 : 2, quantsAt = blockBytes - 16;
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
                    if (mins)
                    {
                        *(ushort*)(unit + 16 + (2 * r)) = *(ushort*)(block + 2);
                    }

                    Buffer.MemoryCopy(block + quantsAt, unit + nibbles + (16 * r), 16, 16);
                }

                if (five)
                {
                    for (int k = 0; k < GroupRows / 2; k++)
                    {
                        uint qh0 = *(uint*)(row0 + (2 * k * w.RowByteCount) + ((long)b * blockBytes) + qhAt);
                        uint qh1 = *(uint*)(row0 + (((2 * k) + 1) * w.RowByteCount) + ((long)b * blockBytes) + qhAt);
                        ulong word = 0;
                        for (int bit = 0; bit < 64; bit++)
                        {
                            var (row, value) = FifthBitSource(bit);
                            word |= (ulong)(((row == 0 ? qh0 : qh1) >> value) & 1) << bit;
                        }

                        *(ulong*)(unit + FifthBitsOffset(type, k)) = word;
                    }
                }
            }
        }
    }

    /// <summary>
    /// output[t x outStride + r] = row r · x_t for the 8 rows of a row group of <paramref name="type"/> (Q4_1, Q5_1 or Q5_0;
    /// <paramref name="group"/>: its first unit) of <paramref name="blocks"/> blocks and <paramref name="tokens"/> (at least
    /// 1) activation vectors quantized to Q8_0 (token t's values at t x <paramref name="xStride"/>, its scales at t x
    /// <paramref name="blocks"/>) with, for Q4_1 and Q5_1, their Q8_1 sums <paramref name="xs1"/> (unused for Q5_0, may be
    /// null); the 512-bit kernel where it runs, else the scalar twin.
    /// </summary>
    public static void Dot(byte* group, GgmlType type, int blocks, int tokens, sbyte* xq, long xStride, float* xd, float* xs1, float* output, long outStride)
    {
        if (VectorPathSupported(type))
        {
            DotAvx512(group, type, blocks, tokens, xq, xStride, xd, xs1, output, outStride);
        }
        else
        {
            DotScalar(group, type, blocks, tokens, xq, xStride, xd, xs1, output, outStride);
        }
    }

    /// <summary>
    /// Scalar twin of <see cref="Dot"/>: each row's blocks read back from the unit (the fifth bits through
    /// <see cref="FifthBitSource"/>) and multiplied as <see cref="LowBitDot.DotQ4_1Scalar"/> (Q4_1, Q5_1) or
    /// <see cref="Q5_0Dot.DotScalar"/> (Q5_0) does.
    /// </summary>
    public static void DotScalar(byte* group, GgmlType type, int blocks, int tokens, sbyte* xq, long xStride, float* xd, float* xs1, float* output, long outStride)
    {
        CheckTokens(tokens);
        bool five = HasFifthBits(type), hasMins = HasMinimums(type);
        int unitBytes = UnitBytes(type), nibbles = NibbleOffset(type), offset = hasMins ? 0 : 16;
        Span<float> lanes = stackalloc float[8];
        Span<int> sums = stackalloc int[8];
        for (int t = 0; t < tokens; t++)
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
                    ulong fifth = five ? *(ulong*)(unit + FifthBitsOffset(type, r / 2)) : 0;
                    sums.Clear();
                    for (int e = 0; e < 32; e++)
                    {
                        int code = e < 16 ? qs[e] & 0xF : qs[e - 16] >> 4;
                        if (five)
                        {
                            // the code byte of value e in the pair's vector, and the stored bit that lands there
                            int p = ((e / 16) * 32) + ((r % 2) * 16) + (e % 16);
                            int bit = (8 * (p % 8)) + (p / 8);
                            code |= (int)((fifth >> bit) & 1) << 4;
                        }

                        sums[e / 4] += (code - offset) * x[(b * 32) + e];
                    }

                    float s = HalfBits.ToSingleNoSubnormals(*(ushort*)(unit + (2 * r))) * xd[(t * (long)blocks) + b];
                    for (int i = 0; i < 8; i++)
                    {
                        lanes[i] = MathF.FusedMultiplyAdd(sums[i], s, lanes[i]);
                    }

                    if (hasMins)
                    {
                        mins += HalfBits.ToSingleNoSubnormals(*(ushort*)(unit + 16 + (2 * r))) * xs1[(t * (long)blocks) + b];
                    }
                }

                // (Q5_0: no minimums; adding the zero would turn a -0 sum into +0)
                float sum = GgmlArithmetic.Sum8Scalar(lanes);
                output[(t * outStride) + r] = hasMins ? sum + mins : sum;
            }
        }
    }

    /// <summary>
    /// The 512-bit path of <see cref="Dot"/> (AVX-512 F and BW; Q5_1 and Q5_0 also GFNI). Per block: the unit's FP16 d (and
    /// m) converted at once and multiplied by the token's dx (and s): d x dx in lanes 0..7, m x s in lanes 8..15, added to
    /// the running minimum sums there; the activations arranged as values 0..15, 0..15, 16..31, 16..31; per pair of rows one
    /// 256-bit load of their nibbles broadcast to both halves, shifted by 0 or 4 per half and masked, so that the vector
    /// holds row 2k's values 0..15, row 2k+1's 0..15, row 2k's 16..31, row 2k+1's 16..31 (the fifth bits ORed in by one
    /// GF(2) affine transform of the pair's stored word), whose integer products land in the 32-bit lanes of ggml's lanes
    /// 0..3 of row 2k, 0..3 of row 2k+1, 4..7 of row 2k, 4..7 of row 2k+1 (Q5_0: less 16 x the lane's activation sum, made
    /// once per block for all pairs); each lane fused-added times its row's d x dx.
    /// </summary>
    public static void DotAvx512(byte* group, GgmlType type, int blocks, int tokens, sbyte* xq, long xStride, float* xd, float* xs1, float* output, long outStride)
    {
        switch (type)
        {
            case GgmlType.Q4_1:
                DotAvx512<Q4_1Format>(group, blocks, tokens, xq, xStride, xd, xs1, output, outStride);
                break;
            case GgmlType.Q5_1:
                DotAvx512<Q5_1Format>(group, blocks, tokens, xq, xStride, xd, xs1, output, outStride);
                break;
            case GgmlType.Q5_0:
                DotAvx512<Q5_0Format>(group, blocks, tokens, xq, xStride, xd, xs1, output, outStride);
                break;
            default:
                throw new ArgumentException($"{type} has no Q4_1-layout row groups (Q4_1, Q5_1 or Q5_0)", nameof(type));
        }
    }

    private static void DotAvx512<T>(byte* group, int blocks, int tokens, sbyte* xq, long xStride, float* xd, float* xs1, float* output, long outStride)
        where T : struct, IFormat
    {
        CheckTokens(tokens);
        int t = 0;
        for (; t + 2 <= tokens; t += 2)
        {
            Tokens<T, Two>(group, blocks, xq + (t * xStride), xStride, xd + (t * (long)blocks), xs1 + (t * (long)blocks), output + (t * outStride), outStride);
        }

        for (; t < tokens; t++)
        {
            Tokens<T, One>(group, blocks, xq + (t * xStride), xStride, xd + (t * (long)blocks), xs1 + (t * (long)blocks), output + (t * outStride), outStride);
        }
    }

    // One token, or two at once (prefill: each unit's codes and halves prepared once for both). TCount.Two false leaves the
    // second token's work out (the JIT drops it for the One instantiation).
    private static void Tokens<T, TCount>(byte* group, int blocks, sbyte* x, long xStride, float* dx, float* sx, float* output, long outStride)
        where T : struct, IFormat
        where TCount : struct, ICount
    {
        int unitBytes = T.UnitBytes, nibbles = T.NibbleOffset;
        var shifts = Vector512.Create(0UL, 0, 0, 0, 4, 4, 4, 4);
        var nibble = Vector512.Create((byte)0xF);
        var ones = Vector512.Create((short)1);
        var onesU8 = Vector512.Create((byte)1);
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
            var halves = T.Halves(unit);
            var scaledA = halves * (T.Minimums ? Vector512.Create(Vector256.Create(dx[b]), Vector256.Create(sx[b])) : Vector512.Create(dx[b]));
            var xa = Avx512F.PermuteVar8x64(Vector256.Load(x + (b * 32)).AsInt64().ToVector512Unsafe(), arrange).AsSByte();
            var offsetA = T.Offset ? Sixteen(xa, onesU8, ones) : default;
            var scaledB = default(Vector512<float>);
            var xb = default(Vector512<sbyte>);
            var offsetB = default(Vector512<int>);
            if (TCount.Two)
            {
                scaledB = halves * (T.Minimums ? Vector512.Create(Vector256.Create(dx[blocks + b]), Vector256.Create(sx[blocks + b])) : Vector512.Create(dx[blocks + b]));
                xb = Avx512F.PermuteVar8x64(Vector256.Load(x + xStride + (b * 32)).AsInt64().ToVector512Unsafe(), arrange).AsSByte();
                offsetB = T.Offset ? Sixteen(xb, onesU8, ones) : default;
            }

            if (T.Minimums)
            {
                minsA += scaledA;
                if (TCount.Two)
                {
                    minsB += scaledB;
                }
            }

            byte* q = unit + nibbles;
            var c0 = PairCodes<T>(q, unit, 0, shifts, nibble, spread);
            var c1 = PairCodes<T>(q + 32, unit, 1, shifts, nibble, spread);
            var c2 = PairCodes<T>(q + 64, unit, 2, shifts, nibble, spread);
            var c3 = PairCodes<T>(q + 96, unit, 3, shifts, nibble, spread);
            a0 = Avx512F.FusedMultiplyAdd(CodeSum<T>(c0, xa, offsetA, ones), Avx512F.PermuteVar16x32(scaledA, pick0), a0);
            a1 = Avx512F.FusedMultiplyAdd(CodeSum<T>(c1, xa, offsetA, ones), Avx512F.PermuteVar16x32(scaledA, pick1), a1);
            a2 = Avx512F.FusedMultiplyAdd(CodeSum<T>(c2, xa, offsetA, ones), Avx512F.PermuteVar16x32(scaledA, pick2), a2);
            a3 = Avx512F.FusedMultiplyAdd(CodeSum<T>(c3, xa, offsetA, ones), Avx512F.PermuteVar16x32(scaledA, pick3), a3);
            if (TCount.Two)
            {
                b0 = Avx512F.FusedMultiplyAdd(CodeSum<T>(c0, xb, offsetB, ones), Avx512F.PermuteVar16x32(scaledB, pick0), b0);
                b1 = Avx512F.FusedMultiplyAdd(CodeSum<T>(c1, xb, offsetB, ones), Avx512F.PermuteVar16x32(scaledB, pick1), b1);
                b2 = Avx512F.FusedMultiplyAdd(CodeSum<T>(c2, xb, offsetB, ones), Avx512F.PermuteVar16x32(scaledB, pick2), b2);
                b3 = Avx512F.FusedMultiplyAdd(CodeSum<T>(c3, xb, offsetB, ones), Avx512F.PermuteVar16x32(scaledB, pick3), b3);
            }
        }

        Finish<T>(a0, minsA, 0, output);
        Finish<T>(a1, minsA, 2, output);
        Finish<T>(a2, minsA, 4, output);
        Finish<T>(a3, minsA, 6, output);
        if (TCount.Two)
        {
            Finish<T>(b0, minsB, 0, output + outStride);
            Finish<T>(b1, minsB, 2, output + outStride);
            Finish<T>(b2, minsB, 4, output + outStride);
            Finish<T>(b3, minsB, 6, output + outStride);
        }
    }

    // 16 x each 32-bit lane's activation sum (Q5_0's values are the codes less 16).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<int> Sixteen(Vector512<sbyte> x, Vector512<byte> onesU8, Vector512<short> ones)
        => Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(onesU8, x), ones) << 4;

    // One pair of rows' 64 codes, in the order DotAvx512 describes.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<byte> PairCodes<T>(byte* nibbles, byte* unit, int pair, Vector512<ulong> shifts, Vector512<byte> nibble, Vector512<byte> spread)
        where T : struct, IFormat
    {
        var codes = Avx512F.ShiftRightLogicalVariable(Vector512.Create(Vector256.Load((ulong*)nibbles)), shifts).AsByte() & nibble;
        if (T.FifthBits)
        {
            codes |= Gfni.V512.GaloisFieldAffineTransform(Vector512.Create(*(ulong*)(unit + T.FifthBitsOffset + (8 * pair))).AsByte(), spread, 0);
        }

        return codes;
    }

    // Codes times arranged activations, exact in 16 int32 lanes (Q5_0: less 16 x the lanes' activation sums), as floats.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> CodeSum<T>(Vector512<byte> codes, Vector512<sbyte> x, Vector512<int> offset, Vector512<short> ones)
        where T : struct, IFormat
    {
        var sums = Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(codes, x), ones);
        return Avx512F.ConvertToVector512Single(T.Offset ? sums - offset : sums);
    }

    // Rows first, first + 1 from a pair's accumulator: ggml's lane sum (Sum8: upper half plus lower, then pairs) plus the row's minimums.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Finish<T>(Vector512<float> acc, Vector512<float> mins, int first, float* output)
        where T : struct, IFormat
    {
        var t4 = acc.GetUpper() + acc.GetLower();
        float s0 = (t4.GetElement(0) + t4.GetElement(2)) + (t4.GetElement(1) + t4.GetElement(3));
        float s1 = (t4.GetElement(4) + t4.GetElement(6)) + (t4.GetElement(5) + t4.GetElement(7));
        output[first] = T.Minimums ? s0 + mins.GetElement(8 + first) : s0;
        output[first + 1] = T.Minimums ? s1 + mins.GetElement(9 + first) : s1;
    }

    private static void CheckTokens(int tokens)
    {
        if (tokens < 1)
        {
            throw new ArgumentOutOfRangeException(nameof(tokens), tokens, "Q4_1-layout row-group products take at least 1 token");
        }
    }

    // The block formats the kernel is specialized for.
    private interface IFormat
    {
        static abstract bool Minimums { get; }

        static abstract bool FifthBits { get; }

        // the values are the codes less 16 (Q5_0)
        static abstract bool Offset { get; }

        static abstract int UnitBytes { get; }

        static abstract int NibbleOffset { get; }

        static abstract int FifthBitsOffset { get; }

        // the unit's d (lanes 0..7) and m (lanes 8..15; Q5_0: d again) as floats
        static abstract Vector512<float> Halves(byte* unit);
    }

    private struct Q4_1Format : IFormat
    {
        public static bool Minimums => true;

        public static bool FifthBits => false;

        public static bool Offset => false;

        public static int UnitBytes => GroupRows * LowBitDot.Q4_1BlockBytes;

        public static int NibbleOffset => 32;

        public static int FifthBitsOffset => 32;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector512<float> Halves(byte* unit) => DAndM(unit);
    }

    private struct Q5_1Format : IFormat
    {
        public static bool Minimums => true;

        public static bool FifthBits => true;

        public static bool Offset => false;

        public static int UnitBytes => GroupRows * LowBitDot.Q5_1BlockBytes;

        public static int NibbleOffset => 64;

        public static int FifthBitsOffset => 32;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector512<float> Halves(byte* unit) => DAndM(unit);
    }

    private struct Q5_0Format : IFormat
    {
        public static bool Minimums => false;

        public static bool FifthBits => true;

        public static bool Offset => true;

        public static int UnitBytes => GroupRows * Q5_0Dot.BlockBytes;

        public static int NibbleOffset => 48;

        public static int FifthBitsOffset => 16;

        // the 8 d in both halves (the kernel reads lanes 0..7 only)
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector512<float> Halves(byte* unit) => HalfBits.ToSingle16NoSubnormals(Avx512F.ConvertToVector512Int32(Vector256.Create(Vector128.Load((ushort*)unit))));
    }

    // A Q4_1 / Q5_1 unit's 8 d and 8 m (its first 32 bytes) as floats.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> DAndM(byte* unit) => HalfBits.ToSingle16NoSubnormals(Avx512F.ConvertToVector512Int32(Vector256.Load((ushort*)unit)));

    private interface ICount
    {
        static abstract bool Two { get; }
    }

    private struct One : ICount
    {
        public static bool Two => false;
    }

    private struct Two : ICount
    {
        static bool ICount.Two => true;
    }
}
