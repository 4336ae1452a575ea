using KvAdaQuant.Gpu;

namespace KvAdaQuant.Tests.Gpu;

public class PackedKvQuantizerTests
{
    public static TheoryData<string> Formats => new()
    {
        "1:g64:tok", "1.58:g64:tok", "2:g32:tok", "3:g128:tok", "4:g64:tok", "5:g64:chan", "6:g32:chan", "8:g64:chan", "1.58:g64:chan",
    };

    [Theory]
    [MemberData(nameof(Formats))]
    public void ErrorIsAtMostHalfAStepPlusMinRounding(string text)
    {
        var f = PackedKvFormat.Parse(text, 128);
        const int positions = 128;
        var rng = new Random(3);
        var x = new float[2 * positions * 128];
        for (int i = 0; i < x.Length; i++)
        {
            x[i] = (float)((rng.NextDouble() * 6) - 3);
        }

        // A constant group and an all-zero token.
        Array.Fill(x, 0.25f, 0, 128);
        Array.Fill(x, 0f, 128, 128);
        PackedKvBatch batch = PackedKvQuantizer.Quantize(x, x, 1, 2, 2, positions, 0, f, f);
        for (int h = 0; h < 2; h++)
        {
            for (int t = 0; t < positions; t++)
            {
                for (int d = 0; d < 128; d++)
                {
                    uint pair = batch.Keys.Params[batch.Keys.ParamIndex(0, h, t, d)];
                    double scale = (double)BitConverter.UInt16BitsToHalf((ushort)(pair & 0xFFFF));
                    double min = (double)BitConverter.UInt16BitsToHalf((ushort)(pair >> 16));
                    double original = x[(((h * positions) + t) * 128) + d];
                    double bound = (scale / 2) + (Math.Abs(min) * Math.Pow(2, -11)) + 1e-12;
                    Assert.True(Math.Abs(original - batch.Key(0, h, t, d)) <= bound, $"{text} h{h} t{t} d{d}");
                }
            }
        }
    }

    [Fact]
    public void NaNIsReportedNotPacked()
    {
        var f = PackedKvFormat.Parse("4", 128);
        var x = new float[64 * 128];
        x[77] = float.NaN;
        var e = Assert.Throws<ArgumentException>(() => PackedKvQuantizer.Quantize(x, new float[x.Length], 1, 1, 1, 64, 0, f, f));
        Assert.Contains("keys", e.Message, StringComparison.Ordinal);
    }
}
