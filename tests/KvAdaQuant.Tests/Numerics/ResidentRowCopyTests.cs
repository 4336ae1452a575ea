using KvAdaQuant.Formats;
using KvAdaQuant.Numerics;

namespace KvAdaQuant.Tests.Numerics;

public unsafe class ResidentRowCopyTests
{
    // Random Q8_0 rows: an FP16 scale and 32 int8 quants per block.
    private static byte[] RandomRows(Random rng, int rows, int blocks)
    {
        var w = new byte[rows * blocks * 34];
        rng.NextBytes(w);
        for (int i = 0; i < rows * blocks; i++)
        {
            fixed (byte* p = &w[i * 34])
            {
                *(Half*)p = (Half)(float)((rng.NextDouble() * 0.02) - 0.01);
            }
        }

        return w;
    }

    [Theory]
    [InlineData(1)]
    [InlineData(6)]
    public void FileMappedQ8_0_ProductsReadTheCopyWithTheSameBitsAndTheMappedPagesLeave(int tokens)
    {
        if (!OperatingSystem.IsLinux())
        {
            return;
        }

        var rng = new Random(31 + tokens);
        const int rows = 256, blocks = 64, cols = blocks * 32; // 557,056 bytes: 136 pages
        var data = RandomRows(rng, rows, blocks);
        using var dir = new TempDir();
        string path = dir.File("q8_0-rows.bin");
        File.WriteAllBytes(path, data);
        var x = Enumerable.Range(0, tokens * cols).Select(_ => (float)((rng.NextDouble() * 4) - 2)).ToArray();
        using var pool = new WorkerPool(2);
        var kernel = new MatMulKernel(pool);
        using var file = new MappedFile(path);
        using var mapped = new WeightMatrix("w", GgmlType.Q8_0, rows, cols, file.Pointer) { IsFileMapped = true };
        Assert.True(mapped.HasResidentRows);
        Assert.False(mapped.IsRepacked);

        // the same rows read in place (a matrix that is not file-mapped gets no copy)
        using var inPlace = new WeightMatrix("w", GgmlType.Q8_0, rows, cols, file.Pointer);
        Assert.False(inPlace.HasResidentRows);
        var expected = new float[tokens * rows];
        kernel.MatMul(inPlace, x, expected, tokens);
        Assert.True(ProcessMappings.ResidentKb(path) >= (data.Length / 1024) - 8);

        var y = new float[tokens * rows];
        kernel.MatMul(mapped, x, y, tokens);
        Assert.True(mapped.IsRepacked);
        Assert.Equal(expected, y);
        Assert.True(new ReadOnlySpan<byte>(mapped.ResidentRowData(), data.Length).SequenceEqual(data));
        long after = ProcessMappings.ResidentKb(path);
        Assert.True(after <= 8, $"mapping still resident after the copy: {after} kB");

        // rows read back from the file unchanged, and a second product (from the copy) gives the same bits
        for (int r = 0; r < rows; r++)
        {
            Assert.True(mapped.RowData(r).SequenceEqual(data.AsSpan(r * blocks * 34, blocks * 34)), $"row {r}");
        }

        var again = new float[y.Length];
        kernel.MatMul(mapped, x, again, tokens);
        Assert.Equal(y, again);
    }

    [Fact]
    public void OnlyFileMappedQ8_0AndF16MatricesGetACopy()
    {
        var data = new byte[4 * 34];
        fixed (byte* p = data)
        {
            using var plain = new WeightMatrix("blk.0.attn_q.weight", GgmlType.Q8_0, 4, 32, p);
            var e = Assert.Throws<InvalidOperationException>(() => plain.ResidentRowData());
            Assert.Contains("blk.0.attn_q.weight", e.Message);
            Assert.Contains("not file-mapped Q8_0", e.Message);

            using var q4 = new WeightMatrix("blk.0.ffn_down.weight", GgmlType.Q4_K, 1, 256, p) { IsFileMapped = true };
            Assert.False(q4.HasResidentRows);
        }
    }
}
