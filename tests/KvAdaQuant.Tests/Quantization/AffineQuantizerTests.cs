using CsCheck;
using KvAdaQuant.Quantization;

namespace KvAdaQuant.Tests.Quantization;

/// <summary>Round-trip error bounds of the group quantizer (property tests).</summary>
public class AffineQuantizerTests
{
    private static readonly KvBits[] Quantized = [KvBits.One, KvBits.Ternary, KvBits.Two, KvBits.Three, KvBits.Four, KvBits.Five, KvBits.Six, KvBits.Eight];

    private static readonly Gen<float> Value = Gen.Frequency(
        (6, Gen.Float[-4f, 4f]),
        (2, Gen.Float[-30000f, 30000f]),
        (1, Gen.Float[-1e-38f, 1e-38f]),
        (1, Gen.OneOf(0f, -0f, 1e-45f, -1e-45f, 30000f, -30000f, 65504f / 3)));

    // Groups: random values, constant groups, all-zero groups, tiny denormals.
    private static readonly Gen<float[]> Group = Gen.Frequency(
        (6, Value.Array[1, 64]),
        (1, Gen.Select(Value, Gen.Int[1, 64], (v, n) => Enumerable.Repeat(v, n).ToArray())),
        (1, Gen.Int[1, 64].Select(n => new float[n])));

    [Fact]
    public void EveryElementWithinHalfAStep()
    {
        Gen.Select(Group, Gen.OneOf(Quantized), Gen.Bool, (x, b, s) => (x, b, s)).Sample((x, bits, sym) =>
        {
            if (bits == KvBits.One && !sym && x.Max() - x.Min() > 65504)
            {
                return; // a 1-bit asymmetric scale of that range does not fit FP16; rejected in its own test
            }

            var codes = new byte[x.Length];
            var p = AffineQuantizer.Quantize(x, 1, x.Length, bits, sym, codes);
            Assert.All(codes, c => Assert.True(c < bits.Levels()));
            var (step, _) = AffineQuantizer.Effective(p, bits, sym);
            var y = new float[x.Length];
            AffineQuantizer.Dequantize(codes, p, bits, sym, y, 1, x.Length);
            float mag = Math.Max(x.Max(MathF.Abs), y.Max(MathF.Abs));
            for (int i = 0; i < x.Length; i++)
            {
                float bound = (step / 2 * (1 + 1e-6f)) + (4e-7f * mag);
                Assert.True(MathF.Abs(x[i] - y[i]) <= bound, $"{bits} sym={sym}: x={x[i]:R} x'={y[i]:R} step={step:R}");
            }
        });
    }

    [Fact]
    public void StridedGroupsQuantizeTheSameAsContiguousOnes()
    {
        Gen.Select(Gen.Float[-10f, 10f].Array[24], Gen.OneOf(Quantized), Gen.Bool, (x, b, s) => (x, b, s)).Sample((x, bits, sym) =>
        {
            // column 1 of an [8, 3] matrix
            var col = new[] { x[1], x[4], x[7], x[10], x[13], x[16], x[19], x[22] };
            var a = new byte[8];
            var b = new byte[8];
            var pa = AffineQuantizer.Quantize(col, 1, 8, bits, sym, a);
            var pb = AffineQuantizer.Quantize(x.AsSpan(1), 3, 8, bits, sym, b);
            Assert.Equal(pa, pb);
            Assert.Equal(a, b);
        });
    }

    [Fact]
    public void ConstantGroupIsExactWithinFp16RoundingOfTheZero()
    {
        var codes = new byte[32];
        var x = Enumerable.Repeat(0.1f, 32).ToArray();
        var p = AffineQuantizer.Quantize(x, 1, 32, KvBits.Four, false, codes);
        var y = new float[32];
        AffineQuantizer.Dequantize(codes, p, KvBits.Four, false, y, 1, 32);
        Assert.All(y, v => Assert.True(MathF.Abs(v - 0.1f) <= 1e-6f, $"{v}"));
        var zero = new float[32];
        p = AffineQuantizer.Quantize(zero, 1, 32, KvBits.Two, true, codes);
        AffineQuantizer.Dequantize(codes, p, KvBits.Two, true, y, 1, 32);
        Assert.All(y, v => Assert.Equal(0f, v));
    }

    [Theory]
    [InlineData(float.NaN, "not finite")]
    [InlineData(float.PositiveInfinity, "not finite")]
    [InlineData(float.NegativeInfinity, "not finite")]
    [InlineData(1e6f, "beyond the FP16 range")]
    public void NonFiniteOrHugeValuesAreRejected(float bad, string message)
    {
        var x = new float[] { 1, 2, bad, 4 };
        var e = Assert.Throws<ArgumentException>(() => AffineQuantizer.Quantize(x, 1, 4, KvBits.Four, false, new byte[4]));
        Assert.Contains(message, e.Message);
        Assert.Contains("element 2", e.Message);
    }

    [Fact]
    public void OneBitScaleBeyondFp16IsRejected()
    {
        var e = Assert.Throws<ArgumentException>(() => AffineQuantizer.Quantize([-60000f, 60000f], 1, 2, KvBits.One, false, new byte[2]));
        Assert.Contains("beyond FP16", e.Message);
    }
}
