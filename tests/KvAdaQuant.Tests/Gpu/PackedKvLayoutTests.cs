using KvAdaQuant.Gpu;

namespace KvAdaQuant.Tests.Gpu;

public class PackedKvLayoutTests
{
    public static TheoryData<string> AllWidths => new() { "1", "1.58", "2", "3", "4", "5", "6", "8" };

    [Theory]
    [MemberData(nameof(AllWidths))]
    public void CodesRoundTripAtEveryPosition(string bits)
    {
        var format = PackedKvFormat.Parse(bits + ":g64:tok", 128);
        var rng = new Random(11);
        var codes = Enumerable.Range(0, 128).Select(_ => rng.Next(format.Levels)).ToArray();
        var row = new byte[format.RowBytes];
        for (int d = 0; d < 128; d++)
        {
            PackedKvCodes.Set(row, format.BitsCode, d, codes[d]);
        }

        // Overwrite in reverse order too: Set must not disturb neighbours.
        for (int d = 127; d >= 0; d -= 3)
        {
            PackedKvCodes.Set(row, format.BitsCode, d, codes[d]);
        }

        for (int d = 0; d < 128; d++)
        {
            Assert.Equal(codes[d], PackedKvCodes.Get(row, format.BitsCode, d));
        }
    }

    [Fact]
    public void RowBytesFollowTheDocumentedPacking()
    {
        int[] expected = [16, 26, 32, 48, 64, 80, 96, 128];
        string[] widths = ["1", "1.58", "2", "3", "4", "5", "6", "8"];
        for (int i = 0; i < widths.Length; i++)
        {
            Assert.Equal(expected[i], PackedKvFormat.Parse(widths[i], 128).RowBytes);
        }

        // K4V2 at 32 heads' worth: 64 + 2*4 bytes of K and 32 + 2*4 of V per token and head.
        Assert.Equal(72, PackedKvFormat.Parse("4:g64:tok", 128).BytesPerHead(1));
        Assert.Equal(40, PackedKvFormat.Parse("2:g64:tok", 128).BytesPerHead(1));
    }

    [Fact]
    public void FourBitCodesAreLowNibbleFirst()
    {
        var row = new byte[64];
        PackedKvCodes.Set(row, 4, 0, 0x3);
        PackedKvCodes.Set(row, 4, 1, 0xA);
        PackedKvCodes.Set(row, 2, 5, 0x2);
        Assert.Equal(0xA3, row[0]);
        Assert.Equal(0x2 << 2, row[1]);
    }

    [Theory]
    [InlineData("7", "bits")]
    [InlineData("4:g48:tok", "groupSize")]
    [InlineData("4:g256:tok", "groupSize")]
    [InlineData("4:x", "unknown part")]
    [InlineData("four", "is not a number")]
    public void BadFormatsAreRejectedNamingTheField(string text, string fragment)
    {
        var e = Assert.ThrowsAny<ArgumentException>(() => PackedKvFormat.Parse(text, 128));
        Assert.Contains(fragment, e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void PerChannelNeedsWholeGroups()
    {
        var format = PackedKvFormat.Parse("4:g64:chan", 128);
        var e = Assert.Throws<ArgumentException>(() => new PackedKvTensor(format, 1, 1, 100));
        Assert.Contains("per-channel groups", e.Message, StringComparison.Ordinal);
    }
}
