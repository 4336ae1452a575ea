using System.Buffers.Binary;
using System.Numerics.Tensors;
using System.Runtime.InteropServices;

namespace KvAdaQuant.Numerics;

/// <summary>
/// Turns one row of a weight tensor stored in a ggml type into floats. The block layouts follow
/// ggml's definitions bit for bit (see llama.cpp ggml-quants.c), so results equal llama.cpp's dequantization.
/// </summary>
public static class RowDequantizer
{
    /// <summary>True when rows of this type can be dequantized.</summary>
    public static bool Supports(GgmlType type) => type is GgmlType.F32 or GgmlType.F16 or GgmlType.BF16 or GgmlType.Q8_0
        or GgmlType.Q4_0 or GgmlType.Q4_1 or GgmlType.Q5_0 or GgmlType.Q5_1 or GgmlType.Q2_K or GgmlType.Q3_K or GgmlType.Q4_K or GgmlType.Q5_K
        or GgmlType.Q6_K or GgmlType.IQ4_NL or GgmlType.IQ4_XS;

    /// <summary>The 16 signed values of the IQ4_NL and IQ4_XS 4-bit codes (ggml's kvalues_iq4nl): a non-uniform grid.</summary>
    public static ReadOnlySpan<sbyte> Iq4Values => [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113];

    /// <summary>Dequantizes <paramref name="dst"/>.Length elements from <paramref name="src"/>.</summary>
    public static void Dequantize(GgmlType type, ReadOnlySpan<byte> src, Span<float> dst)
    {
        switch (type)
        {
            case GgmlType.F32:
                MemoryMarshal.Cast<byte, float>(src[..(dst.Length * 4)]).CopyTo(dst);
                break;
            case GgmlType.F16:
                TensorPrimitives.ConvertToSingle(MemoryMarshal.Cast<byte, Half>(src[..(dst.Length * 2)]), dst);
                break;
            case GgmlType.BF16:
                {
                    var s = MemoryMarshal.Cast<byte, ushort>(src[..(dst.Length * 2)]);
                    for (int i = 0; i < dst.Length; i++)
                    {
                        dst[i] = BitConverter.Int32BitsToSingle(s[i] << 16);
                    }

                    break;
                }

            case GgmlType.Q8_0:
                DequantizeQ8_0(src, dst);
                break;
            case GgmlType.Q4_0:
                DequantizeQ4_0(src, dst);
                break;
            case GgmlType.Q4_1:
                DequantizeQ4_1(src, dst);
                break;
            case GgmlType.Q5_0:
                DequantizeQ5_0(src, dst);
                break;
            case GgmlType.Q5_1:
                DequantizeQ5_1(src, dst);
                break;
            case GgmlType.Q2_K:
                DequantizeQ2_K(src, dst);
                break;
            case GgmlType.Q3_K:
                DequantizeQ3_K(src, dst);
                break;
            case GgmlType.Q4_K:
                DequantizeQ4_K(src, dst);
                break;
            case GgmlType.Q5_K:
                DequantizeQ5_K(src, dst);
                break;
            case GgmlType.Q6_K:
                DequantizeQ6_K(src, dst);
                break;
            case GgmlType.IQ4_NL:
                DequantizeIq4_NL(src, dst);
                break;
            case GgmlType.IQ4_XS:
                DequantizeIq4_XS(src, dst);
                break;
            default:
                throw new NotSupportedException($"tensor type {type} cannot be dequantized");
        }
    }

    private static void DequantizeQ8_0(ReadOnlySpan<byte> src, Span<float> dst)
    {
        int blocks = dst.Length / 32;
        for (int b = 0; b < blocks; b++)
        {
            var block = src.Slice(b * 34, 34);
            float d = (float)BinaryPrimitives.ReadHalfLittleEndian(block);
            var q = MemoryMarshal.Cast<byte, sbyte>(block[2..]);
            var o = dst.Slice(b * 32, 32);
            for (int i = 0; i < 32; i++)
            {
                o[i] = q[i] * d;
            }
        }
    }

    /// <summary>
    /// Scale and min of sub-block <paramref name="j"/> (0..7) of a Q4_K/Q5_K block, packed as 6-bit values in
    /// 12 bytes: sub-blocks 0..3 in the low 6 bits of bytes j and j+4; sub-blocks 4..7 in the nibbles of
    /// bytes j+4, with their top 2 bits in the top bits of bytes j-4 (scale) and j (min). (ggml's get_scale_min_k4.)
    /// </summary>
    public static (int Scale, int Min) ScaleMinK4(int j, ReadOnlySpan<byte> scales)
    {
        if (j < 4)
        {
            return (scales[j] & 63, scales[j + 4] & 63);
        }

        return ((scales[j + 4] & 0xF) | ((scales[j - 4] >> 6) << 4), (scales[j + 4] >> 4) | ((scales[j] >> 6) << 4));
    }

    // block_q4_0: fp16 d, 16 bytes of nibbles; element j is the low nibble of byte j, element j+16 the high one; value (q - 8) * d.
    private static void DequantizeQ4_0(ReadOnlySpan<byte> src, Span<float> dst)
    {
        int blocks = dst.Length / 32;
        for (int b = 0; b < blocks; b++)
        {
            var block = src.Slice(b * 18, 18);
            float d = (float)BinaryPrimitives.ReadHalfLittleEndian(block);
            var qs = block[2..];
            var o = dst.Slice(b * 32, 32);
            for (int j = 0; j < 16; j++)
            {
                o[j] = ((qs[j] & 0x0F) - 8) * d;
                o[j + 16] = ((qs[j] >> 4) - 8) * d;
            }
        }
    }

    // block_q4_1: fp16 d, fp16 m, 16 bytes of nibbles; value q * d + m.
    private static void DequantizeQ4_1(ReadOnlySpan<byte> src, Span<float> dst)
    {
        int blocks = dst.Length / 32;
        for (int b = 0; b < blocks; b++)
        {
            var block = src.Slice(b * 20, 20);
            float d = (float)BinaryPrimitives.ReadHalfLittleEndian(block);
            float m = (float)BinaryPrimitives.ReadHalfLittleEndian(block[2..]);
            var qs = block[4..];
            var o = dst.Slice(b * 32, 32);
            for (int j = 0; j < 16; j++)
            {
                o[j] = ((qs[j] & 0x0F) * d) + m;
                o[j + 16] = ((qs[j] >> 4) * d) + m;
            }
        }
    }

    // block_q5_0: fp16 d, 32 high bits qh (uint32), 16 bytes of nibbles; bit j of qh is the 5th bit of element j; value (q - 16) * d.
    private static void DequantizeQ5_0(ReadOnlySpan<byte> src, Span<float> dst)
    {
        int blocks = dst.Length / 32;
        for (int b = 0; b < blocks; b++)
        {
            var block = src.Slice(b * 22, 22);
            float d = (float)BinaryPrimitives.ReadHalfLittleEndian(block);
            uint qh = BinaryPrimitives.ReadUInt32LittleEndian(block[2..]);
            var qs = block[6..];
            var o = dst.Slice(b * 32, 32);
            for (int j = 0; j < 16; j++)
            {
                int h0 = (int)((qh >> j) << 4) & 0x10;
                int h1 = (int)(qh >> (j + 12)) & 0x10;
                o[j] = (((qs[j] & 0x0F) | h0) - 16) * d;
                o[j + 16] = (((qs[j] >> 4) | h1) - 16) * d;
            }
        }
    }

    // block_q5_1: fp16 d, fp16 m, qh, nibbles; value q * d + m.
    private static void DequantizeQ5_1(ReadOnlySpan<byte> src, Span<float> dst)
    {
        int blocks = dst.Length / 32;
        for (int b = 0; b < blocks; b++)
        {
            var block = src.Slice(b * 24, 24);
            float d = (float)BinaryPrimitives.ReadHalfLittleEndian(block);
            float m = (float)BinaryPrimitives.ReadHalfLittleEndian(block[2..]);
            uint qh = BinaryPrimitives.ReadUInt32LittleEndian(block[4..]);
            var qs = block[8..];
            var o = dst.Slice(b * 32, 32);
            for (int j = 0; j < 16; j++)
            {
                int h0 = (int)((qh >> j) << 4) & 0x10;
                int h1 = (int)(qh >> (j + 12)) & 0x10;
                o[j] = (((qs[j] & 0x0F) | h0) * d) + m;
                o[j + 16] = (((qs[j] >> 4) | h1) * d) + m;
            }
        }
    }

    // block_q4_K (256 elements, 144 bytes): fp16 d, fp16 dmin, 12 bytes of 6-bit scales/mins, 128 bytes of nibbles.
    // Each 64 elements: 32 low nibbles with sub-block 2i, 32 high nibbles with sub-block 2i+1; value d*sc*q - dmin*m.
    private static void DequantizeQ4_K(ReadOnlySpan<byte> src, Span<float> dst)
    {
        int blocks = dst.Length / 256;
        for (int b = 0; b < blocks; b++)
        {
            var block = src.Slice(b * 144, 144);
            float d = (float)BinaryPrimitives.ReadHalfLittleEndian(block);
            float min = (float)BinaryPrimitives.ReadHalfLittleEndian(block[2..]);
            var scales = block.Slice(4, 12);
            var q = block[16..];
            var o = dst.Slice(b * 256, 256);
            for (int j = 0, sub = 0; j < 256; j += 64, sub += 2)
            {
                var (sc0, m0) = ScaleMinK4(sub, scales);
                var (sc1, m1) = ScaleMinK4(sub + 1, scales);
                float d1 = d * sc0, mm1 = min * m0;
                float d2 = d * sc1, mm2 = min * m1;
                var qq = q.Slice(j / 2, 32);
                for (int l = 0; l < 32; l++)
                {
                    o[j + l] = (d1 * (qq[l] & 0xF)) - mm1;
                    o[j + 32 + l] = (d2 * (qq[l] >> 4)) - mm2;
                }
            }
        }
    }

    // block_q5_K (256 elements, 176 bytes): fp16 d, fp16 dmin, 12 bytes scales, 32 bytes qh, 128 bytes nibbles.
    // The 5th bit of element l of the i-th 32-group is bit i of qh[l].
    private static void DequantizeQ5_K(ReadOnlySpan<byte> src, Span<float> dst)
    {
        int blocks = dst.Length / 256;
        for (int b = 0; b < blocks; b++)
        {
            var block = src.Slice(b * 176, 176);
            float d = (float)BinaryPrimitives.ReadHalfLittleEndian(block);
            float min = (float)BinaryPrimitives.ReadHalfLittleEndian(block[2..]);
            var scales = block.Slice(4, 12);
            var qh = block.Slice(16, 32);
            var ql = block[48..];
            var o = dst.Slice(b * 256, 256);
            int u1 = 1, u2 = 2;
            for (int j = 0, sub = 0; j < 256; j += 64, sub += 2)
            {
                var (sc0, m0) = ScaleMinK4(sub, scales);
                var (sc1, m1) = ScaleMinK4(sub + 1, scales);
                float d1 = d * sc0, mm1 = min * m0;
                float d2 = d * sc1, mm2 = min * m1;
                var qq = ql.Slice(j / 2, 32);
                for (int l = 0; l < 32; l++)
                {
                    o[j + l] = (d1 * ((qq[l] & 0xF) + ((qh[l] & u1) != 0 ? 16 : 0))) - mm1;
                    o[j + 32 + l] = (d2 * ((qq[l] >> 4) + ((qh[l] & u2) != 0 ? 16 : 0))) - mm2;
                }

                u1 <<= 2;
                u2 <<= 2;
            }
        }
    }

    // block_q6_K (256 elements, 210 bytes): 128 bytes low nibbles ql, 64 bytes high 2-bit pairs qh, 16 int8 scales, fp16 d.
    // Value d * scale[sub] * (q - 32), 16 elements per scale.
    private static void DequantizeQ6_K(ReadOnlySpan<byte> src, Span<float> dst)
    {
        int blocks = dst.Length / 256;
        for (int b = 0; b < blocks; b++)
        {
            var block = src.Slice(b * 210, 210);
            var ql = block[..128];
            var qh = block.Slice(128, 64);
            var sc = MemoryMarshal.Cast<byte, sbyte>(block.Slice(192, 16));
            float d = (float)BinaryPrimitives.ReadHalfLittleEndian(block[208..]);
            var o = dst.Slice(b * 256, 256);
            for (int n = 0; n < 2; n++)
            {
                var l4 = ql.Slice(n * 64, 64);
                var h4 = qh.Slice(n * 32, 32);
                var s8 = sc.Slice(n * 8, 8);
                var y = o.Slice(n * 128, 128);
                for (int l = 0; l < 32; l++)
                {
                    int s = l / 16;
                    int q1 = ((l4[l] & 0xF) | (((h4[l] >> 0) & 3) << 4)) - 32;
                    int q2 = ((l4[l + 32] & 0xF) | (((h4[l] >> 2) & 3) << 4)) - 32;
                    int q3 = ((l4[l] >> 4) | (((h4[l] >> 4) & 3) << 4)) - 32;
                    int q4 = ((l4[l + 32] >> 4) | (((h4[l] >> 6) & 3) << 4)) - 32;
                    y[l] = d * s8[s] * q1;
                    y[l + 32] = d * s8[s + 2] * q2;
                    y[l + 64] = d * s8[s + 4] * q3;
                    y[l + 96] = d * s8[s + 6] * q4;
                }
            }
        }
    }

    /// <summary>
    /// The signed 6-bit scale (-32..31) of sub-block <paramref name="j"/> (0..15, 16 elements each) of a Q3_K super-block:
    /// its low 4 bits are the low nibble of byte j (j &lt; 8) or the high nibble of byte j - 8, its top 2 bits are bits
    /// 2 (j / 4) and 2 (j / 4) + 1 of byte 8 + j % 4 of the 12 packed bytes. (ggml's kmask unpacking of block_q3_K.)
    /// </summary>
    public static int ScaleQ3_K(int j, ReadOnlySpan<byte> scales)
    {
        int low = j < 8 ? scales[j] & 0xF : scales[j - 8] >> 4;
        int high = (scales[8 + (j & 3)] >> (2 * (j >> 2))) & 3;
        return (low | (high << 4)) - 32;
    }

    /// <summary>
    /// The signed 3-bit value (-4..3) of element <paramref name="e"/> (0..255) of a Q3_K super-block: in each half of 128,
    /// element 32 s + l (s = 0..3, l = 0..31) is bits 2 s and 2 s + 1 of qs[32 half + l], minus 4 unless bit 4 half + s of
    /// hmask[l] is set.
    /// </summary>
    public static int ValueQ3_K(int e, ReadOnlySpan<byte> hmask, ReadOnlySpan<byte> qs)
    {
        int half = e >> 7, s = (e >> 5) & 3, l = e & 31;
        int low = (qs[(32 * half) + l] >> (2 * s)) & 3;
        return low - ((hmask[l] >> ((4 * half) + s) & 1) != 0 ? 0 : 4);
    }

    // block_q2_K (256 elements, 84 bytes): 16 bytes of 4-bit scale (low) and min (high) per 16 elements, 64 bytes of 2-bit codes,
    // fp16 d, fp16 dmin. Element 32 s + l of each half of 128 (s = 0..3) is bits 2 s, 2 s + 1 of qs[32 half + l]; its sub-block
    // of 16 is e / 16; value d * scale * q - dmin * min.
    private static void DequantizeQ2_K(ReadOnlySpan<byte> src, Span<float> dst)
    {
        int blocks = dst.Length / 256;
        for (int b = 0; b < blocks; b++)
        {
            var block = src.Slice(b * 84, 84);
            var scales = block[..16];
            var qs = block.Slice(16, 64);
            float d = (float)BinaryPrimitives.ReadHalfLittleEndian(block[80..]);
            float min = (float)BinaryPrimitives.ReadHalfLittleEndian(block[82..]);
            var o = dst.Slice(b * 256, 256);
            for (int e = 0; e < 256; e++)
            {
                int sc = scales[e >> 4];
                float dl = d * (sc & 0xF), ml = min * (sc >> 4);
                int q = (qs[(32 * (e >> 7)) + (e & 31)] >> (2 * ((e >> 5) & 3))) & 3;
                o[e] = (dl * q) - ml;
            }
        }
    }

    // block_q3_K (256 elements, 110 bytes): 32 bytes hmask (the high bit, inverted: set means no -4), 64 bytes of low 2-bit
    // codes (as Q2_K's), 12 bytes of 6-bit scales, fp16 d; value d * (scale - 32) * q.
    private static void DequantizeQ3_K(ReadOnlySpan<byte> src, Span<float> dst)
    {
        int blocks = dst.Length / 256;
        for (int b = 0; b < blocks; b++)
        {
            var block = src.Slice(b * 110, 110);
            var hmask = block[..32];
            var qs = block.Slice(32, 64);
            var scales = block.Slice(96, 12);
            float d = (float)BinaryPrimitives.ReadHalfLittleEndian(block[108..]);
            var o = dst.Slice(b * 256, 256);
            for (int e = 0; e < 256; e++)
            {
                float dl = d * ScaleQ3_K(e >> 4, scales);
                o[e] = dl * ValueQ3_K(e, hmask, qs);
            }
        }
    }

    // block_iq4_nl (32 elements, 18 bytes): fp16 d, 16 bytes of codes (element j the low nibble of byte j, j + 16 the high);
    // value d * kvalues[code].
    private static void DequantizeIq4_NL(ReadOnlySpan<byte> src, Span<float> dst)
    {
        int blocks = dst.Length / 32;
        for (int b = 0; b < blocks; b++)
        {
            var block = src.Slice(b * 18, 18);
            float d = (float)BinaryPrimitives.ReadHalfLittleEndian(block);
            var qs = block[2..];
            DequantizeIq4Block(qs, d, dst.Slice(b * 32, 32));
        }
    }

    // 32 IQ4 values: the 16 low nibbles (elements 0..15), then the 16 high ones, each level times dl.
    private static void DequantizeIq4Block(ReadOnlySpan<byte> qs, float dl, Span<float> y)
    {
        var kv = Iq4Values;
        for (int j = 0; j < 16; j++)
        {
            y[j] = dl * kv[qs[j] & 0xF];
            y[j + 16] = dl * kv[qs[j] >> 4];
        }
    }

    /// <summary>
    /// The 6-bit scale (0..63, the value is this minus 32) of 32-element block <paramref name="ib"/> (0..7) of an IQ4_XS
    /// super-block: low 4 bits from nibble ib % 2 of scales_l[ib / 2], top 2 bits from bits 2 ib, 2 ib + 1 of scales_h.
    /// </summary>
    public static int ScaleIq4_XS(int ib, ushort scalesH, ReadOnlySpan<byte> scalesL)
        => ((scalesL[ib >> 1] >> (4 * (ib & 1))) & 0xF) | (((scalesH >> (2 * ib)) & 3) << 4);

    // block_iq4_xs (256 elements, 136 bytes): fp16 d, uint16 scales_h, 4 bytes scales_l, 128 bytes of codes in eight
    // IQ4_NL-like 32-element blocks of 16 bytes; value d * (scale - 32) * kvalues[code].
    private static void DequantizeIq4_XS(ReadOnlySpan<byte> src, Span<float> dst)
    {
        int blocks = dst.Length / 256;
        for (int b = 0; b < blocks; b++)
        {
            var block = src.Slice(b * 136, 136);
            float d = (float)BinaryPrimitives.ReadHalfLittleEndian(block);
            ushort h = BinaryPrimitives.ReadUInt16LittleEndian(block[2..]);
            var scalesL = block.Slice(4, 4);
            var o = dst.Slice(b * 256, 256);
            for (int ib = 0; ib < 8; ib++)
            {
                float dl = d * (ScaleIq4_XS(ib, h, scalesL) - 32);
                DequantizeIq4Block(block.Slice(8 + (16 * ib), 16), dl, o.Slice(32 * ib, 32));
            }
        }
    }
}
