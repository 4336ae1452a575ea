using CsCheck;
using KvAdaQuant.Quantization;

namespace KvAdaQuant.Tests.Quantization;

/// <summary>Packing round trips and the SIMD unpack paths against the scalar twin.</summary>
public class BitPackingTests
{
    private static readonly KvBits[] Quantized = [KvBits.One, KvBits.Ternary, KvBits.Two, KvBits.Three, KvBits.Four, KvBits.Five, KvBits.Six, KvBits.Eight];

    [Theory]
    [InlineData(KvBits.One, 32, 4)]
    [InlineData(KvBits.Ternary, 32, 7)]
    [InlineData(KvBits.Two, 32, 8)]
    [InlineData(KvBits.Three, 32, 12)]
    [InlineData(KvBits.Four, 32, 16)]
    [InlineData(KvBits.Five, 32, 20)]
    [InlineData(KvBits.Six, 32, 24)]
    [InlineData(KvBits.Eight, 32, 32)]
    [InlineData(KvBits.Ternary, 128, 26)]
    [InlineData(KvBits.Three, 8, 3)]
    public void PackedSizeIsDense(KvBits bits, int count, int bytes) => Assert.Equal(bytes, BitPacking.PackedBytes(count, bits));

    [Fact]
    public void ThreeBitCodesFollowTheDocumentedBitStream()
    {
        // codes 0..7 at 3 bits: bit stream 000 100 010 110 001 101 011 111 (LSB first) = bytes 0x88, 0xC6, 0xFA
        var packed = new byte[3];
        BitPacking.Pack([0, 1, 2, 3, 4, 5, 6, 7], KvBits.Three, packed);
        Assert.Equal(new byte[] { 0x88, 0xC6, 0xFA }, packed);
        var t = new byte[1];
        BitPacking.Pack([2, 1, 0, 0, 1], KvBits.Ternary, t);
        Assert.Equal(2 + 3 + 81, t[0]);
    }

    [Fact]
    public void PackThenUnpackIsIdentityOnEveryPath()
    {
        var gen = Gen.OneOf(Quantized).SelectMany(bits => Gen.Int[1, 40].SelectMany(n8 => Gen.Byte[0, (byte)(bits.Levels() - 1)].Array[n8 * 8].Select(c => (Bits: bits, Codes: c))));
        gen.Sample(pair =>
        {
            var (bits, codes) = (pair.Bits, pair.Codes);
            var packed = new byte[BitPacking.PackedBytes(codes.Length, bits)];
            BitPacking.Pack(codes, bits, packed);
            var want = codes.Select(c => (float)c).ToArray();
            var got = new float[codes.Length];
            BitPacking.UnpackScalar(packed, bits, got);
            Assert.Equal(want, got);
            Array.Clear(got);
            BitPacking.UnpackVector128(packed, bits, got);
            Assert.Equal(want, got);
            Array.Clear(got);
            BitPacking.UnpackVector256(packed, bits, got);
            Assert.Equal(want, got);
            Array.Clear(got);
            BitPacking.UnpackVector512(packed, bits, got);
            Assert.Equal(want, got);
            Array.Clear(got);
            BitPacking.Unpack(packed, bits, got);
            Assert.Equal(want, got);
        });
    }

    [Fact]
    public void ShortPackedBufferIsRejected()
    {
        var e = Assert.Throws<ArgumentException>(() => BitPacking.UnpackScalar(new byte[3], KvBits.Four, new float[8]));
        Assert.Contains("cannot hold 8 codes", e.Message);
    }
}
