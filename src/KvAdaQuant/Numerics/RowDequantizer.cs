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
    public static bool Supports(GgmlType type) => type is GgmlType.F32 or GgmlType.F16 or GgmlType.BF16 or GgmlType.Q8_0;

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
}
