using KvAdaQuant.Gpu.Decode;
using KvAdaQuant.Numerics;

namespace KvAdaQuant.Tests.Gpu;

/// <summary>The GPU weight layouts: element for element equal to the CPU's dequantization (bit-exact for Q8_0/Q4_0/F16), exact byte counts.</summary>
public unsafe class GpuWeightPackerTests
{
    [Theory]
    [InlineData(GgmlType.Q8_0, GpuWeightType.Q8_0)]
    [InlineData(GgmlType.Q4_0, GpuWeightType.Q4_0)]
    [InlineData(GgmlType.F16, GpuWeightType.F16)]
    [InlineData(GgmlType.F32, GpuWeightType.F16)]
    [InlineData(GgmlType.Q8_0, GpuWeightType.F16)]
    public void PackedRowsDequantizeLikeTheCpu(GgmlType source, GpuWeightType target)
    {
        const int rows = 5, cols = 96;
        var rng = new Random(3);
        long rowBytes = GgmlTypeInfo.ByteSize(source, cols);
        using var data = new NativeBuffer(rowBytes * rows);
        var values = new float[cols];
        for (int r = 0; r < rows; r++)
        {
            for (int c = 0; c < cols; c++)
            {
                values[c] = (float)((rng.NextDouble() * 4) - 2) * (r + 1);
            }

            RowQuantizer.Quantize(source, values, data.AsSpan<byte>(r * rowBytes, (int)rowBytes));
        }

        var m = new WeightMatrix("w", source, rows, cols, data.Pointer);
        var codes = new byte[GpuWeightPacker.RowCodeBytes(target, cols)];
        var scales = new ushort[Math.Max(1, GpuWeightPacker.RowScales(target, cols))];
        var cpu = new float[cols];
        var scratch = new float[cols];
        for (int r = 0; r < rows; r++)
        {
            GpuWeightPacker.PackRow(m, r, target, codes, scales, scratch);
            m.DequantizeRow(r, cpu);
            for (int c = 0; c < cols; c++)
            {
                float want = target == GpuWeightType.F16 ? (float)(Half)cpu[c] : cpu[c];
                Assert.Equal(want, GpuWeightPacker.Element(target, codes, scales, c));
            }
        }
    }

    [Fact]
    public void FloatRowsArePaddedToEightHalvesWithZeros()
    {
        const int cols = 13;
        using var data = new NativeBuffer(4L * cols);
        var row = data.AsSpan<float>(0, cols);
        for (int c = 0; c < cols; c++)
        {
            row[c] = c + 1;
        }

        var m = new WeightMatrix("w", GgmlType.F32, 1, cols, data.Pointer);
        Assert.Equal(16, GpuWeightPacker.LeadingDimension(GpuWeightType.F16, cols));
        var codes = new byte[GpuWeightPacker.RowCodeBytes(GpuWeightType.F16, cols)];
        Assert.Equal(32, codes.Length);
        codes.AsSpan().Fill(0xFF);
        GpuWeightPacker.PackRow(m, 0, GpuWeightType.F16, codes, [], new float[cols]);
        Assert.Equal(13f, GpuWeightPacker.Element(GpuWeightType.F16, codes, [], 12));
        Assert.All(codes[26..], b => Assert.Equal(0, b));
    }

    [Fact]
    public void ByteCountsAreExact()
    {
        // Llama 3.1 8B wq: 4096 x 4096.
        Assert.Equal(4096L * 4096 * 2, GpuWeightPacker.ByteCount(GpuWeightType.F16, 4096, 4096));
        Assert.Equal((4096L * 4096) + (4096L * 128 * 2), GpuWeightPacker.ByteCount(GpuWeightType.Q8_0, 4096, 4096));
        Assert.Equal((4096L * 2048) + (4096L * 128 * 2), GpuWeightPacker.ByteCount(GpuWeightType.Q4_0, 4096, 4096));

        // Same bytes as the GGUF blocks: 34 per 32 elements for Q8_0, 18 for Q4_0.
        Assert.Equal(GgmlTypeInfo.ByteSize(GgmlType.Q8_0, 4096L * 4096), GpuWeightPacker.ByteCount(GpuWeightType.Q8_0, 4096, 4096));
        Assert.Equal(GgmlTypeInfo.ByteSize(GgmlType.Q4_0, 4096L * 4096), GpuWeightPacker.ByteCount(GpuWeightType.Q4_0, 4096, 4096));
    }

    [Fact]
    public void MixedTypesFallBackToFp16()
    {
        using var a = new NativeBuffer(GgmlTypeInfo.ByteSize(GgmlType.Q8_0, 64));
        using var b = new NativeBuffer(GgmlTypeInfo.ByteSize(GgmlType.Q4_0, 64));
        var q8 = new WeightMatrix("a", GgmlType.Q8_0, 1, 64, a.Pointer);
        var q4 = new WeightMatrix("b", GgmlType.Q4_0, 1, 64, b.Pointer);
        Assert.Equal(GpuWeightType.Q8_0, GpuWeightPacker.TargetType([q8, q8], true));
        Assert.Equal(GpuWeightType.F16, GpuWeightPacker.TargetType([q8, q4], true));
        Assert.Equal(GpuWeightType.F16, GpuWeightPacker.TargetType([q8], false));
    }
}
