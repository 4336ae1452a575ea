using KvAdaQuant.Numerics;

namespace KvAdaQuant.Tests.Numerics;

/// <summary>The int8 score path's key layout: where each code byte lies, and rows in and out unchanged.</summary>
public unsafe class KeyTilesTests
{
    [Theory]
    [InlineData(16)]
    [InlineData(32)]
    [InlineData(64)]
    public void ATileHoldsItsTokensDwordsAsColumns(int rowBytes)
    {
        const int Rows = 37;
        var rows = new byte[Rows * rowBytes];
        new Random(rowBytes).NextBytes(rows);
        var tiles = new byte[KeyTiles.Bytes(Rows, rowBytes)];
        Assert.Equal(3 * 16 * rowBytes, tiles.Length);
        fixed (byte* tp = tiles)
        {
            for (int t = 0; t < Rows; t++)
            {
                KeyTiles.WriteRow(tp, t, rowBytes, rows.AsSpan(t * rowBytes, rowBytes));
            }

            for (int t = 0; t < Rows; t++)
            {
                // Column k of tile t / 16 is 64 bytes: dword k of its sixteen tokens in token order.
                for (int i = 0; i < rowBytes; i++)
                {
                    long at = ((t / 16) * 16 * rowBytes) + (64 * (i / 4)) + (4 * (t % 16)) + (i % 4);
                    Assert.Equal(at, KeyTiles.Offset(t, i, rowBytes));
                    Assert.Equal(rows[(t * rowBytes) + i], tiles[at]);
                }

                var back = new byte[rowBytes];
                KeyTiles.ReadRow(tp, t, rowBytes, back);
                Assert.Equal(rows.AsSpan(t * rowBytes, rowBytes).ToArray(), back);
            }
        }
    }
}
