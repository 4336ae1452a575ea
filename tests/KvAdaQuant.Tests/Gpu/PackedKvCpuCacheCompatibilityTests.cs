using KvAdaQuant.Gpu;
using KvAdaQuant.Quantization;

namespace KvAdaQuant.Tests.Gpu;

// The GPU layout reads the same bytes the CPU cache (QuantizedTensorStore) writes for one head: code rows from
// BitPacking and (scale, zero) FP16 pairs, dequantized as scale * code + zero.
public class PackedKvCpuCacheCompatibilityTests
{
    public static TheoryData<KvBits> Widths => new()
    {
        KvBits.One, KvBits.Ternary, KvBits.Two, KvBits.Three, KvBits.Four, KvBits.Five, KvBits.Six, KvBits.Eight,
    };

    private static PackedKvFormat FormatOf(KvBits bits) => new(bits.NominalBits(), 64, PackedKvAxis.PerToken, 128);

    [Theory]
    [MemberData(nameof(Widths))]
    public void GpuCodeReaderDecodesTheCpuBitPacking(KvBits bits)
    {
        var rng = new Random(17);
        var codes = Enumerable.Range(0, 128).Select(_ => (byte)rng.Next(bits.Levels())).ToArray();
        var row = new byte[BitPacking.PackedBytes(128, bits)];
        BitPacking.Pack(codes, bits, row);
        PackedKvFormat format = FormatOf(bits);
        Assert.Equal(row.Length, format.RowBytes);
        for (int d = 0; d < 128; d++)
        {
            Assert.Equal(codes[d], PackedKvCodes.Get(row, format.BitsCode, d));
        }
    }

    [Theory]
    [MemberData(nameof(Widths))]
    public void GpuDequantizationOfCpuParametersEqualsTheCpuCache(KvBits bits)
    {
        var rng = new Random(23);
        var x = Enumerable.Range(0, 64).Select(_ => (float)((rng.NextDouble() * 5) - 2)).ToArray();
        var codes = new byte[64];
        QuantParams p = AffineQuantizer.Quantize(x, 1, 64, bits, symmetric: false, codes);
        var cpu = new float[64];
        AffineQuantizer.Dequantize(codes, p, bits, symmetric: false, cpu, 1, 64);

        // The GPU's packed pair: scale in bits 0..15, zero in 16..31, i.e. [scale, zero] as FP16 in memory order.
        uint pair = BitConverter.HalfToUInt16Bits(p.Scale) | ((uint)BitConverter.HalfToUInt16Bits(p.Zero) << 16);
        double scale = (double)BitConverter.UInt16BitsToHalf((ushort)(pair & 0xFFFF));
        double zero = (double)BitConverter.UInt16BitsToHalf((ushort)(pair >> 16));
        for (int i = 0; i < 64; i++)
        {
            double gpu = (scale * codes[i]) + zero;
            Assert.True(Math.Abs(gpu - cpu[i]) <= 1e-6 * (1 + Math.Abs(cpu[i])), $"{bits} element {i}: {gpu} vs {cpu[i]}");
        }
    }
}
