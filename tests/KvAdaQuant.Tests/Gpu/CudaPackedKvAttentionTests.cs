using KvAdaQuant.Gpu;
using KvAdaQuant.Gpu.Cuda;

namespace KvAdaQuant.Tests.Gpu;

// Runs only where an NVIDIA driver and NVRTC are present; elsewhere each test is skipped with the reason.
public class CudaPackedKvAttentionTests
{
    [SkippableTheory]
    [InlineData("4:g64:tok", "2:g64:tok", true)]
    [InlineData("4:g64:tok", "2:g64:tok", true, true)]
    [InlineData("4:g64:tok", "2:g64:tok", false)]
    [InlineData("1.58:g64:tok", "3:g32:tok", false)]
    [InlineData("6:g64:chan", "5:g128:tok", false)]
    [InlineData("1:g32:chan", "8:g64:chan", false)]
    public void GpuMatchesTheCpuReference(string kText, string vText, bool fast, bool fuseCombine = false)
    {
        bool open = CudaContext.TryOpen(out CudaContext? context, out string reason);
        Skip.IfNot(open, reason);
        Skip.IfNot(NvrtcCompiler.TryLoad(out _, out string nvrtcReason), nvrtcReason);
        using (context)
        {
            using var attention = new CudaPackedKvAttention(context!, 128);
            var rng = new Random(21);
            const int b = 2, kvHeads = 2, qHeads = 8, positions = 576, residual = 64;
            var k = Enumerable.Range(0, b * kvHeads * positions * 128).Select(_ => (float)((rng.NextDouble() * 4) - 2)).ToArray();
            var v = Enumerable.Range(0, k.Length).Select(i => (float)((rng.NextDouble() * 2) - 1 + Math.Cos(i % 128))).ToArray();
            var q = Enumerable.Range(0, b * qHeads * 128).Select(_ => (float)((rng.NextDouble() * 4) - 2)).ToArray();
            PackedKvBatch cache = PackedKvQuantizer.Quantize(k, v, b, kvHeads, qHeads, positions, residual, PackedKvFormat.Parse(kText, 128), PackedKvFormat.Parse(vText, 128));
            float[] want = PackedKvAttentionReference.Attend(cache, q);
            using PackedKvDeviceCache device = attention.Upload(cache);
            using CudaDeviceBuffer qd = context!.Upload<float>(q);
            using CudaDeviceBuffer od = context.Allocate(4L * q.Length);
            od.Fill(0x7FC00000u);
            using PackedKvAttentionPass pass = attention.Prepare(device, qd, od, fast, fuseCombine: fuseCombine);
            Assert.Equal(fast, pass.UsesFastKernel);
            pass.Run();
            context.Synchronize();
            var got = new float[q.Length];
            od.CopyTo<float>(got);
            double maxRef = want.Max(x => Math.Abs(x));
            double maxErr = got.Zip(want, (x, y) => Math.Abs((double)x - y)).Max();
            Assert.True(got.All(float.IsFinite));
            Assert.True(maxErr / maxRef <= (fast ? 1e-3 : 1e-5), $"relative error {maxErr / maxRef}");
        }
    }

    [Fact]
    public void KernelSourceIsEmbedded()
    {
        string source = CudaPackedKvAttention.KernelSource();
        Assert.Contains("kvq_k4v2_fast", source, StringComparison.Ordinal);
        Assert.Contains("kvq_generic_packed", source, StringComparison.Ordinal);
    }
}
