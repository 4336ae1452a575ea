using System.Collections.Concurrent;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace KvAdaQuant.Numerics;

/// <summary>
/// Decode-attention value sums over packed 2- and 4-bit value rows with 8-bit softmax weights: the integer counterpart of
/// <see cref="FusedAttentionKernels.AccumulatePacked"/> for the int8 attention path. A row dequantizes as
/// x_c = a_g c_c + b_g (FP16 step a_g >= 0 and offset b_g of the channel's group g), so for a query head r
/// <c>sum_t p_t x_tc = sum_t (p_t a_tg) c_tc + sum_t p_t b_tg</c>. Per block of up to <see cref="TokenBlock"/> tokens,
/// head and group the weights u_t = p_t a_tg (p_t >= 0) are rounded to bytes, û_t = round(u_t * 255 / U) with U their
/// largest value (round half to even, as <c>vcvtps2dq</c>), and the first sum is taken as
/// <c>(U / 255) * sum_t û_t c_tc</c>, the integer sum exact. The error of a block's term is at most 1.5 U / 255 per
/// token (half a byte step times the largest 2-bit code), which is small beside the codes' own rounding of half a
/// step a_g per element. The offsets' sum stays in FP32 (sixteen lanes per head and group, one fused multiply-add
/// per token, reduced by a fixed tree at the end). The same lanes carry each weight's rounding residual
/// e_t = u_t - û_t U / 255 at the middle code m (1.5 for 2-bit codes, 7.5 for 4-bit): sum_t û_t U / 255 c_tc + m sum_t e_t
/// errs by sum_t e_t (c_tc - m), whose part common to a group's channels (the residual times the unsigned codes' mean)
/// is gone; that part was the larger error, and one that an inverse rotation of the values gathers into a few channels.
/// The vector path (AVX-512BW and VBMI) takes four tokens at a time: one byte permute interleaves their rows so
/// each 16-bit word holds a channel's byte for two tokens, shifts and masks split the four 2-bit fields, another
/// permute spreads the head's four weights to the matching bytes, and <c>vpmaddubsw</c> (u8 weight x s8 code,
/// pairs of tokens, at most 2 x 255 x 3 = 1,530) adds into int16 lanes that 16 quads of tokens cannot overflow
/// (24,480 &lt; 32,767). At the end of each block the int16 sums are widened, converted and added to the FP32 output
/// times U / 255. Head dim 32 (8-byte rows) goes eight tokens a step, a token pair per 128-bit lane. Outputs come out
/// in <see cref="ChannelAt"/> order (at head dims that are multiples of 64 the FP32 kernel's
/// <see cref="FusedAttentionKernels.PermutedChannel"/> order: position 64 c + 16 k + j of chunk c holds channel
/// 64 c + 4 j + k; at head dim 32 position 8 k + j holds channel 4 j + k).
/// 4-bit codes take weights up to 127 (<see cref="WeightLevels"/>; pair sums at most 3,810, a block's at most 60,960,
/// read as unsigned words) and split each 64-channel chunk (32 bytes a row) into two 16-byte pieces, one permute each,
/// whose low and high nibbles a mask and a shift take apart (<see cref="SumNibbles"/>).
/// Scalar twin: <see cref="AccumulateScalar"/> (bit-identical: the same byte weights, exact integer sums, and the
/// same float operations in the same order).
/// </summary>
internal static unsafe class Int8ValueKernels
{
    /// <summary>Query heads served per pass over the rows.</summary>
    public const int HeadBlock = 4;

    /// <summary>Tokens per block: one byte scale per head and group, int16 sums widened at its end.</summary>
    public const int TokenBlock = 64;

    /// <summary>Largest number of parameter groups per row.</summary>
    public const int MaxGroups = 16;

    /// <summary>Tokens per vector step.</summary>
    public const int Quad = 4;

    private const int Lanes = 16;

    // 1.5 x 2^23: adding and subtracting it rounds a float of magnitude < 2^22 to an integer (to nearest even).
    private const float RoundShift = 12582912f;
    private const float Log2E = 1.44269504f;
    private const float Ln2Hi = 0.693359375f;
    private const float Ln2Lo = -2.12194440e-4f;

    // The index tables of each (head dim, group channels), built once.
    private static readonly ConcurrentDictionary<(int HeadDim, int GroupChannels, int Bits), IndexTables> Tables = new();

    /// <summary>Whether the vector kernel runs on this CPU (AVX-512F, BW and VBMI).</summary>
    public static bool IsSupported => Avx512F.IsSupported && Avx512BW.IsSupported && Avx512Vbmi.IsSupported;

    /// <summary>
    /// Whether this value layout is handled, per-token groups only. 2-bit codes (whole 4-channel bytes): head dim 32
    /// with one group of 32 (8-byte rows, eight tokens a step), or head dim a multiple of 64 with groups that leave at
    /// most two in any 64-channel chunk (32 channels, or 64 or more). 4-bit codes: head dim 32 or a multiple of 64 with
    /// groups of a multiple of 32 channels (each 16-byte piece of a row in one group). At most <see cref="MaxGroups"/> a row.
    /// </summary>
    public static bool Supports(int bits, int headDim, int groupChannels) => groupChannels > 0 && headDim > 0 && bits switch
    {
        2 => (headDim == 32 && groupChannels == 32)
            || (headDim % 64 == 0 && headDim % groupChannels == 0
                && (groupChannels == 32 || (groupChannels >= 64 && groupChannels % 4 == 0)) && headDim / groupChannels <= MaxGroups),
        4 => (headDim == 32 || headDim % 64 == 0) && groupChannels % 32 == 0 && headDim % groupChannels == 0 && headDim / groupChannels <= MaxGroups,
        _ => false,
    };

    /// <summary>Rows per vector step: 8 for 2-bit codes at head dim 32 (eight 8-byte rows a vector), else <see cref="Quad"/>.</summary>
    public static int TokensPerStep(int headDim, int bits) => headDim == 32 && bits == 2 ? 8 : Quad;

    /// <summary>
    /// The largest byte weight: 255 for 2-bit codes; 127 for 4-bit codes, so that the int16 lanes' pair sums
    /// (2 x 127 x 15 = 3,810) over a block's 16 quads (60,960) stay below 2^16.
    /// </summary>
    public static int WeightLevels(int bits) => bits == 4 ? 127 : 255;

    /// <summary>
    /// The channel whose sum lands at output position <paramref name="position"/>: <see cref="FusedAttentionKernels.PermutedChannel"/>
    /// of the code width (4-bit: position 32 b + 16 k + j holds channel 32 b + 2 j + k at every head dim); for 2-bit codes at
    /// head dim 32, position 8 k + j holds channel 4 j + k.
    /// </summary>
    public static int ChannelAt(int position, int headDim, int bits) =>
        headDim == 32 && bits == 2 ? (4 * (position % 8)) + (position / 8) : FusedAttentionKernels.PermutedChannel(position, bits);

    /// <summary>The table position -> <see cref="ChannelAt"/> for one head.</summary>
    public static int[] PermutationTable(int headDim, int bits) => Enumerable.Range(0, headDim).Select(p => ChannelAt(p, headDim, bits)).ToArray();

    /// <summary>
    /// output[r * hd + position] += sum over the rows of p_rt x_t (the remarks' byte-weight approximation), for r &lt;
    /// <paramref name="nh"/> (taken <see cref="HeadBlock"/> at a time), p_rt =
    /// probs[r * stride + t] &gt;= 0, positions in <see cref="ChannelAt"/> order. The row count must be a multiple of
    /// <see cref="TokensPerStep"/>; the caller sums the last rows another way.
    /// Vector path where <see cref="IsSupported"/>, else <see cref="AccumulateScalar"/>.
    /// </summary>
    public static void Accumulate(in PackedRows rows, float* probs, int stride, int nh, float* output) =>
        Accumulate(rows, probs, stride, nh, output, null, null);

    /// <summary>
    /// The softmax fused in: as <see cref="Accumulate(in PackedRows, float*, int, int, float*)"/> with p_rt =
    /// <see cref="SoftExp(float)"/>(scores[r * stride + t] - max[r]), and sums[r] += the sum of those p_rt (sixteen
    /// lanes in token order, reduced by a fixed tree). The scores are not changed.
    /// </summary>
    public static void AccumulateSoftmax(in PackedRows rows, float* scores, int stride, int nh, float* max, float* sums, float* output)
    {
        ArgumentNullException.ThrowIfNull(max);
        ArgumentNullException.ThrowIfNull(sums);
        Accumulate(rows, scores, stride, nh, output, max, sums);
    }

    /// <summary>Scalar twin of <see cref="AccumulateSoftmax"/>.</summary>
    public static void AccumulateSoftmaxScalar(in PackedRows rows, float* scores, int stride, int nh, float* max, float* sums, float* output)
    {
        ArgumentNullException.ThrowIfNull(max);
        ArgumentNullException.ThrowIfNull(sums);
        AccumulateScalar(rows, scores, stride, nh, output, max, sums);
    }

    /// <summary>
    /// e^x for x &lt;= 0, the exponential of the byte-weight path: x clamped at -87 (results below 2^-125 are not
    /// needed where weights become bytes), n = round(x log2 e), r = x - n ln 2 (two-part constant), e^r by its degree-6
    /// Taylor polynomial (relative error under 5e-7 with the float rounding, tested over [-87, 0]), times 2^n built in the exponent bits.
    /// </summary>
    public static float SoftExp(float x)
    {
        x = MathF.Max(x, -87f);
        float n = MathF.FusedMultiplyAdd(x, Log2E, RoundShift) - RoundShift;
        float r = MathF.FusedMultiplyAdd(-n, Ln2Lo, MathF.FusedMultiplyAdd(-n, Ln2Hi, x));
        float p = MathF.FusedMultiplyAdd(1f / 720, r, 1f / 120);
        p = MathF.FusedMultiplyAdd(p, r, 1f / 24);
        p = MathF.FusedMultiplyAdd(p, r, 1f / 6);
        p = MathF.FusedMultiplyAdd(p, r, 0.5f);
        p = MathF.FusedMultiplyAdd(p, r, 1f);
        p = MathF.FusedMultiplyAdd(p, r, 1f);
        return p * BitConverter.Int32BitsToSingle(((int)n + 127) << 23);
    }

    /// <summary><see cref="SoftExp(float)"/> of sixteen lanes: the same operations, so the same bits.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> SoftExp(Vector512<float> x)
    {
        x = Avx512F.Max(x, Vector512.Create(-87f));
        var shift = Vector512.Create(RoundShift);
        var n = Vector512.FusedMultiplyAdd(x, Vector512.Create(Log2E), shift) - shift;
        var r = Avx512F.FusedMultiplyAddNegated(n, Vector512.Create(Ln2Lo), Avx512F.FusedMultiplyAddNegated(n, Vector512.Create(Ln2Hi), x));
        var p = Vector512.FusedMultiplyAdd(Vector512.Create(1f / 720), r, Vector512.Create(1f / 120));
        p = Vector512.FusedMultiplyAdd(p, r, Vector512.Create(1f / 24));
        p = Vector512.FusedMultiplyAdd(p, r, Vector512.Create(1f / 6));
        p = Vector512.FusedMultiplyAdd(p, r, Vector512.Create(0.5f));
        p = Vector512.FusedMultiplyAdd(p, r, Vector512<float>.One);
        p = Vector512.FusedMultiplyAdd(p, r, Vector512<float>.One);
        return Avx512F.Scale(p, n);
    }

    /// <summary>x = <see cref="SoftExp(float)"/>(x - max) in place for n values, returning their sum (vector and scalar lanes give the same elements).</summary>
    public static float SoftExpSum(float* x, int n, float max)
    {
        int i = 0;
        float sum = 0;
        if (IsSupported)
        {
            var m = Vector512.Create(max);
            var acc = Vector512<float>.Zero;
            for (; i + 16 <= n; i += 16)
            {
                var e = SoftExp(Vector512.Load(x + i) - m);
                e.Store(x + i);
                acc += e;
            }

            sum = Vector512.Sum(acc);
        }

        for (; i < n; i++)
        {
            x[i] = SoftExp(x[i] - max);
            sum += x[i];
        }

        return sum;
    }

    private static void Accumulate(in PackedRows rows, float* probs, int stride, int nh, float* output, float* max, float* sums)
    {
        Check(rows);
        if (!IsSupported)
        {
            AccumulateScalar(rows, probs, stride, nh, output, max, sums);
            return;
        }

        int hd = rows.HeadDim, groups = hd / rows.GroupChannels, pp = rows.Symmetric ? 1 : 2, chunks = (hd + 63) / 64;
        // One 64-byte-aligned scratch area (unaligned 64-byte vectors split cache lines, and a split store does not
        // forward to the next load): planes a and b, the weights, byte weights, offsets' lanes, scales, padded probs.
        int planeFloats = groups * TokenBlock, weightFloats = (HeadBlock * planeFloats) + (2 * HeadBlock * MaxGroups) + (((HeadBlock * MaxGroups) + 4) * Lanes);
        int floats = (2 * planeFloats) + weightFloats + (HeadBlock * groups * Lanes) + (2 * HeadBlock * Lanes) + (HeadBlock * TokenBlock) + hd;
        byte* area = stackalloc byte[(4 * floats) + (HeadBlock * planeFloats) + 64];
        float* aPl = (float*)(((nint)area + 63) & ~(nint)63);
        float* bPl = aPl + planeFloats;
        float* weights = bPl + planeFloats;
        float* offsets = weights + weightFloats;
        float* scales = offsets + (HeadBlock * groups * Lanes);
        float* sumLanes = scales + (HeadBlock * Lanes);
        float* pad = sumLanes + (HeadBlock * Lanes);
        float* scratch = pad + (HeadBlock * TokenBlock);
        byte* uq = (byte*)(scratch + hd);
        int padWords = (TokenBlock * groups * pp) + 32;
        ushort* prmPad = stackalloc ushort[padWords];
        var tables = Tables.GetOrAdd((hd, rows.GroupChannels, rows.Bits), key => new IndexTables(key.HeadDim, key.GroupChannels, key.Bits));
        fixed (byte* codeIdx = tables.Code, weightIdx = tables.Weight)
        fixed (int* chunkGroups = tables.ChunkGroups, positionGroups = tables.PositionGroup)
        {
            AccumulateVector(rows, probs, stride, nh, output, max, sums, sumLanes, aPl, bPl, uq, offsets, scales, weights, pad, scratch, prmPad, padWords, codeIdx, weightIdx, chunkGroups, positionGroups);
        }
    }

    private static void AccumulateVector(in PackedRows rows, float* probs, int stride, int nh, float* output, float* max, float* sums, float* sumLanes, float* aPl, float* bPl, byte* uq, float* offsets, float* scales, float* weights, float* pad, float* scratch, ushort* prmPad, int padWords, byte* codeIdx, byte* weightIdx, int* chunkGroups, int* positionGroups)
    {
        int hd = rows.HeadDim, groups = hd / rows.GroupChannels, pp = rows.Symmetric ? 1 : 2, chunks = (hd + 63) / 64;
        int rowBytes = rows.RowBytes;
        float levels = WeightLevels(rows.Bits);
        for (int h0 = 0; h0 < nh; h0 += HeadBlock)
        {
            int heads = Math.Min(HeadBlock, nh - h0);
            new Span<float>(offsets, HeadBlock * groups * Lanes).Clear();
            new Span<float>(sumLanes, HeadBlock * Lanes).Clear();
            for (int t0 = 0; t0 < rows.Count; t0 += TokenBlock)
            {
                int n = Math.Min(TokenBlock, rows.Count - t0);
                ushort* prm = rows.Params + ((long)t0 * groups * pp);
                if (t0 + TokenBlock < rows.Count)
                {
                    // The next block's codes and parameters, requested now: the weights' preparation reads no rows,
                    // so without this the stream from memory would pause for it every block.
                    Prefetch(rows.Codes + ((long)(t0 + TokenBlock) * rowBytes), Math.Min(TokenBlock, rows.Count - t0 - TokenBlock) * rowBytes);
                    Prefetch((byte*)(prm + (TokenBlock * groups * pp)), Math.Min(TokenBlock, rows.Count - t0 - TokenBlock) * groups * pp * 2);
                }

                if (n < TokenBlock)
                {
                    new Span<ushort>(prmPad, padWords).Clear();
                    new Span<ushort>(prm, n * groups * pp).CopyTo(new Span<ushort>(prmPad, n * groups * pp));
                    prm = prmPad;
                }

                BuildPlanes(prm, groups, rows.Symmetric, rows.SymStep, rows.SymOffset, aPl, bPl);
                QuantizeBlock(probs, stride, h0, heads, t0, n, pad, max, sumLanes, groups, aPl, bPl, offsets, scales, uq, weights, levels);

                byte* block = rows.Codes + ((long)t0 * rowBytes);
                if (hd == 32 && rows.Bits == 2)
                {
                    float* p0 = output + (h0 * hd);
                    SumOctets(block, n, codeIdx, weightIdx, uq, scales, p0, heads > 1 ? p0 + hd : scratch, heads > 2 ? p0 + (2 * hd) : scratch, heads > 3 ? p0 + (3 * hd) : scratch);
                    continue;
                }

                for (int c = 0; c < chunks; c++)
                {
                    float* o0 = output + (h0 * hd) + (c * 64);
                    float* o1 = heads > 1 ? o0 + hd : scratch;
                    float* o2 = heads > 2 ? o0 + (2 * hd) : scratch;
                    float* o3 = heads > 3 ? o0 + (3 * hd) : scratch;
                    if (rows.Bits == 4)
                    {
                        SumNibbles(block, rowBytes, c, n, codeIdx, weightIdx, chunkGroups, uq, groups, scales, o0, o1, o2, o3);
                    }
                    else
                    {
                        SumChunk(block, rowBytes, chunks, c, n, codeIdx, weightIdx, positionGroups, chunkGroups, uq, groups, scales, o0, o1, o2, o3);
                    }
                }
            }

            AddOffsetsVector(hd, groups, positionGroups, offsets, heads, output + (h0 * hd));
            AddSums(sums, h0, heads, sumLanes);
        }
    }

    // sums[h0 + r] += the head's sixteen exponential lanes (softmax mode only).
    private static void AddSums(float* sums, int h0, int heads, float* sumLanes)
    {
        if (sums == null)
        {
            return;
        }

        for (int r = 0; r < heads; r++)
        {
            sums[h0 + r] += Tree16(sumLanes + (r * Lanes));
        }
    }

    /// <summary>Scalar twin of <see cref="Accumulate"/>: the same byte weights and scales, exact integer sums, the same float operations.</summary>
    public static void AccumulateScalar(in PackedRows rows, float* probs, int stride, int nh, float* output) =>
        AccumulateScalar(rows, probs, stride, nh, output, null, null);

    private static void AccumulateScalar(in PackedRows rows, float* probs, int stride, int nh, float* output, float* max, float* sums)
    {
        Check(rows);
        float* sumLanes = stackalloc float[HeadBlock * Lanes];
        int hd = rows.HeadDim, groups = hd / rows.GroupChannels, pp = rows.Symmetric ? 1 : 2;
        float* aPl = stackalloc float[groups * TokenBlock];
        float* bPl = stackalloc float[groups * TokenBlock];
        byte* uq = stackalloc byte[groups * TokenBlock];
        float* offsets = stackalloc float[HeadBlock * groups * Lanes];
        float* p = stackalloc float[TokenBlock];
        float* scale = stackalloc float[groups];
        int rowBytes = rows.RowBytes, perByte = 8 / rows.Bits, mask = (1 << rows.Bits) - 1;
        for (int h0 = 0; h0 < nh; h0 += HeadBlock)
        {
            int heads = Math.Min(HeadBlock, nh - h0);
            new Span<float>(offsets, HeadBlock * groups * Lanes).Clear();
            new Span<float>(sumLanes, HeadBlock * Lanes).Clear();
            for (int t0 = 0; t0 < rows.Count; t0 += TokenBlock)
            {
                int n = Math.Min(TokenBlock, rows.Count - t0);
                for (int g = 0; g < groups; g++)
                {
                    for (int t = 0; t < TokenBlock; t++)
                    {
                        float a = 0, b = 0;
                        if (t < n)
                        {
                            ushort* w = rows.Params + ((((long)(t0 + t) * groups) + g) * pp);
                            if ((w[0] & 0x8000) != 0)
                            {
                                throw NegativeStep();
                            }

                            if (rows.Symmetric)
                            {
                                float s = HalfBits.ToSingle(w[0]);
                                a = s * rows.SymStep;
                                b = s * rows.SymOffset;
                            }
                            else
                            {
                                a = HalfBits.ToSingle(w[0]);
                                b = HalfBits.ToSingle(w[1]);
                            }
                        }

                        aPl[(g * TokenBlock) + t] = a;
                        bPl[(g * TokenBlock) + t] = b;
                    }
                }

                for (int r = 0; r < heads; r++)
                {
                    for (int t = 0; t < TokenBlock; t++)
                    {
                        float x = t < n ? probs[((h0 + r) * stride) + t0 + t] : 0f;
                        if (max != null)
                        {
                            x = t < n ? SoftExp(x - max[h0 + r]) : 0f;
                            sumLanes[(r * Lanes) + (t % Lanes)] += x;
                        }

                        p[t] = x;
                    }

                    for (int g = 0; g < groups; g++)
                    {
                        float* a = aPl + (g * TokenBlock), b = bPl + (g * TokenBlock);
                        float* lanes = offsets + (((r * groups) + g) * Lanes);
                        float top = 0;
                        for (int t = 0; t < TokenBlock; t++)
                        {
                            top = MathF.Max(top, p[t] * a[t]);
                            lanes[t % Lanes] = MathF.FusedMultiplyAdd(p[t], b[t], lanes[t % Lanes]);
                        }

                        (scale[g], float inv) = ScaleOf(top, WeightLevels(rows.Bits));
                        float center = CodeCenter(rows.Bits);
                        for (int t = 0; t < TokenBlock; t++)
                        {
                            float u = p[t] * a[t];
                            int q = Math.Clamp((int)MathF.Round(u * inv), 0, 255);
                            uq[(g * TokenBlock) + t] = (byte)q;

                            // the rounding's residual times the middle code, so the codes' errors lose their common part
                            lanes[t % Lanes] = MathF.FusedMultiplyAdd(center, MathF.FusedMultiplyAdd(-(float)q, scale[g], u), lanes[t % Lanes]);
                        }
                    }

                    float* o = output + ((h0 + r) * hd);
                    for (int pos = 0; pos < hd; pos++)
                    {
                        int ch = ChannelAt(pos, hd, rows.Bits);
                        int g = ch / rows.GroupChannels;
                        int sum = 0;
                        for (int t = 0; t < n; t++)
                        {
                            byte code = rows.Codes[((long)(t0 + t) * rowBytes) + (ch / perByte)];
                            sum += uq[(g * TokenBlock) + t] * ((code >> (rows.Bits * (ch % perByte))) & mask);
                        }

                        o[pos] = MathF.FusedMultiplyAdd(sum, scale[g], o[pos]);
                    }
                }
            }

            AddOffsets(rows, offsets, heads, output + (h0 * hd));
            AddSums(sums, h0, heads, sumLanes);
        }
    }

    /// <summary>
    /// The bound on |kernel - exact| for output (r, channel) of <see cref="Accumulate"/> over these rows: per block of
    /// <see cref="TokenBlock"/> tokens, (2^bits - 1) U / (2 L) per token (1.5 U / 255 for 2-bit codes, 7.5 U / 127 for
    /// 4-bit) with U the block's largest p_t a_tg and L = <see cref="WeightLevels"/>, plus
    /// <paramref name="relative"/> times the sum of |p_t x_tc| for the float arithmetic.
    /// </summary>
    public static double ErrorBound(in PackedRows rows, float* probs, int stride, int r, int channel, double relative)
    {
        int groups = rows.HeadDim / rows.GroupChannels, pp = rows.Symmetric ? 1 : 2, g = channel / rows.GroupChannels;
        double bound = 0;
        float* x = stackalloc float[rows.HeadDim];
        for (int t0 = 0; t0 < rows.Count; t0 += TokenBlock)
        {
            int n = Math.Min(TokenBlock, rows.Count - t0);
            double max = 0;
            for (int t = t0; t < t0 + n; t++)
            {
                ushort* w = rows.Params + ((((long)t * groups) + g) * pp);
                float a = rows.Symmetric ? HalfBits.ToSingle(w[0]) * rows.SymStep : HalfBits.ToSingle(w[0]);
                max = Math.Max(max, probs[(r * stride) + t] * (double)a);
                FusedAttentionKernels.DequantizeScalar(rows, t, x);
                bound += relative * Math.Abs(probs[(r * stride) + t] * (double)x[channel]);
            }

            bound += 0.5 * ((1 << rows.Bits) - 1) * max / WeightLevels(rows.Bits) * n;
        }

        return bound;
    }

    private static void Check(in PackedRows rows)
    {
        if (!Supports(rows.Bits, rows.HeadDim, rows.GroupChannels) || rows.Count % TokensPerStep(rows.HeadDim, rows.Bits) != 0)
        {
            throw new ArgumentException($"int8 value sums need 2- or 4-bit rows of whole steps (4 rows; 8 for 2-bit rows at head dim 32) and a supported group shape; got {rows.Bits} bits, head dim {rows.HeadDim}, groups of {rows.GroupChannels}, {rows.Count} rows");
        }
    }

    // U / L and L / U (0 and 0 for a block whose weights are all zero).
    // The middle of the codes (1.5 for 2-bit, 7.5 for 4-bit), by which the byte weights' rounding residuals are carried.
    private static float CodeCenter(int bits) => ((1 << bits) - 1) / 2f;

    private static (float Scale, float Inverse) ScaleOf(float max, float levels) => max > 0 ? (max / levels, levels / max) : (0f, 0f);

    // The fixed order in which both twins reduce the sixteen offset lanes of a head and group.
    private static float Tree16(float* l)
    {
        float* s = stackalloc float[8];
        for (int i = 0; i < 8; i++)
        {
            s[i] = l[i] + l[i + 8];
        }

        for (int i = 0; i < 4; i++)
        {
            s[i] += s[i + 4];
        }

        return (s[0] + s[2]) + (s[1] + s[3]);
    }

    // output[r][position] += the group's offset sum, for each position whose channel lies in that group.
    private static void AddOffsets(in PackedRows rows, float* offsets, int heads, float* output)
    {
        int hd = rows.HeadDim, groups = hd / rows.GroupChannels;
        float* sums = stackalloc float[groups];
        for (int r = 0; r < heads; r++)
        {
            for (int g = 0; g < groups; g++)
            {
                sums[g] = Tree16(offsets + (((r * groups) + g) * Lanes));
            }

            for (int pos = 0; pos < hd; pos++)
            {
                output[(r * hd) + pos] += sums[ChannelAt(pos, hd, rows.Bits) / rows.GroupChannels];
            }
        }
    }

    // The block's probabilities of head h0 + r: straight from probs for a whole block, else zero-padded (and zeros for
    // a head beyond the last).
    private static float* BlockProbs(float* probs, int stride, int h0, int r, int heads, int t0, int n, float* pad)
    {
        float* dst = pad + (r * TokenBlock);
        if (r < heads && n == TokenBlock)
        {
            return probs + ((h0 + r) * stride) + t0;
        }

        new Span<float>(dst, TokenBlock).Clear();
        if (r < heads)
        {
            new Span<float>(probs + ((h0 + r) * stride) + t0, n).CopyTo(new Span<float>(dst, n));
        }

        return dst;
    }

    // Softmax mode: the block's weights of head h0 + r, SoftExp(score - max) for its n tokens and 0 after them (and 0
    // for a head beyond the last), in four registers; the head's sixteen sum lanes += them in token order. A short
    // block's scores are read from a zero-padded copy in pad.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void BlockExp(float* scores, int stride, int h0, int r, int heads, int t0, int n, float* pad, float* max, float* sumLanes, out Vector512<float> p0, out Vector512<float> p1, out Vector512<float> p2, out Vector512<float> p3)
    {
        if (r >= heads)
        {
            p0 = p1 = p2 = p3 = Vector512<float>.Zero;
            return;
        }

        float* src = scores + ((h0 + r) * stride) + t0;
        if (n < TokenBlock)
        {
            float* dst = pad + (r * TokenBlock);
            new Span<float>(dst, TokenBlock).Clear();
            new Span<float>(src, n).CopyTo(new Span<float>(dst, n));
            src = dst;
        }

        var top = Vector512.Create(max[h0 + r]);
        p0 = Exp16(src, 0, n, top);
        p1 = Exp16(src, 16, n, top);
        p2 = Exp16(src, 32, n, top);
        p3 = Exp16(src, 48, n, top);
        float* lanes = sumLanes + (r * Lanes);
        (Vector512.Load(lanes) + p0 + p1 + p2 + p3).Store(lanes);
    }

    // SoftExp(src[i..i+15] - top), lanes at or past n zero.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Exp16(float* src, int i, int n, Vector512<float> top)
    {
        var e = SoftExp(Vector512.Load(src + i) - top);
        if (n < TokenBlock)
        {
            var lane = Vector512.Create(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
            e = Vector512.ConditionalSelect(Vector512.LessThan(lane + Vector512.Create(i), Vector512.Create(n)).AsSingle(), e, Vector512<float>.Zero);
        }

        return e;
    }

    // output[r][position] += the group's offset sum (vector path: per sixteen positions one permute of the sums).
    private static void AddOffsetsVector(int hd, int groups, int* positionGroups, float* offsets, int heads, float* output)
    {
        float* sums = stackalloc float[Lanes];
        for (int r = 0; r < heads; r++)
        {
            for (int g = 0; g < groups; g++)
            {
                sums[g] = Tree16(offsets + (((r * groups) + g) * Lanes));
            }

            var sv = Vector512.Load(sums);
            float* o = output + (r * hd);
            for (int k = 0; k < hd; k += Lanes)
            {
                (Vector512.Load(o + k) + Avx512F.PermuteVar16x32(sv, Vector512.Load(positionGroups + k))).Store(o + k);
            }
        }
    }

    // a and b of each group for the block's 64 tokens as float planes [group][token].
    private static void BuildPlanes(ushort* prm, int groups, bool symmetric, float symStep, float symOffset, float* aPl, float* bPl)
    {
        var lane = Vector512.Create(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        var signs = Vector512<int>.Zero;
        for (int g = 0; g < groups; g++)
        {
            for (int i = 0; i < TokenBlock; i += Lanes)
            {
                Vector512<int> h;
                if (symmetric)
                {
                    h = Gather16((int*)prm, ((lane + Vector512.Create(i)) * groups) + Vector512.Create(g), words: true);
                    signs |= h;
                    var s = Half16(Avx512F.ShiftRightArithmetic(Avx512F.ShiftLeftLogical(h, 16), 16));
                    (s * Vector512.Create(symStep)).Store(aPl + (g * TokenBlock) + i);
                    (s * Vector512.Create(symOffset)).Store(bPl + (g * TokenBlock) + i);
                    continue;
                }

                int* dw = (int*)prm;
                if (groups == 1)
                {
                    h = Vector512.Load(dw + i);
                }
                else if (groups == 2)
                {
                    h = Avx512F.PermuteVar16x32x2(Vector512.Load(dw + (2 * i)), (lane * 2) + Vector512.Create(g), Vector512.Load(dw + (2 * i) + 16));
                }
                else if (groups == 4)
                {
                    // Tokens 0-7 and 8-15 each from a two-register permute (32 dwords = 8 tokens x 4 groups).
                    var pick = (lane * 4) + Vector512.Create(g);
                    int* d = dw + (4 * i);
                    var lo = Avx512F.PermuteVar16x32x2(Vector512.Load(d), pick, Vector512.Load(d + 16));
                    var hi = Avx512F.PermuteVar16x32x2(Vector512.Load(d + 32), pick, Vector512.Load(d + 48));
                    h = Vector512.Create(lo.GetLower(), hi.GetLower());
                }
                else
                {
                    h = Gather16(dw, ((lane + Vector512.Create(i)) * groups) + Vector512.Create(g), words: false);
                }

                signs |= h;
                Half16(Avx512F.ShiftRightArithmetic(Avx512F.ShiftLeftLogical(h, 16), 16)).Store(aPl + (g * TokenBlock) + i);
                Half16(Avx512F.ShiftRightArithmetic(h, 16)).Store(bPl + (g * TokenBlock) + i);
            }
        }

        if (!Vector512.EqualsAll(signs & Vector512.Create(0x8000), Vector512<int>.Zero))
        {
            throw NegativeStep();
        }
    }

    private static ArgumentException NegativeStep() =>
        new("int8 value sums need steps >= 0 (as the quantizers make them): a row has a step with its sign bit set");

    private static void Prefetch(byte* p, int bytes)
    {
        for (int i = 0; i < bytes; i += 64)
        {
            Sse.Prefetch0(p + i);
        }
    }

    // Sixteen dwords at byte offsets 2 * index (words) or 4 * index (two AVX2 gathers: .NET 10 has no 512-bit gather).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<int> Gather16(int* b, Vector512<int> index, bool words) => words
        ? Vector512.Create(Avx2.GatherVector256(b, index.GetLower(), 2), Avx2.GatherVector256(b, index.GetUpper(), 2))
        : Vector512.Create(Avx2.GatherVector256(b, index.GetLower(), 4), Avx2.GatherVector256(b, index.GetUpper(), 4));

    // Sixteen finite halves, sign-extended into int32 lanes, to floats (exact: exponent and mantissa shifted into
    // place and rebiased by 2^112; subnormals included).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Half16(Vector512<int> h) =>
        (Avx512F.ShiftLeftLogical(h, 13) & Vector512.Create(unchecked((int)0x8FFFE000))).AsSingle() * Vector512.Create(HalfBits.ExponentRebias);

    // The block's byte weights of four heads: per head and group the weights u = p a (kept in weights), the lane-wise
    // maximum of u (kept in maxLanes) and the offsets' lanes += p b; then per eight pairs their largest values U by one
    // transposed reduction (Max8), U / L and L / U (L = WeightLevels) by one vector division each (scales[r * groups + g]);
    // then the bytes round(u * L / U) into uq[r][group][token]. In softmax mode the exponentials come in registers
    // (BlockExp); probabilities are read from probs (BlockProbs, a short block through the pad).
    private static void QuantizeBlock(float* probs, int stride, int h0, int heads, int t0, int n, float* pad, float* softmaxMax, float* sumLanes, int groups, float* aPl, float* bPl, float* offsets, float* scales, byte* uq, float* weights, float levels)
    {
        int pairs = HeadBlock * groups;
        float* inverse = weights + (pairs * TokenBlock) + (HeadBlock * MaxGroups);
        float* maxLanes = inverse + (HeadBlock * MaxGroups);
        for (int r = 0; r < HeadBlock; r++)
        {
            Vector512<float> p0, p1, p2, p3;
            if (softmaxMax != null)
            {
                BlockExp(probs, stride, h0, r, heads, t0, n, pad, softmaxMax, sumLanes, out p0, out p1, out p2, out p3);
            }
            else
            {
                float* p = BlockProbs(probs, stride, h0, r, heads, t0, n, pad);
                p0 = Vector512.Load(p);
                p1 = Vector512.Load(p + 16);
                p2 = Vector512.Load(p + 32);
                p3 = Vector512.Load(p + 48);
            }

            for (int g = 0; g < groups; g++)
            {
                float* a = aPl + (g * TokenBlock), b = bPl + (g * TokenBlock);
                int pair = (r * groups) + g;
                float* u = weights + (pair * TokenBlock);
                var u0 = p0 * Vector512.Load(a);
                var u1 = p1 * Vector512.Load(a + 16);
                var u2 = p2 * Vector512.Load(a + 32);
                var u3 = p3 * Vector512.Load(a + 48);
                u0.Store(u);
                u1.Store(u + 16);
                u2.Store(u + 32);
                u3.Store(u + 48);
                float* lanes = offsets + (pair * Lanes);
                var o = Vector512.Load(lanes);
                o = Vector512.FusedMultiplyAdd(p0, Vector512.Load(b), o);
                o = Vector512.FusedMultiplyAdd(p1, Vector512.Load(b + 16), o);
                o = Vector512.FusedMultiplyAdd(p2, Vector512.Load(b + 32), o);
                o = Vector512.FusedMultiplyAdd(p3, Vector512.Load(b + 48), o);
                o.Store(lanes);

                // The weights are >= 0 and not NaN, so the plain vmaxps order does not matter.
                Avx512F.Max(Avx512F.Max(u0, u1), Avx512F.Max(u2, u3)).Store(maxLanes + (pair * Lanes));
            }
        }

        if (pairs % 8 != 0)
        {
            // An odd number of groups leaves four pairs over; the reduction reads eight vectors, the last four zero.
            new Span<float>(maxLanes + (pairs * Lanes), 4 * Lanes).Clear();
        }

        var l8 = Vector256.Create(levels);
        var center = Vector512.Create(levels == 127 ? CodeCenter(4) : CodeCenter(2));
        for (int i = 0; i < pairs; i += 8)
        {
            var m = Max8(maxLanes + (i * Lanes));
            var positive = Vector256.GreaterThan(m, Vector256<float>.Zero);
            Vector256.ConditionalSelect(positive, m / l8, Vector256<float>.Zero).Store(scales + i);
            Vector256.ConditionalSelect(positive, l8 / m, Vector256<float>.Zero).Store(inverse + i);
        }

        // Two saturating packs (int32 -> uint16 -> uint8, exact for 0..255) leave dword k of 128-bit block b holding the
        // tokens of source vector k, block b; one dword permute puts them in order.
        var order = Vector512.Create(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
        for (int i = 0; i < pairs; i++)
        {
            var inv = Vector512.Create(inverse[i]);
            float* u = weights + (i * TokenBlock);
            var u0 = Vector512.Load(u);
            var u1 = Vector512.Load(u + 16);
            var u2 = Vector512.Load(u + 32);
            var u3 = Vector512.Load(u + 48);
            var q0 = Avx512F.ConvertToVector512Int32(u0 * inv);
            var q1 = Avx512F.ConvertToVector512Int32(u1 * inv);
            var q2 = Avx512F.ConvertToVector512Int32(u2 * inv);
            var q3 = Avx512F.ConvertToVector512Int32(u3 * inv);
            var w01 = Avx512BW.PackUnsignedSaturate(q0, q1);
            var w23 = Avx512BW.PackUnsignedSaturate(q2, q3);
            Avx512F.PermuteVar16x32(Avx512BW.PackUnsignedSaturate(w01.AsInt16(), w23.AsInt16()).AsInt32(), order).Store((int*)(uq + (i * TokenBlock)));

            // The residuals u - q U / L times the middle code into the offsets' lanes (tokens 16k + j in lane j, k in order, as
            // the scalar twin's t % 16): the integer sums then err by sum residual x (code - middle), with no part common to
            // the group's channels. (u * L / U <= L, so the bytes never saturate and q is the byte.)
            var sc = Vector512.Create(scales[i]);
            float* lanes = offsets + (i * Lanes);
            var o = Vector512.Load(lanes);
            o = Vector512.FusedMultiplyAdd(center, Vector512.FusedMultiplyAdd(-Avx512F.ConvertToVector512Single(q0), sc, u0), o);
            o = Vector512.FusedMultiplyAdd(center, Vector512.FusedMultiplyAdd(-Avx512F.ConvertToVector512Single(q1), sc, u1), o);
            o = Vector512.FusedMultiplyAdd(center, Vector512.FusedMultiplyAdd(-Avx512F.ConvertToVector512Single(q2), sc, u2), o);
            o = Vector512.FusedMultiplyAdd(center, Vector512.FusedMultiplyAdd(-Avx512F.ConvertToVector512Single(q3), sc, u3), o);
            o.Store(lanes);
        }
    }

    /// <summary>
    /// The largest lane of each of the eight 16-lane vectors at <paramref name="v"/> (v + 16 k), in lane k: a transposed
    /// reduction (three halving steps that each pair two vectors' halves in one vector, then one within 64-bit pairs): 24
    /// shuffles and maxima for the eight, where eight horizontal reductions take 64. Scalar twin: <see cref="Max8Scalar"/>.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Max8(float* v)
    {
        // x_j: lanes 0-7 the max of v_2j's halves, 8-15 of v_2j+1's.
        var x0 = MaxHalves(Vector512.Load(v), Vector512.Load(v + 16));
        var x1 = MaxHalves(Vector512.Load(v + 32), Vector512.Load(v + 48));
        var x2 = MaxHalves(Vector512.Load(v + 64), Vector512.Load(v + 80));
        var x3 = MaxHalves(Vector512.Load(v + 96), Vector512.Load(v + 112));

        // y0: 128-bit block k four lanes of v_k; y1 the same for v_4+k.
        var y0 = Avx512F.Max(Avx512F.Shuffle4x128(x0, x1, 0b_10_00_10_00), Avx512F.Shuffle4x128(x0, x1, 0b_11_01_11_01));
        var y1 = Avx512F.Max(Avx512F.Shuffle4x128(x2, x3, 0b_10_00_10_00), Avx512F.Shuffle4x128(x2, x3, 0b_11_01_11_01));

        // Block k: two lanes of v_k, two of v_4+k; then each lane the max of its 64-bit pair: lane 4k = max v_k, 4k + 2 = max v_4+k.
        var z = Avx512F.Max(Avx512F.Shuffle(y0, y1, 0b_01_00_01_00), Avx512F.Shuffle(y0, y1, 0b_11_10_11_10));
        z = Avx512F.Max(z, Avx512F.Permute4x32(z, 0b_10_11_00_01));
        return Avx512F.PermuteVar16x32(z, Vector512.Create(0, 4, 8, 12, 2, 6, 10, 14, 0, 0, 0, 0, 0, 0, 0, 0)).GetLower();
    }

    /// <summary>Scalar twin of <see cref="Max8"/>.</summary>
    public static void Max8Scalar(float* v, float* result)
    {
        for (int k = 0; k < 8; k++)
        {
            float m = v[16 * k];
            for (int l = 1; l < 16; l++)
            {
                m = MathF.Max(m, v[(16 * k) + l]);
            }

            result[k] = m;
        }
    }

    // Lanes 0-7: the lane-wise max of a's two 256-bit halves; lanes 8-15: of b's.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> MaxHalves(Vector512<float> a, Vector512<float> b) =>
        Avx512F.Max(Avx512F.Shuffle4x128(a, b, 0b_01_00_01_00), Avx512F.Shuffle4x128(a, b, 0b_11_10_11_10));

    // One 64-channel chunk of the block for four heads: int16 sums of byte weight x code over the block's quads, then
    // widened and added to the outputs times the head's group scales.
    private static void SumChunk(byte* block, int rowBytes, int chunks, int c, int n, byte* codeIdx, byte* weightIdx, int* positionGroups, int* chunkGroups, byte* uq, int groups, float* scales, float* o0, float* o1, float* o2, float* o3)
    {
        var ci = Vector512.Load(codeIdx + (c * 64));
        var wi = Vector512.Load(weightIdx + (c * 64));
        var m3 = Vector512.Create((byte)3);
        var four = Vector512.Create((byte)Quad);
        int planeBytes = groups * TokenBlock;
        byte* wA = uq + (chunkGroups[2 * c] * TokenBlock);
        byte* wB = uq + (chunkGroups[(2 * c) + 1] * TokenBlock);
        Vector512<short> a00 = default, a01 = default, a02 = default, a03 = default;
        Vector512<short> a10 = default, a11 = default, a12 = default, a13 = default;
        Vector512<short> a20 = default, a21 = default, a22 = default, a23 = default;
        Vector512<short> a30 = default, a31 = default, a32 = default, a33 = default;
        byte* row = block + (c * 16);
        for (int t = 0; t < n; t += Quad, row += Quad * rowBytes)
        {
            Vector512<byte> x;
            if (chunks == 1)
            {
                x = Avx512Vbmi.PermuteVar64x8(Vector512.Load(row), ci);
            }
            else if (chunks == 2)
            {
                byte* r0 = row - (c * 16);
                x = Avx512Vbmi.PermuteVar64x8x2(Vector512.Load(r0), ci, Vector512.Load(r0 + (2 * rowBytes)));
            }
            else
            {
                var lo = Vector256.Create(Vector128.Load(row), Vector128.Load(row + rowBytes));
                var hi = Vector256.Create(Vector128.Load(row + (2 * rowBytes)), Vector128.Load(row + (3 * rowBytes)));
                x = Avx512Vbmi.PermuteVar64x8(Vector512.Create(lo, hi), ci);
            }

            var f0 = (x & m3).AsSByte();
            var f1 = (Avx512BW.ShiftRightLogical(x.AsUInt16(), 2).AsByte() & m3).AsSByte();
            var f2 = (Avx512BW.ShiftRightLogical(x.AsUInt16(), 4).AsByte() & m3).AsSByte();
            var f3 = (Avx512BW.ShiftRightLogical(x.AsUInt16(), 6).AsByte() & m3).AsSByte();
            var w = Avx512Vbmi.PermuteVar64x8x2(Vector512.Load(wA), wi, Vector512.Load(wB));
            a00 += Avx512BW.MultiplyAddAdjacent(w, f0);
            a01 += Avx512BW.MultiplyAddAdjacent(w, f1);
            a02 += Avx512BW.MultiplyAddAdjacent(w, f2);
            a03 += Avx512BW.MultiplyAddAdjacent(w, f3);
            w = Avx512Vbmi.PermuteVar64x8x2(Vector512.Load(wA + planeBytes), wi, Vector512.Load(wB + planeBytes));
            a10 += Avx512BW.MultiplyAddAdjacent(w, f0);
            a11 += Avx512BW.MultiplyAddAdjacent(w, f1);
            a12 += Avx512BW.MultiplyAddAdjacent(w, f2);
            a13 += Avx512BW.MultiplyAddAdjacent(w, f3);
            w = Avx512Vbmi.PermuteVar64x8x2(Vector512.Load(wA + (2 * planeBytes)), wi, Vector512.Load(wB + (2 * planeBytes)));
            a20 += Avx512BW.MultiplyAddAdjacent(w, f0);
            a21 += Avx512BW.MultiplyAddAdjacent(w, f1);
            a22 += Avx512BW.MultiplyAddAdjacent(w, f2);
            a23 += Avx512BW.MultiplyAddAdjacent(w, f3);
            w = Avx512Vbmi.PermuteVar64x8x2(Vector512.Load(wA + (3 * planeBytes)), wi, Vector512.Load(wB + (3 * planeBytes)));
            a30 += Avx512BW.MultiplyAddAdjacent(w, f0);
            a31 += Avx512BW.MultiplyAddAdjacent(w, f1);
            a32 += Avx512BW.MultiplyAddAdjacent(w, f2);
            a33 += Avx512BW.MultiplyAddAdjacent(w, f3);
            wi += four;
        }

        // Position 64 c + j (j < 16) holds channel 64 c + 4 j, so the chunk's first sixteen positions give every lane's group.
        var gi = Vector512.Load(positionGroups + (c * 64));
        Flush(o0, Avx512F.PermuteVar16x32(Vector512.Load(scales), gi), a00, a01, a02, a03);
        Flush(o1, Avx512F.PermuteVar16x32(Vector512.Load(scales + groups), gi), a10, a11, a12, a13);
        Flush(o2, Avx512F.PermuteVar16x32(Vector512.Load(scales + (2 * groups)), gi), a20, a21, a22, a23);
        Flush(o3, Avx512F.PermuteVar16x32(Vector512.Load(scales + (3 * groups)), gi), a30, a31, a32, a33);
    }

    // 4-bit codes, one 64-channel chunk (32 bytes a row; the whole 16-byte row at head dim 32) of the block for four
    // heads: per quad two byte permutes interleave the two 16-byte pieces of four rows (word j of the lower half = byte
    // j of tokens 0 and 1, of the upper half tokens 2 and 3), a mask and a shift split the nibbles, one permute per head
    // and group spreads the quad's weights, and int16 sums (below 2^16, see WeightLevels) are widened at the end.
    private static void SumNibbles(byte* block, int rowBytes, int c, int n, byte* codeIdx, byte* weightIdx, int* chunkGroups, byte* uq, int groups, float* scales, float* o0, float* o1, float* o2, float* o3)
    {
        if (rowBytes == 16)
        {
            SumNibbleRows16(block, n, codeIdx, weightIdx, uq, scales, o0, o1, o2, o3);
            return;
        }

        var c0 = Vector512.Load(codeIdx);
        var c1 = Vector512.Load(codeIdx + 64);
        var wi = Vector512.Load(weightIdx);
        var m15 = Vector512.Create((byte)15);
        var four = Vector512.Create((byte)Quad);
        int gA = chunkGroups[2 * c], gB = chunkGroups[(2 * c) + 1], planeBytes = groups * TokenBlock;
        bool one = gA == gB;
        byte* wA = uq + (gA * TokenBlock);
        byte* wB = uq + (gB * TokenBlock);
        Vector512<short> a00 = default, a01 = default, a02 = default, a03 = default;
        Vector512<short> a10 = default, a11 = default, a12 = default, a13 = default;
        Vector512<short> a20 = default, a21 = default, a22 = default, a23 = default;
        Vector512<short> a30 = default, a31 = default, a32 = default, a33 = default;
        byte* row = block + (c * 32);
        for (int t = 0; t < n; t += Quad, row += Quad * rowBytes)
        {
            Vector512<byte> v0, v1;
            if (rowBytes == 32)
            {
                v0 = Vector512.Load(row);
                v1 = Vector512.Load(row + 64);
            }
            else
            {
                v0 = Join(Vector256.Load(row), Vector256.Load(row + rowBytes));
                v1 = Join(Vector256.Load(row + (2 * rowBytes)), Vector256.Load(row + (3 * rowBytes)));
            }

            var x0 = Avx512Vbmi.PermuteVar64x8x2(v0, c0, v1);
            var x1 = Avx512Vbmi.PermuteVar64x8x2(v0, c1, v1);

            var f0 = (x0 & m15).AsSByte();
            var f1 = (Avx512BW.ShiftRightLogical(x0.AsUInt16(), 4).AsByte() & m15).AsSByte();
            var f2 = (x1 & m15).AsSByte();
            var f3 = (Avx512BW.ShiftRightLogical(x1.AsUInt16(), 4).AsByte() & m15).AsSByte();
            var w = Avx512Vbmi.PermuteVar64x8(Vector512.Load(wA), wi);
            var v = one ? w : Avx512Vbmi.PermuteVar64x8(Vector512.Load(wB), wi);
            a00 += Avx512BW.MultiplyAddAdjacent(w, f0);
            a01 += Avx512BW.MultiplyAddAdjacent(w, f1);
            a02 += Avx512BW.MultiplyAddAdjacent(v, f2);
            a03 += Avx512BW.MultiplyAddAdjacent(v, f3);
            w = Avx512Vbmi.PermuteVar64x8(Vector512.Load(wA + planeBytes), wi);
            v = one ? w : Avx512Vbmi.PermuteVar64x8(Vector512.Load(wB + planeBytes), wi);
            a10 += Avx512BW.MultiplyAddAdjacent(w, f0);
            a11 += Avx512BW.MultiplyAddAdjacent(w, f1);
            a12 += Avx512BW.MultiplyAddAdjacent(v, f2);
            a13 += Avx512BW.MultiplyAddAdjacent(v, f3);
            w = Avx512Vbmi.PermuteVar64x8(Vector512.Load(wA + (2 * planeBytes)), wi);
            v = one ? w : Avx512Vbmi.PermuteVar64x8(Vector512.Load(wB + (2 * planeBytes)), wi);
            a20 += Avx512BW.MultiplyAddAdjacent(w, f0);
            a21 += Avx512BW.MultiplyAddAdjacent(w, f1);
            a22 += Avx512BW.MultiplyAddAdjacent(v, f2);
            a23 += Avx512BW.MultiplyAddAdjacent(v, f3);
            w = Avx512Vbmi.PermuteVar64x8(Vector512.Load(wA + (3 * planeBytes)), wi);
            v = one ? w : Avx512Vbmi.PermuteVar64x8(Vector512.Load(wB + (3 * planeBytes)), wi);
            a30 += Avx512BW.MultiplyAddAdjacent(w, f0);
            a31 += Avx512BW.MultiplyAddAdjacent(w, f1);
            a32 += Avx512BW.MultiplyAddAdjacent(v, f2);
            a33 += Avx512BW.MultiplyAddAdjacent(v, f3);
            wi += four;
        }

        FlushNibbles(o0, scales[gA], scales[gB], a00, a01, a02, a03);
        FlushNibbles(o1, scales[groups + gA], scales[groups + gB], a10, a11, a12, a13);
        FlushNibbles(o2, scales[(2 * groups) + gA], scales[(2 * groups) + gB], a20, a21, a22, a23);
        FlushNibbles(o3, scales[(3 * groups) + gA], scales[(3 * groups) + gB], a30, a31, a32, a33);
    }

    // Head dim 32, 4-bit codes: 16-byte rows in one group, so four rows are one vector, one byte permute interleaves
    // them as in SumNibbles, and each head takes one weight permute and two multiply-adds a quad.
    private static void SumNibbleRows16(byte* block, int n, byte* codeIdx, byte* weightIdx, byte* uq, float* scales, float* o0, float* o1, float* o2, float* o3)
    {
        var ci = Vector512.Load(codeIdx);
        var wi = Vector512.Load(weightIdx);
        var m15 = Vector512.Create((byte)15);
        var four = Vector512.Create((byte)Quad);
        Vector512<short> a00 = default, a01 = default, a10 = default, a11 = default;
        Vector512<short> a20 = default, a21 = default, a30 = default, a31 = default;
        for (int t = 0; t < n; t += Quad)
        {
            var x = Avx512Vbmi.PermuteVar64x8(Vector512.Load(block + (t * 16)), ci);
            var f0 = (x & m15).AsSByte();
            var f1 = (Avx512BW.ShiftRightLogical(x.AsUInt16(), 4).AsByte() & m15).AsSByte();
            var w = Avx512Vbmi.PermuteVar64x8(Vector512.Load(uq), wi);
            a00 += Avx512BW.MultiplyAddAdjacent(w, f0);
            a01 += Avx512BW.MultiplyAddAdjacent(w, f1);
            w = Avx512Vbmi.PermuteVar64x8(Vector512.Load(uq + TokenBlock), wi);
            a10 += Avx512BW.MultiplyAddAdjacent(w, f0);
            a11 += Avx512BW.MultiplyAddAdjacent(w, f1);
            w = Avx512Vbmi.PermuteVar64x8(Vector512.Load(uq + (2 * TokenBlock)), wi);
            a20 += Avx512BW.MultiplyAddAdjacent(w, f0);
            a21 += Avx512BW.MultiplyAddAdjacent(w, f1);
            w = Avx512Vbmi.PermuteVar64x8(Vector512.Load(uq + (3 * TokenBlock)), wi);
            a30 += Avx512BW.MultiplyAddAdjacent(w, f0);
            a31 += Avx512BW.MultiplyAddAdjacent(w, f1);
            wi += four;
        }

        FlushPiece(o0, scales[0], a00, a01);
        FlushPiece(o1, scales[1], a10, a11);
        FlushPiece(o2, scales[2], a20, a21);
        FlushPiece(o3, scales[3], a30, a31);
    }

    // Positions 0-31 (the first 16-byte piece: low nibbles, then high) times the first group's scale, 32-63 (the
    // second piece) times the second's.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void FlushNibbles(float* o, float scaleA, float scaleB, Vector512<short> s0, Vector512<short> s1, Vector512<short> s2, Vector512<short> s3)
    {
        FlushPiece(o, scaleA, s0, s1);
        FlushPiece(o + 32, scaleB, s2, s3);
    }

    // One 16-byte piece's 32 positions: its low nibbles' sums, then its high nibbles', times the group's scale.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void FlushPiece(float* o, float scale, Vector512<short> low, Vector512<short> high)
    {
        var s = Vector512.Create(scale);
        Flush(o, s, low);
        Flush(o + 16, s, high);
    }

    // (lo, hi) as one 512-bit vector by one insert.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<byte> Join(Vector256<byte> lo, Vector256<byte> hi) => Avx512F.InsertVector256(lo.ToVector512Unsafe(), hi, 1);

    // Head dim 32: eight tokens a step over the block for four heads (one group, so one byte plane per head), then the
    // four lanes of each int16 sum added in int32 and the eight channels of each field added to the outputs.
    private static void SumOctets(byte* block, int n, byte* codeIdx, byte* weightIdx, byte* uq, float* scales, float* o0, float* o1, float* o2, float* o3)
    {
        var ci = Vector512.Load(codeIdx);
        var wi = Vector512.Load(weightIdx);
        var m3 = Vector512.Create((byte)3);
        var eight = Vector512.Create((byte)8);
        Vector512<short> a00 = default, a01 = default, a02 = default, a03 = default;
        Vector512<short> a10 = default, a11 = default, a12 = default, a13 = default;
        Vector512<short> a20 = default, a21 = default, a22 = default, a23 = default;
        Vector512<short> a30 = default, a31 = default, a32 = default, a33 = default;
        for (int t = 0; t < n; t += 8)
        {
            var x = Avx512Vbmi.PermuteVar64x8(Vector512.Load(block + (t * 8)), ci);
            var f0 = (x & m3).AsSByte();
            var f1 = (Avx512BW.ShiftRightLogical(x.AsUInt16(), 2).AsByte() & m3).AsSByte();
            var f2 = (Avx512BW.ShiftRightLogical(x.AsUInt16(), 4).AsByte() & m3).AsSByte();
            var f3 = (Avx512BW.ShiftRightLogical(x.AsUInt16(), 6).AsByte() & m3).AsSByte();
            var w = Avx512Vbmi.PermuteVar64x8(Vector512.Load(uq), wi);
            a00 += Avx512BW.MultiplyAddAdjacent(w, f0);
            a01 += Avx512BW.MultiplyAddAdjacent(w, f1);
            a02 += Avx512BW.MultiplyAddAdjacent(w, f2);
            a03 += Avx512BW.MultiplyAddAdjacent(w, f3);
            w = Avx512Vbmi.PermuteVar64x8(Vector512.Load(uq + TokenBlock), wi);
            a10 += Avx512BW.MultiplyAddAdjacent(w, f0);
            a11 += Avx512BW.MultiplyAddAdjacent(w, f1);
            a12 += Avx512BW.MultiplyAddAdjacent(w, f2);
            a13 += Avx512BW.MultiplyAddAdjacent(w, f3);
            w = Avx512Vbmi.PermuteVar64x8(Vector512.Load(uq + (2 * TokenBlock)), wi);
            a20 += Avx512BW.MultiplyAddAdjacent(w, f0);
            a21 += Avx512BW.MultiplyAddAdjacent(w, f1);
            a22 += Avx512BW.MultiplyAddAdjacent(w, f2);
            a23 += Avx512BW.MultiplyAddAdjacent(w, f3);
            w = Avx512Vbmi.PermuteVar64x8(Vector512.Load(uq + (3 * TokenBlock)), wi);
            a30 += Avx512BW.MultiplyAddAdjacent(w, f0);
            a31 += Avx512BW.MultiplyAddAdjacent(w, f1);
            a32 += Avx512BW.MultiplyAddAdjacent(w, f2);
            a33 += Avx512BW.MultiplyAddAdjacent(w, f3);
            wi += eight;
        }

        Flush8(o0, Vector256.Create(scales[0]), a00, a01, a02, a03);
        Flush8(o1, Vector256.Create(scales[1]), a10, a11, a12, a13);
        Flush8(o2, Vector256.Create(scales[2]), a20, a21, a22, a23);
        Flush8(o3, Vector256.Create(scales[3]), a30, a31, a32, a33);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Flush8(float* o, Vector256<float> scale, Vector512<short> s0, Vector512<short> s1, Vector512<short> s2, Vector512<short> s3)
    {
        Flush8(o, scale, s0);
        Flush8(o + 8, scale, s1);
        Flush8(o + 16, scale, s2);
        Flush8(o + 24, scale, s3);
    }

    // Word j of each 128-bit lane is channel 4 j + k for one pair of tokens: the four lanes summed in int32.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Flush8(float* o, Vector256<float> scale, Vector512<short> s)
    {
        var sum = Avx512F.ConvertToVector512Int32(s.GetLower().AsUInt16()) + Avx512F.ConvertToVector512Int32(s.GetUpper().AsUInt16());
        var eight = sum.GetLower() + sum.GetUpper();
        Vector256.FusedMultiplyAdd(Avx.ConvertToVector256Single(eight), scale, Vector256.Load(o)).Store(o);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Flush(float* o, Vector512<float> scale, Vector512<short> s0, Vector512<short> s1, Vector512<short> s2, Vector512<short> s3)
    {
        Flush(o, scale, s0);
        Flush(o + 16, scale, s1);
        Flush(o + 32, scale, s2);
        Flush(o + 48, scale, s3);
    }

    // Lane j of the lower half (tokens 0-1 of each quad) and of the upper half (tokens 2-3) are the same channel.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Flush(float* o, Vector512<float> scale, Vector512<short> s)
    {
        var sum = Avx512F.ConvertToVector512Int32(s.GetLower().AsUInt16()) + Avx512F.ConvertToVector512Int32(s.GetUpper().AsUInt16());
        Vector512.FusedMultiplyAdd(Avx512F.ConvertToVector512Single(sum), scale, Vector512.Load(o)).Store(o);
    }

    /// <summary>
    /// Per chunk: the byte permute that interleaves four tokens' 16 code bytes (word j of the lower half = byte j of
    /// tokens 0 and 1, of the upper half tokens 2 and 3; for 4-bit codes one per 16-byte piece), the permute that
    /// spreads the weights of the chunk's one or two groups to those words (plus the quad's first token), and the two
    /// groups; per output position its group (the offsets, and the 2-bit kernel's lane -> scale index).
    /// </summary>
    private sealed class IndexTables
    {
        public IndexTables(int headDim, int groupChannels, int bits)
        {
            int chunks = (headDim + 63) / 64, gc = groupChannels;
            Code = new byte[chunks * 64 * (bits == 4 ? 2 : 1)];
            Weight = new byte[chunks * 64];
            ChunkGroups = new int[chunks * 2];
            PositionGroup = Enumerable.Range(0, headDim).Select(p => ChannelAt(p, headDim, bits) / gc).ToArray();
            if (bits == 4)
            {
                // Per chunk one quad's 16-byte pieces b = 0 and 1: word j of the lower half = byte j of tokens 0 and 1,
                // of the upper half tokens 2 and 3, from 16-byte rows (one vector) or two vectors of two 32-byte pieces.
                for (int i = 0; i < 64; i++)
                {
                    int token = (2 * (i / 32)) + (i % 2), j = (i % 32) / 2;
                    Weight[i] = (byte)token;
                    Code[i] = (byte)(headDim == 32 ? (token * 16) + j : ((token / 2) * 64) + ((token % 2) * 32) + j);
                    Code[64 + i] = (byte)(((token / 2) * 64) + ((token % 2) * 32) + 16 + j);
                }

                for (int c = 0; c < chunks; c++)
                {
                    ChunkGroups[2 * c] = c * 64 / gc;
                    ChunkGroups[(2 * c) + 1] = Math.Min(headDim - 1, (c * 64) + 32) / gc;
                }

                return;
            }

            if (headDim == 32)
            {
                // Eight 8-byte rows: 128-bit lane L, word j = byte j of tokens 2L and 2L + 1; one group.
                for (int i = 0; i < 64; i++)
                {
                    int token = (2 * (i / 16)) + (i % 2), j = (i % 16) / 2;
                    Code[i] = (byte)((token * 8) + j);
                    Weight[i] = (byte)token;
                }

                return;
            }

            for (int c = 0; c < chunks; c++)
            {
                int gA = c * 64 / gc, gB = ((c * 64) + 63) / gc;
                ChunkGroups[2 * c] = gA;
                ChunkGroups[(2 * c) + 1] = gB;
                for (int i = 0; i < 64; i++)
                {
                    int token = (2 * (i / 32)) + (i % 2), j = (i % 32) / 2;
                    Code[(c * 64) + i] = (byte)(chunks == 2 ? ((token / 2) * 64) + ((token % 2) * 32) + (c * 16) + j : (token * 16) + j);
                    int g = ((c * 64) + (4 * j)) / gc;
                    Weight[(c * 64) + i] = (byte)((g == gA ? 0 : 64) + token);
                }

            }
        }

        public byte[] Code { get; }

        public byte[] Weight { get; }

        public int[] ChunkGroups { get; }

        public int[] PositionGroup { get; }
    }
}
