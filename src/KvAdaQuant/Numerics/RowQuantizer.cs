using System.Buffers.Binary;
using System.Runtime.InteropServices;

namespace KvAdaQuant.Numerics;

/// <summary>
/// Turns floats into a ggml tensor type for writing files: F32, F16, BF16, Q8_0 and Q4_0, rounding exactly as
/// ggml's reference quantizers do (<c>quantize_row_q8_0_ref</c>, <c>quantize_row_q4_0_ref</c>; FP16 and BF16 with
/// round-to-nearest-even), so a file we write holds the bytes llama.cpp's own quantizer would write.
/// </summary>
public static class RowQuantizer
{
    /// <summary>True when floats can be written as <paramref name="type"/>.</summary>
    public static bool Supports(GgmlType type) => type is GgmlType.F32 or GgmlType.F16 or GgmlType.BF16 or GgmlType.Q8_0 or GgmlType.Q4_0;

    /// <summary>
    /// <paramref name="value"/> as a bfloat16 (the upper 16 bits of a float), rounded to nearest with ties to even; a NaN
    /// stays a quiet NaN (as ggml's and PyTorch's conversions do).
    /// </summary>
    public static ushort ToBFloat16(float value)
    {
        uint bits = BitConverter.SingleToUInt32Bits(value);
        return (ushort)(float.IsNaN(value) ? (bits >> 16) | 0x40 : (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16);
    }

    /// <summary>
    /// Quantizes <paramref name="src"/> (a whole number of blocks of <paramref name="type"/>) into
    /// <paramref name="dst"/>, which must hold exactly <see cref="GgmlTypeInfo.ByteSize"/> bytes.
    /// </summary>
    public static void Quantize(GgmlType type, ReadOnlySpan<float> src, Span<byte> dst)
    {
        long need = GgmlTypeInfo.ByteSize(type, src.Length);
        if (dst.Length != need)
        {
            throw new ArgumentException($"{src.Length} elements of {type} take {need} bytes, destination has {dst.Length}");
        }

        switch (type)
        {
            case GgmlType.F32:
                MemoryMarshal.AsBytes(src).CopyTo(dst);
                break;
            case GgmlType.F16:
                {
                    var h = MemoryMarshal.Cast<byte, Half>(dst);
                    for (int i = 0; i < src.Length; i++)
                    {
                        h[i] = (Half)src[i];
                    }

                    break;
                }

            case GgmlType.BF16:
                {
                    var h = MemoryMarshal.Cast<byte, ushort>(dst);
                    for (int i = 0; i < src.Length; i++)
                    {
                        h[i] = ToBFloat16(src[i]);
                    }

                    break;
                }

            case GgmlType.Q8_0:
                QuantizeQ8_0(src, dst);
                break;
            case GgmlType.Q4_0:
                QuantizeQ4_0(src, dst);
                break;
            default:
                throw new NotSupportedException($"writing tensors of type {type} is not supported (use F32, F16, BF16, Q8_0 or Q4_0)");
        }
    }

    private static void QuantizeQ8_0(ReadOnlySpan<float> src, Span<byte> dst)
    {
        int blocks = src.Length / 32;
        for (int b = 0; b < blocks; b++)
        {
            var x = src.Slice(b * 32, 32);
            var block = dst.Slice(b * 34, 34);
            float amax = 0f;
            for (int j = 0; j < 32; j++)
            {
                amax = MathF.Max(amax, MathF.Abs(x[j]));
            }

            float d = amax / 127f;
            float id = d != 0f ? 1f / d : 0f;
            BinaryPrimitives.WriteHalfLittleEndian(block, (Half)d);
            for (int j = 0; j < 32; j++)
            {
                // roundf: half away from zero
                block[2 + j] = (byte)(sbyte)MathF.Round(x[j] * id, MidpointRounding.AwayFromZero);
            }
        }
    }

    private static void QuantizeQ4_0(ReadOnlySpan<float> src, Span<byte> dst)
    {
        int blocks = src.Length / 32;
        for (int b = 0; b < blocks; b++)
        {
            var x = src.Slice(b * 32, 32);
            var block = dst.Slice(b * 18, 18);
            float amax = 0f, max = 0f;
            for (int j = 0; j < 32; j++)
            {
                float a = MathF.Abs(x[j]);
                if (amax < a)
                {
                    amax = a;
                    max = x[j];
                }
            }

            float d = max / -8f;
            float id = d != 0f ? 1f / d : 0f;
            BinaryPrimitives.WriteHalfLittleEndian(block, (Half)d);
            for (int j = 0; j < 16; j++)
            {
                // (int8_t)(x + 8.5f) truncates toward zero; the value lies in [0.5, 16.5]
                int lo = Math.Min(15, (int)(sbyte)(int)((x[j] * id) + 8.5f));
                int hi = Math.Min(15, (int)(sbyte)(int)((x[j + 16] * id) + 8.5f));
                block[2 + j] = (byte)(lo | (hi << 4));
            }
        }
    }
}
