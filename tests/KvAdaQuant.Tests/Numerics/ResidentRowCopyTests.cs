using KvAdaQuant.Formats;
using KvAdaQuant.Numerics;

namespace KvAdaQuant.Tests.Numerics;

public unsafe class ResidentRowCopyTests
{
    // Random rows of Q8_0 (an FP16 scale and 32 int8 quants per block), Q4_K or Q6_K (random codes, sane FP16 scales).
    private static byte[] RandomRows(Random rng, GgmlType type, int rows, int cols)
    {
        int blockValues = type == GgmlType.Q8_0 ? 32 : 256;
        int blockBytes = (int)GgmlTypeInfo.ByteSize(type, blockValues);
        var w = new byte[rows * (cols / blockValues) * blockBytes];
        rng.NextBytes(w);
        for (int i = 0; i < w.Length / blockBytes; i++)
        {
            fixed (byte* p = &w[i * blockBytes])
            {
                *(Half*)(p + (type == GgmlType.Q6_K ? 208 : 0)) = (Half)(float)((rng.NextDouble() * 0.02) - 0.01);
                if (type == GgmlType.Q4_K)
                {
                    *(Half*)(p + 2) = (Half)(float)(rng.NextDouble() * 0.01);
                }
            }
        }

        return w;
    }

    [Theory]
    [InlineData(GgmlType.Q8_0, 1)]
    [InlineData(GgmlType.Q8_0, 6)]
    [InlineData(GgmlType.Q4_K, 1)]
    [InlineData(GgmlType.Q4_K, 6)]
    [InlineData(GgmlType.Q6_K, 1)]
    [InlineData(GgmlType.Q6_K, 6)]
    public void FileMappedRows_ProductsReadTheCopyWithTheSameBitsAndTheMappedPagesLeave(GgmlType type, int tokens)
    {
        if (!OperatingSystem.IsLinux())
        {
            return;
        }

        var rng = new Random(31 + tokens);
        // Q8_0: 557,056 bytes, 136 pages; Q6_K 423,360 bytes; Q4_K 290,304 bytes (252 rows: K-quant matrices whose rows are
        // a multiple of 8 get row groups instead, KQuantRowGroupsTests)
        int rows = type == GgmlType.Q8_0 ? 256 : 252;
        const int cols = 2048;
        var data = RandomRows(rng, type, rows, cols);
        long rowBytes = GgmlTypeInfo.ByteSize(type, cols);
        using var dir = new TempDir();
        string path = dir.File($"{type}-rows.bin");
        File.WriteAllBytes(path, data);
        var x = Enumerable.Range(0, tokens * cols).Select(_ => (float)((rng.NextDouble() * 4) - 2)).ToArray();
        using var pool = new WorkerPool(2);
        var kernel = new MatMulKernel(pool);
        using var file = new MappedFile(path);
        using var mapped = new WeightMatrix("w", type, rows, cols, file.Pointer) { IsFileMapped = true };
        Assert.True(mapped.HasResidentRows);
        Assert.False(mapped.IsRepacked);

        // the same rows read in place (a matrix that is not file-mapped gets no copy)
        using var inPlace = new WeightMatrix("w", type, rows, cols, file.Pointer);
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

        // rows (and lookups: a token embedding that is also the classifier) now read from the copy, unchanged, and
        // leave the mapping alone; a second product (from the copy) gives the same bits
        var x1 = new float[cols];
        var want = new float[cols];
        for (int r = 0; r < rows; r++)
        {
            Assert.True(mapped.RowData(r).SequenceEqual(data.AsSpan((int)(r * rowBytes), (int)rowBytes)), $"row {r}");
            fixed (byte* at = mapped.RowData(r))
            {
                Assert.True(at == mapped.ResidentRowData() + (r * rowBytes), $"row {r} is not read from the copy");
            }

            mapped.DequantizeRow(r, x1);
            RowDequantizer.Dequantize(type, data.AsSpan((int)(r * rowBytes), (int)rowBytes), want);
            Assert.Equal(want, x1);
        }

        long afterRows = ProcessMappings.ResidentKb(path);
        Assert.True(afterRows <= 8, $"reading the rows faulted the mapping back in: {afterRows} kB");

        var again = new float[y.Length];
        kernel.MatMul(mapped, x, again, tokens);
        Assert.Equal(y, again);
    }

    [Fact]
    public void OnlyFileMappedQ8_0F16Q4_KAndQ6_KMatricesGetACopy()
    {
        var data = new byte[256];
        fixed (byte* p = data)
        {
            using var plain = new WeightMatrix("blk.0.attn_q.weight", GgmlType.Q8_0, 4, 32, p);
            var e = Assert.Throws<InvalidOperationException>(() => plain.ResidentRowData());
            Assert.Contains("blk.0.attn_q.weight", e.Message);
            Assert.Contains("not file-mapped Q8_0", e.Message);

            using var q4 = new WeightMatrix("blk.0.ffn_down.weight", GgmlType.Q4_K, 1, 256, p) { IsFileMapped = true };
            Assert.True(q4.HasResidentRows);
            using var q6 = new WeightMatrix("blk.0.ffn_down.weight", GgmlType.Q6_K, 1, 256, p) { IsFileMapped = true };
            Assert.True(q6.HasResidentRows);

            // (8 rows: row groups instead)
            using var q4x8 = new WeightMatrix("blk.0.ffn_down.weight", GgmlType.Q4_K, 8, 256, p) { IsFileMapped = true };
            Assert.False(q4x8.HasResidentRows);
            using var q5 = new WeightMatrix("blk.0.ffn_down.weight", GgmlType.Q5_K, 1, 256, p) { IsFileMapped = true };
            Assert.False(q5.HasResidentRows);
        }
    }
}
