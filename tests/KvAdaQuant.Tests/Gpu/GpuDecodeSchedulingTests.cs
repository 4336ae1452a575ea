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
