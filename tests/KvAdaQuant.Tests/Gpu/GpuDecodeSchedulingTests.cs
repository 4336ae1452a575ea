using KvAdaQuant.Gpu.Decode;
using KvAdaQuant.KvCache;
using KvAdaQuant.Model;

namespace KvAdaQuant.Tests.Gpu;

/// <summary>
/// The host-side bookkeeping of the GPU decode path, checked without a GPU: the packed cache's window policy against
/// the CPU cache's, and the attention splits against the partial buffers they write into.
/// </summary>
public class GpuDecodeSchedulingTests
{
    private static readonly ModelConfig Llama8B = new()
    {
        Dim = 4096,
        HiddenDim = 14336,
        Layers = 32,
        Heads = 32,
        KvHeads = 8,
        HeadDim = 128,
        VocabSize = 128256,
        ContextLength = 131072,
    };

    [Fact]
    public void WindowOf63PlusOneQuantizesWhatTheCpuR64Does()
    {
        var w = default(GpuKvWindow);
        for (int length = 1; length <= 1000; length++)
        {
            if (w.NeedsFlush(63, 1))
            {
                w.Flush(1);
            }

            w.Append();

            // The CPU cache (QuantizedTensorStore, r64, per-token chunk 1) holds max(0, length - 64) packed positions after the append.
            Assert.Equal(Math.Max(0, length - 64), w.Quantized);
            Assert.Equal(length, w.Length);
            Assert.Equal(w, GpuKvWindow.At(length, 63, 1));
        }
    }

    [Theory]
    [InlineData(32, 64, 32, 1)]
    [InlineData(32, 64, 32, 5)]
    [InlineData(7, 64, 32, 3)]
    [InlineData(32, 63, 1, 2)]
    [InlineData(32, 0, 32, 1)]
    [InlineData(256, 64, 32, 0)]
    [InlineData(256, 64, 32, 5)]
    [InlineData(85, 64, 32, 3)]
    [InlineData(256, 63, 1, 2)]
    public void PrefillChunkSegmentsFillTheWindowAsPositionByPositionDoes(int chunk, int window, int flush, int decodeBetween)
    {
        // CudaDecoder.Prefill's loop: flush a full window, then a chunk of n = min(chunk, positions left) positions, whose
        // packed layers attend in CudaDecoder.WindowSegments: each segment appends at most the window's free rows and a full
        // window is flushed before the next. Before every segment the window is the state of the same count appended one by
        // one (so each position sees the packed and window rows it would have seen, and the same rows are quantized), it
        // never overflows, and the segments cover the chunk in order; decode steps between prefills leave it part full, so
        // the next chunk's first segment is cut to the free rows.
        var w = default(GpuKvWindow);
        int length = 0, cut = 0;
        foreach (int prompt in new[] { 150, 37, 300 })
        {
            for (int done = 0; done < prompt;)
            {
                if (w.NeedsFlush(window, flush))
                {
                    w.Flush(flush);
                }

                int n = Math.Min(chunk, prompt - done);
                List<CudaDecoder.WindowSegment> segments = CudaDecoder.WindowSegments(w, n, window, flush, out GpuKvWindow end);
                Assert.False(segments[0].FlushBefore);
                int next = 0;
                foreach (CudaDecoder.WindowSegment seg in segments)
                {
                    Assert.Equal(next, seg.First);
                    Assert.InRange(seg.Count, 1, window + flush);
                    // The window position by position holds before appending this segment's first position (a full one
                    // flushed first); only a segment after another starts on a full window.
                    GpuKvWindow want = GpuKvWindow.At(length + seg.First, window, flush);
                    if (want.NeedsFlush(window, flush))
                    {
                        want.Flush(flush);
                    }

                    Assert.Equal(want, seg.Window);
                    Assert.Equal(seg.First > 0, seg.FlushBefore);
                    Assert.InRange(seg.Window.Residual + seg.Count, 1, window + flush);
                    next += seg.Count;
                }

                Assert.Equal(n, next);
                cut += segments.Count > 1 ? 1 : 0;
                done += n;
                length += n;
                Assert.Equal(GpuKvWindow.At(length, window, flush), end);
                w = end;
            }

            for (int i = 0; i < decodeBetween; i++)
            {
                if (w.NeedsFlush(window, flush))
                {
                    w.Flush(flush);
                }

                w.Append();
                length++;
                Assert.Equal(GpuKvWindow.At(length, window, flush), w);
            }
        }

        // A window of window + flush rows splits some chunks whenever it is smaller than the chunk or left part full.
        Assert.Equal(chunk > flush || decodeBetween % flush != 0, cut > 0);
    }

    [Theory]
    [InlineData(1, 32, 32)]
    [InlineData(2, 32, 32)]
    [InlineData(3, 256, 85)]
    [InlineData(8, 256, 32)]
    [InlineData(64, 32, 4)]
    [InlineData(256, 32, 1)]
    [InlineData(1000, 32, 1)]
    [InlineData(1, 1, 1)]
    [InlineData(1, 300, 256)]
    [InlineData(1, 256, 256)]
    public void PrefillChunkIsCutToTheRowBudget(int batch, int requested, int positions)
    {
        Assert.Equal(positions, CudaDecoder.ChunkPositions(batch, requested));
        Assert.True(positions * batch <= CudaDecoder.MaxChunkRows || positions == 1);
    }

    [Theory]
    [InlineData(8L, 1, 132, 33)]
    [InlineData(8L, 1, 132, 4096)]
    [InlineData(8L, 1, 132, 32768)]
    [InlineData(8L, 2, 132, 131072)]
    [InlineData(64L, 1, 132, 131072)]
    [InlineData(1L, 1, 1, 100)]
    [InlineData(1L, 1, 132, 1_000_000)]
    public void PrefillChunkAttentionSplitsCoverThePositionsWithinTheirPartials(long perHead, int rowGroups, int sms, int length)
    {
        (int tps, int splits) = CudaDecoder.ChunkSplits(perHead, rowGroups, sms, length);
        Assert.True(splits <= CudaDecoder.ChunkMaxSplits(perHead, sms, length), "the partials hold every split");
        Assert.True(tps >= 32 && tps % 32 == 0, $"{tps} positions a split");
        Assert.InRange(splits, 1, 512);
        Assert.True((long)splits * tps >= length, "every position has a split");
        Assert.True((long)(splits - 1) * tps < length, "no split is empty");
        // About four blocks a multiprocessor (at least three after the rounding to 32 positions), where the length allows.
        Assert.True(splits * perHead * rowGroups >= Math.Min(3L * sms, perHead * rowGroups * ((length + 31) / 32)), $"{splits} splits");
    }

    [Theory]
    [InlineData(32, 4, 64, 1)]
    [InlineData(32, 4, 128, 2)]
    [InlineData(21, 8, 128, 3)]
    [InlineData(32, 8, 256, 8)]
    [InlineData(32, 2, 8, 1)]
    [InlineData(1, 1, 64, 1)]
    [InlineData(32, 4, 96, 2)] // head dims between the powers of two take the next one's threads a row
    [InlineData(32, 4, 80, 2)]
    [InlineData(32, 4, 192, 4)]
    public void PrefillChunkAttentionGivesEveryQueryRowAThread(int positions, int ratio, int headDim, int groups)
    {
        Assert.Equal(groups, CudaDecoder.ChunkRowGroups(positions, ratio, headDim));
        int tpr = CudaDecoder.ChunkThreadsPerRow(headDim);
        Assert.True(tpr is 1 or 2 or 4 && headDim % tpr == 0 && headDim / tpr <= 64, $"{tpr} threads a row");
        int rowsPerBlock = 128 / tpr;
        Assert.True(groups * rowsPerBlock >= positions * ratio && (groups - 1) * rowsPerBlock < positions * ratio);
    }

    [Theory]
    [InlineData(3072, 2048, 32, 132)] // Llama 3.2 1B: Q/K/V, output, gate/up, down
    [InlineData(2048, 2048, 32, 132)]
    [InlineData(16384, 2048, 32, 132)]
    [InlineData(2048, 8192, 32, 132)]
    [InlineData(4096, 14336, 64, 132)] // Llama 3.1 8B down, two sequences
    [InlineData(24, 172, 32, 132)] // stories260K's down: fewer columns than one split
    [InlineData(768, 64, 21, 8)]
    public void PrefillMatrixProductsSplitTheirColumnsToFillTheGpu(int rows, int cols, int chunkRows, int sms)
    {
        (int splits, int perSplit) = CudaDecoder.GemmSplits(rows, cols, chunkRows, sms);
        Assert.True(splits >= 1 && perSplit % 32 == 0, $"{splits} x {perSplit}");
        Assert.True((long)splits * perSplit >= cols && (long)(splits - 1) * perSplit < cols, "every column in one split, no split empty");
        Assert.True(splits == 1 || perSplit >= 128, $"{perSplit} columns a split");
        long blocks = (long)((rows + 63) / 64) * ((chunkRows + 31) / 32) * splits;
        Assert.True(blocks >= 5 * sms || splits >= cols / 128 - 1, $"{blocks} blocks for {sms} multiprocessors");
    }

    [Theory]
    [InlineData(8L, 4, 64, 132, 4096, 256)] // Llama 3.2 1B, one sequence
    [InlineData(8L, 4, 128, 132, 32768, 256)] // Llama 3.1 8B
    [InlineData(24L, 4, 64, 132, 4096, 85)] // three sequences
    [InlineData(4L, 2, 8, 132, 512, 256)] // stories260K
    [InlineData(8L, 4, 64, 132, 100, 32)]
    [InlineData(1L, 1, 64, 1, 64, 2)]
    public void PrefillChunkAttentionPartialsHoldEveryChunkUpToTheirSize(long perHead, int ratio, int headDim, int sms, int capacity, int positions)
    {
        int partial = CudaDecoder.ChunkPartialSplits(perHead, ratio, headDim, sms, capacity, positions);
        foreach (int n in Enumerable.Range(1, positions))
        {
            int groups = CudaDecoder.ChunkRowGroups(n, ratio, headDim);
            foreach (int length in new[] { n, 33, 100, 1000, capacity / 2, capacity }.Where(l => l >= n && l <= capacity))
            {
                (_, int splits) = CudaDecoder.ChunkSplits(perHead, groups, sms, length);
                Assert.True((long)n * splits <= (long)positions * partial, $"chunk of {n} at length {length}: {splits} splits over {positions} x {partial}");
            }
        }

        // A chunk of many rows has many row groups and so few splits: at long capacities far fewer partials than positions x
        // the most splits.
        Assert.True(partial <= CudaDecoder.ChunkMaxSplits(perHead, sms, capacity));
        if (positions >= 256 && capacity >= 4096)
        {
            Assert.True(partial * 4 <= CudaDecoder.ChunkMaxSplits(perHead, sms, capacity), $"{partial} partials a row");
        }
    }

    [Theory]
    [InlineData(3072, 2048, 256, 132)]
    [InlineData(2048, 8192, 256, 132)]
    [InlineData(4096, 14336, 85, 132)]
    [InlineData(64, 172, 256, 132)]
    public void PrefillMatrixProductPartialsHoldTheSplitsOfEveryRowCount(int rows, int cols, int chunkRows, int sms)
    {
        long most = CudaDecoder.GemmPartialRows(rows, cols, chunkRows, sms);
        for (int n = 1; n <= chunkRows; n++)
        {
            (int splits, _) = CudaDecoder.GemmSplits(rows, cols, n, sms);
            Assert.True(splits == 1 || (long)splits * n * rows <= most, $"{n} rows: {splits} splits");
        }
    }

    [Fact]
    public void ChunksOf32KeepThePackedCountAMultipleOf32()
    {
        var w = default(GpuKvWindow);
        for (int length = 1; length <= 2000; length++)
        {
            if (w.NeedsFlush(64, 32))
            {
                w.Flush(32);
            }

            w.Append();
            Assert.Equal(0, w.Quantized % 32);
            Assert.InRange(w.Residual, Math.Min(length, 65), 96);
            Assert.Equal(length, w.Length);
            Assert.Equal(w, GpuKvWindow.At(length, 64, 32));
        }
    }

    [Theory]
    [InlineData("fp16", 1, 131072)]
    [InlineData("fp16", 8, 32768)]
    [InlineData("fp16", 300, 4096)]
    [InlineData("k4v2", 1, 131072)]
    [InlineData("k4v2", 8, 32768)]
    [InlineData("k8v4", 2, 65536)]
    public void AttentionSplitsNeverExceedThePartialBuffers(string kv, int batch, int capacity)
    {
        const int sms = 132;
        var layout = GpuKvCacheLayout.Create(KvPlan.Parse(kv, Llama8B.Layers), Llama8B, batch, capacity);
        int most = CudaDecoder.MaxSplits(layout, sms);
        long perHead = (long)batch * Llama8B.KvHeads;
        bool fast = layout.Layers.Any(l => l.UsesFastKernel);
        for (int length = 1; length <= capacity; length++)
        {
            if (!fast)
            {
                (int tpw, int blocks) = CudaDecoder.WarpSplits(perHead, sms, length);
                Assert.True(4L * blocks * tpw >= length, $"length {length}: {blocks} blocks of 4 x {tpw} positions do not cover it");
                Assert.True(4 * blocks <= most, $"length {length}: {4 * blocks} splits, buffers for {most}");
            }
            else
            {
                GpuKvWindow w = GpuKvWindow.At(length - 1, layout.Window, layout.FlushChunk);
                if (w.NeedsFlush(layout.Window, layout.FlushChunk))
                {
                    w.Flush(layout.FlushChunk);
                }

                (int tps, int splits) = CudaDecoder.FastSplits(perHead, w.Quantized, sms);
                Assert.True((long)splits * tps >= w.Quantized);
                Assert.True(splits + 1 <= most, $"length {length}: {splits + 1} splits, buffers for {most}");
            }
        }

        Assert.True(most <= KvAdaQuant.Gpu.CudaPackedKvAttention.MaxSplits);
    }
}
