using KvAdaQuant.Formats;
using KvAdaQuant.Numerics;

namespace KvAdaQuant.Tests.Numerics;

public unsafe class Q4_0RowGroupsTests
{
    private static bool Same(float a, float b) => BitConverter.SingleToInt32Bits(a) == BitConverter.SingleToInt32Bits(b);

    // Random Q4_0 rows whose scales are signed, FP16 subnormal or zero as well as ordinary (Q4_0's d = max / -8).
    private static byte[] RandomRows(Random rng, int rows, int blocks)
    {
        var w = new byte[rows * blocks * 18];
        rng.NextBytes(w);
        for (int i = 0; i < rows * blocks; i++)
        {
            fixed (byte* p = &w[i * 18])
            {
                *(Half*)p = (i % 5) switch
                {
                    0 => (Half)(float)(-((rng.NextDouble() * 0.02) + 0.001)),
                    1 => (Half)(float)(rng.NextDouble() * 5e-5),
                    2 => (Half)0f,
                    _ => (Half)(float)((rng.NextDouble() * 0.02) + 0.001),
                };
            }
        }

        return w;
    }

    private static Q8Activations Activations(Random rng, int tokens, int cols)
    {
        var x = Enumerable.Range(0, tokens * cols).Select(_ => (float)((rng.NextDouble() * 4) - 2)).ToArray();
        var a = new Q8Activations();
        a.Quantize(x, tokens, cols);
        return a;
    }

    [Fact]
    public void Repack_PutsEachRowsScaleAndQuantBytesInItsUnitSlot()
    {
        var rng = new Random(1);
        const int rows = 16, blocks = 3;
        var data = RandomRows(rng, rows, blocks);
        fixed (byte* p = data)
        {
            using var w = new WeightMatrix("w", GgmlType.Q4_0, rows, blocks * 32, p);
            var copy = new byte[w.ByteCount];
            fixed (byte* c = copy)
            {
                Q4_0RowGroups.Repack(w, c, 0, rows / 8);
            }

            // Expected position of each original byte, from the layout's definition: after the 8 scales, four chunks of
            // 32 bytes, chunk c holding quant bytes 4c..4c+3 of rows 0..7 in turn.
            for (int r = 0; r < rows; r++)
            {
                for (int b = 0; b < blocks; b++)
                {
                    int unit = (((r / 8) * blocks) + b) * 144;
                    int src = ((r * blocks) + b) * 18;
                    Assert.Equal(data[src], copy[unit + (2 * (r % 8))]);
                    Assert.Equal(data[src + 1], copy[unit + (2 * (r % 8)) + 1]);
                    for (int i = 0; i < 16; i++)
                    {
                        int at = unit + 16 + ((i / 4) * 32) + ((r % 8) * 4) + (i % 4);
                        Assert.Equal(at - unit, Q4_0RowGroups.QuantOffset(r % 8, i));
                        Assert.True(data[src + 2 + i] == copy[at], $"row {r} block {b} quant byte {i}");
                    }
                }
            }
        }
    }

    [Fact]
    public void Repack_RejectsMatricesWithoutRowGroups()
    {
        var data = new byte[12 * 18];
        fixed (byte* p = data)
        {
            using var w = new WeightMatrix("blk.0.odd", GgmlType.Q4_0, 12, 32, p);
            Assert.False(w.HasQ4_0RowGroups);
            var e = Assert.Throws<InvalidOperationException>(() => w.Q4_0RowGroupData());
            Assert.Contains("blk.0.odd", e.Message);
            var buffer = new byte[data.Length];
            fixed (byte* b = buffer)
            {
                byte* pb = b;
                Assert.Throws<ArgumentException>(() => Q4_0RowGroups.Repack(w, pb, 0, 1));
            }
        }
    }

    [Theory]
    [InlineData(1, 1)]
    [InlineData(7, 2)]
    [InlineData(64, 3)]
    [InlineData(5, 4)]
    public void RowGroupKernel_GivesTheBitsOfTheUnrepackedChainAndOfItsScalarTwin(int blocks, int tokens)
    {
        var rng = new Random(100 + (blocks * 7) + tokens);
        int cols = blocks * 32;
        var data = RandomRows(rng, 8, blocks);
        var a = Activations(rng, tokens, cols);
        var unrepacked = new float[tokens * 11];
        var vector = new float[tokens * 11];
        var scalar = new float[tokens * 11];
        var copy = new byte[data.Length];
        fixed (byte* p = data)
        fixed (byte* c = copy)
        fixed (sbyte* pq = a.Values)
        fixed (float* pd = a.Scales)
        fixed (int* ps = a.Sums)
        fixed (float* pu = unrepacked)
        fixed (float* pv = vector)
        fixed (float* pscalar = scalar)
        {
            using var w = new WeightMatrix("w", GgmlType.Q4_0, 8, cols, p);
            Q4_0RowGroups.Repack(w, c, 0, 1);
            QuantizedDot.DotQ4_0x8ChainTokens(p, blocks * 18, tokens, pq, cols, pd, ps, blocks, blocks, pu, 11);
            QuantizedDot.DotQ4_0RowGroup(c, tokens, pq, cols, pd, ps, blocks, blocks, pv, 11);
            QuantizedDot.DotQ4_0RowGroupScalar(c, tokens, pq, cols, pd, blocks, blocks, pscalar, 11);
            for (int t = 0; t < tokens; t++)
            {
                for (int r = 0; r < 8; r++)
                {
                    int i = (t * 11) + r;
                    float chain = QuantizedDot.DotQ4_0ChainScalar(p + (r * blocks * 18), pq + (t * cols), pd + (t * blocks), blocks);
                    Assert.True(Same(unrepacked[i], vector[i]), $"token {t} row {r}: repacked {vector[i]:R} vs unrepacked {unrepacked[i]:R}");
                    Assert.True(Same(scalar[i], vector[i]), $"token {t} row {r}: vector {vector[i]:R} vs scalar twin {scalar[i]:R}");
                    Assert.True(Same(chain, scalar[i]), $"token {t} row {r}: scalar twin {scalar[i]:R} vs row chain {chain:R}");
                }

                // the outputs between the strides are left alone.
                Assert.Equal(0f, vector[(t * 11) + 8]);
                Assert.Equal(0f, scalar[(t * 11) + 10]);
            }

            byte* group = c;
            sbyte* q = pq;
            float* d = pd;
            int* sums = ps;
            float* o = pv;
            Assert.Throws<ArgumentOutOfRangeException>(() => QuantizedDot.DotQ4_0RowGroup(group, 5, q, cols, d, sums, blocks, blocks, o, 11));
        }
    }

    [Theory]
    [InlineData(1)]
    [InlineData(7)]
    public void MatMul_ReadsTheCopyWithTheBitsOfTheRowChainAndLeavesTheRowsAlone(int tokens)
    {
        var rng = new Random(20 + tokens);
        const int rows = 40, blocks = 5, cols = blocks * 32;
        var data = RandomRows(rng, rows, blocks);
        var original = data.ToArray();
        var x = Enumerable.Range(0, tokens * cols).Select(_ => (float)((rng.NextDouble() * 4) - 2)).ToArray();
        var a = new Q8Activations();
        a.Quantize(x, tokens, cols);
        var y = new float[tokens * rows];
        using var pool = new WorkerPool(2);
        var kernel = new MatMulKernel(pool);
        fixed (byte* p = data)
        fixed (sbyte* pq = a.Values)
        fixed (float* pd = a.Scales)
        {
            using var w = new WeightMatrix("w", GgmlType.Q4_0, rows, cols, p);
            Assert.True(MatMulKernel.Q4_0InRowGroups(w));
            Assert.False(w.IsRepacked);
            kernel.MatMul(w, x, y, tokens);
            Assert.True(w.IsRepacked);
            for (int t = 0; t < tokens; t++)
            {
                for (int r = 0; r < rows; r++)
                {
                    float chain = QuantizedDot.DotQ4_0ChainScalar(w.RowPointer(r), pq + (t * cols), pd + (t * blocks), blocks);
                    Assert.True(Same(chain, y[(t * rows) + r]), $"token {t} row {r}: {y[(t * rows) + r]:R} vs {chain:R}");
                }
            }

            // the rows are untouched (embedding lookups and dequantization keep reading them), and disposing the copy
            // leaves the matrix usable: the next product makes it again, with the same bits.
            Assert.Equal(original, data);
            var again = new float[y.Length];
            w.Dispose();
            Assert.False(w.IsRepacked);
            kernel.MatMul(w, x, again, tokens);
            Assert.Equal(y, again);
        }
    }

    [Fact]
    public void ConcurrentFirstProducts_MakeOneCopyWithTheSameBits()
    {
        var rng = new Random(5);
        const int rows = 64, blocks = 4, cols = blocks * 32;
        var data = RandomRows(rng, rows, blocks);
        fixed (byte* p = data)
        {
            using var w = new WeightMatrix("w", GgmlType.Q4_0, rows, cols, p);
            var pointers = new nint[4];
            Parallel.For(0, pointers.Length, i => pointers[i] = (nint)w.Q4_0RowGroupData());
            Assert.All(pointers, q => Assert.Equal(pointers[0], q));
            var copy = new byte[w.ByteCount];
            fixed (byte* c = copy)
            {
                Q4_0RowGroups.Repack(w, c, 0, rows / 8);
            }

            Assert.True(copy.AsSpan().SequenceEqual(new ReadOnlySpan<byte>((byte*)pointers[0], copy.Length)));
        }
    }

    [Fact]
    public void FileMappedMatrix_DropsItsMappedPagesAfterRepackingAndItsRowsReadBackFromTheFile()
    {
        if (!OperatingSystem.IsLinux())
        {
            return;
        }

        var rng = new Random(9);
        const int rows = 512, blocks = 64, cols = blocks * 32; // 589,824 bytes: 144 pages
        var data = RandomRows(rng, rows, blocks);
        using var dir = new TempDir();
        string path = dir.File("q4_0-rows.bin");
        File.WriteAllBytes(path, data);
        using var file = new MappedFile(path);
        using var w = new WeightMatrix("w", GgmlType.Q4_0, rows, cols, file.Pointer) { IsFileMapped = true };
        long sum = 0;
        for (int r = 0; r < rows; r++)
        {
            foreach (byte b in w.RowData(r))
            {
                sum += b;
            }
        }

        long before = ProcessMappings.ResidentKb(path);
        Assert.True(before >= data.Length / 1024 - 8, $"touched mapping resident {before} kB, expected about {data.Length / 1024} kB");
        using var pool = new WorkerPool(2);
        w.Q4_0RowGroupData(pool);
        long after = ProcessMappings.ResidentKb(path);
        Assert.True(after <= 8, $"mapping still resident after repacking: {after} kB (was {before} kB)");

        // read back from the file, unchanged (MADV_DONTNEED on a file mapping never zeroes).
        long again = 0;
        for (int r = 0; r < rows; r++)
        {
            Assert.True(w.RowData(r).SequenceEqual(data.AsSpan(r * blocks * 18, blocks * 18)), $"row {r}");
            foreach (byte b in w.RowData(r))
            {
                again += b;
            }
        }

        Assert.Equal(sum, again);

        // Lookups (a token embedding that is also the classifier) leave the mapping released.
        ProcessMappings.AssertLookupsLeaveTheMappingReleased(w, data, path, step: 3);
    }
}
