using KvAdaQuant.Numerics;

namespace KvAdaQuant.Gpu.Decode;

/// <summary>
/// Turns model weight rows into the GPU layouts of <see cref="GpuWeightType"/>: Q8_0 and Q4_0 blocks keep their codes
/// and scales bit for bit (split into a code array and a scale array so the kernels load aligned vectors); every
/// other type (F32, F16, BF16, K-quants, ...) becomes FP16 (F16 copied, the rest dequantized and rounded to nearest).
/// </summary>
public static class GpuWeightPacker
{
    /// <summary>Elements per Q8_0 / Q4_0 block (one scale each).</summary>
    public const int BlockSize = 32;

    /// <summary>The GPU type for a matrix made of <paramref name="parts"/> stacked by rows.</summary>
    public static GpuWeightType TargetType(IReadOnlyList<WeightMatrix> parts, bool keepQuantized)
    {
        ArgumentNullException.ThrowIfNull(parts);
        if (keepQuantized && parts.All(p => p.Type == GgmlType.Q8_0))
        {
            return GpuWeightType.Q8_0;
        }

        if (keepQuantized && parts.All(p => p.Type == GgmlType.Q4_0))
        {
            return GpuWeightType.Q4_0;
        }

        return GpuWeightType.F16;
    }

    /// <summary>Row stride in elements: FP16 rows are padded to a multiple of 8 (16-byte loads), quantized rows are not.</summary>
    public static int LeadingDimension(GpuWeightType type, int cols) => type == GpuWeightType.F16 ? (cols + 7) / 8 * 8 : cols;

    /// <summary>Bytes of one packed row's codes.</summary>
    public static int RowCodeBytes(GpuWeightType type, int cols) => type switch
    {
        GpuWeightType.F16 => 2 * LeadingDimension(type, cols),
        GpuWeightType.Q8_0 => cols,
        _ => cols / 2,
    };

    /// <summary>FP16 scales of one packed row (0 for FP16).</summary>
    public static int RowScales(GpuWeightType type, int cols) => type == GpuWeightType.F16 ? 0 : cols / BlockSize;

    /// <summary>Device bytes of a [rows][cols] matrix: codes plus 2 bytes a scale.</summary>
    public static long ByteCount(GpuWeightType type, int rows, int cols) =>
        (long)rows * (RowCodeBytes(type, cols) + (2L * RowScales(type, cols)));

    /// <summary>
    /// Packs row <paramref name="row"/> of <paramref name="m"/> into <paramref name="codes"/> (<see cref="RowCodeBytes"/>)
    /// and <paramref name="scales"/> (<see cref="RowScales"/>); <paramref name="scratch"/> holds at least Cols floats.
    /// </summary>
    public static void PackRow(WeightMatrix m, int row, GpuWeightType type, Span<byte> codes, Span<ushort> scales, Span<float> scratch)
    {
        ArgumentNullException.ThrowIfNull(m);
        int cols = m.Cols;
        ReadOnlySpan<byte> src = m.RowData(row);
        switch (type)
        {
            case GpuWeightType.Q8_0:
                Require(m, GgmlType.Q8_0);
                for (int b = 0; b < cols / BlockSize; b++)
                {
                    ReadOnlySpan<byte> block = src.Slice(b * 34, 34);
                    scales[b] = (ushort)(block[0] | (block[1] << 8));
                    block.Slice(2, 32).CopyTo(codes.Slice(b * BlockSize, BlockSize));
                }

                break;
            case GpuWeightType.Q4_0:
                Require(m, GgmlType.Q4_0);
                for (int b = 0; b < cols / BlockSize; b++)
                {
                    ReadOnlySpan<byte> block = src.Slice(b * 18, 18);
                    scales[b] = (ushort)(block[0] | (block[1] << 8));
                    ReadOnlySpan<byte> qs = block.Slice(2, 16);
                    Span<byte> dst = codes.Slice(b * 16, 16);
                    for (int k = 0; k < 16; k++)
                    {
                        dst[k] = (byte)(Q4Element(qs, 2 * k) | (Q4Element(qs, (2 * k) + 1) << 4));
                    }
                }

                break;
            default:
                Span<ushort> halves = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, ushort>(codes);
                halves.Clear();
                if (m.Type == GgmlType.F16)
                {
                    System.Runtime.InteropServices.MemoryMarshal.Cast<byte, ushort>(src)[..cols].CopyTo(halves);
                }
                else
                {
                    m.DequantizeRow(row, scratch);
                    for (int c = 0; c < cols; c++)
                    {
                        halves[c] = BitConverter.HalfToUInt16Bits((Half)scratch[c]);
                    }
                }

                break;
        }
    }

    /// <summary>Element <paramref name="c"/> of a packed row as the kernels compute it (the CPU reference of their loads).</summary>
    public static float Element(GpuWeightType type, ReadOnlySpan<byte> codes, ReadOnlySpan<ushort> scales, int c)
    {
        switch (type)
        {
            case GpuWeightType.F16:
                return (float)BitConverter.UInt16BitsToHalf((ushort)(codes[2 * c] | (codes[(2 * c) + 1] << 8)));
            case GpuWeightType.Q8_0:
                return (sbyte)codes[c] * (float)BitConverter.UInt16BitsToHalf(scales[c / BlockSize]);
            default:
                int b = codes[c / 2];
                int q = (c & 1) != 0 ? b >> 4 : b & 15;
                return (q - 8) * (float)BitConverter.UInt16BitsToHalf(scales[c / BlockSize]);
        }
    }

    // Element e (0..31) of a GGUF Q4_0 block: low nibbles hold 0..15, high nibbles 16..31.
    private static int Q4Element(ReadOnlySpan<byte> qs, int e) => e < 16 ? qs[e] & 15 : qs[e - 16] >> 4;

    private static void Require(WeightMatrix m, GgmlType type)
    {
        if (m.Type != type)
        {
            throw new ArgumentException($"tensor '{m.Name}': is {m.Type}, cannot pack it as {type}.", nameof(m));
        }
    }
}
