using KvAdaQuant.Gpu.Cuda;
using KvAdaQuant.Gpu.Decode;
using Xunit.Abstractions;

namespace KvAdaQuant.Tests.Gpu;

/// <summary>
/// A prefill chunk's attention over the FP16 cache on its own, the tensor-core kernel (<c>dec_attn_fp16_chunk_tc</c>) and the
/// FP32 one (<c>dec_attn_fp16_chunk</c>), against causal softmax attention in double precision: head dims 64 (two m-tiles a
/// warp), 96 and 128, 3 and 4 query heads per KV head, one and two sequences, chunks that leave a block's rows part-empty,
/// splits whose last tile is partial, and query rows of magnitudes 0, 1e-30, 1e-3, 1 and 8 (peaked softmax) and rows mixing
/// 100 and 1e-3. The splits' partials are merged here in double, as kvq_combine merges them. GPU only.
/// </summary>
public class CudaChunkAttentionTests(ITestOutputHelper output)
{
    // Query row magnitudes by row index modulo 6 (-1: 100 and 1e-3 alternating inside the row).
    private static readonly double[] Magnitudes = [1, 8, 1e-30, 0, 1e-3, -1];

    [SkippableTheory]
    [InlineData(64, 4, 1, 37, 300, 64)]
    [InlineData(64, 3, 2, 50, 333, 96)]
    [InlineData(96, 4, 1, 33, 200, 64)]
    [InlineData(128, 4, 2, 20, 250, 128)]
    [InlineData(128, 3, 1, 64, 64, 32)] // the whole cache is the chunk
    public void BothKernelsMatchDoublePrecisionAttention(int headDim, int ratio, int seqs, int qps, int length, int positionsPerSplit)
    {
        using CudaContext context = GpuAndCpuFp16.OpenContext();
        const int kvHeads = 2;
        int capacity = length + 16, heads = kvHeads * ratio;
        var rng = new Random((headDim * 131) + (ratio * 17) + qps);

        // Cache [sequence][KV head][capacity][head dim] in FP16 (V of the second KV head 1,000 times larger); queries
        // [position x seqs + sequence][head][head dim].
        var k = new Half[seqs * kvHeads * capacity * headDim];
        var v = new Half[k.Length];
        for (int i = 0; i < k.Length; i++)
        {
            k[i] = (Half)Gaussian(rng);
            v[i] = (Half)(Gaussian(rng) * ((i / (capacity * headDim)) % kvHeads == 1 ? 1000 : 1));
        }

        var q = new float[qps * seqs * heads * headDim];
        for (int row = 0; row < qps * seqs * heads; row++)
        {
            double m = Magnitudes[row % Magnitudes.Length];
            for (int d = 0; d < headDim; d++)
            {
                q[(row * headDim) + d] = (float)(m >= 0 ? m * Gaussian(rng) : (d % 2 == 0 ? 100 : 1e-3) * Gaussian(rng) / Math.Sqrt(headDim));
            }
        }

        float scaleLog2 = (float)(1 / Math.Sqrt(headDim) / Math.Log(2));
        int rowGroups = CudaDecoder.ChunkRowGroups(qps, ratio, headDim);
        int splits = (length + positionsPerSplit - 1) / positionsPerSplit;
        using CudaModule module = context.LoadModule(new CudaDecodeKernels(context).For(headDim).Decode);
        using CudaDeviceBuffer dk = context.Upload<Half>(k);
        using CudaDeviceBuffer dv = context.Upload<Half>(v);
        using CudaDeviceBuffer dq = context.Upload<float>(q);
        using CudaDeviceBuffer partO = context.Allocate(4L * qps * seqs * heads * splits * headDim);
        using CudaDeviceBuffer partML = context.Allocate(4L * qps * seqs * heads * splits * 2);
        foreach (bool tensorCores in new[] { false, true }.Where(t => !t || CudaDecoder.TensorCoresAvailable(context.ComputeCapability)))
        {
            string name = CudaDecoder.ChunkAttentionKernel(null, tensorCores);
            using (CudaLaunch launch = module.Function(name).Prepare(
                (splits * rowGroups, kvHeads, seqs), 128, dk, dv, CudaArgument.FromUInt64((ulong)(capacity * headDim)), dq, partO, partML, length, positionsPerSplit, ratio, scaleLog2, qps, rowGroups))
            {
                launch.Launch();
            }

            context.Synchronize();
            var o = new float[qps * seqs * heads * splits * headDim];
            var ml = new float[qps * seqs * heads * splits * 2];
            partO.CopyTo<float>(o);
            partML.CopyTo<float>(ml);
            double worst = 0;
            for (int p = 0; p < qps; p++)
            {
                for (int b = 0; b < seqs; b++)
                {
                    for (int h = 0; h < heads; h++)
                    {
                        int row = (((p * seqs) + b) * heads) + h;
                        double[] want = Reference(k, v, q, row, capacity, headDim, b, h / ratio, kvHeads, length - (qps - 1 - p), scaleLog2, out double vmax);
                        double[] got = Combine(o, ml, row, splits, headDim);
                        for (int d = 0; d < headDim; d++)
                        {
                            double err = Math.Abs(got[d] - want[d]) / vmax;
                            worst = Math.Max(worst, err);
                            Assert.True(err <= 2e-5, $"{name}: position {p}, sequence {b}, head {h}, dim {d}: {got[d]:R}, want {want[d]:R} (|error| / max |v| = {err:E2})");
                        }
                    }
                }
            }

            output.WriteLine($"head dim {headDim}, {ratio} heads a KV head, {seqs} sequence(s), {qps} positions over {length}, {splits} splits, {name}: max |error| / max |v| = {worst:E2}");
        }
    }

    [Fact]
    public void KernelNamesFollowTheCacheAndTheChoiceAndUnfitHeadDimsOrDevicesRefuseTheTensorCores()
    {
        Assert.Equal("dec_attn_fp16_chunk_tc", CudaDecoder.ChunkAttentionKernel(null, true));
        Assert.Equal("dec_attn_packed_chunk", CudaDecoder.ChunkAttentionKernel(false, false));
        Assert.Equal("dec_attn_packed_k4v2_chunk_tc", CudaDecoder.ChunkAttentionKernel(true, true));
        Assert.True(CudaDecoder.AttentionTensorCoresFit(64));
        Assert.True(CudaDecoder.AttentionTensorCoresFit(96));
        Assert.True(CudaDecoder.AttentionTensorCoresFit(128));
        Assert.False(CudaDecoder.AttentionTensorCoresFit(8));
        Assert.False(CudaDecoder.AttentionTensorCoresFit(40));
        Assert.False(CudaDecoder.AttentionTensorCoresFit(256));
        Assert.True(CudaDecoder.ChooseAttentionTensorCores(null, (9, 0), 64));
        Assert.False(CudaDecoder.ChooseAttentionTensorCores(null, (9, 0), 8));
        Assert.False(CudaDecoder.ChooseAttentionTensorCores(null, (7, 5), 64));
        Assert.False(CudaDecoder.ChooseAttentionTensorCores(false, (9, 0), 64));
        Assert.True(CudaDecoder.ChooseAttentionTensorCores(true, (8, 0), 128));
        var e = Assert.Throws<ArgumentException>(() => CudaDecoder.ChooseAttentionTensorCores(true, (7, 5), 64));
        Assert.Contains("--prefill-attention tensor-cores) needs compute capability 8.0 or later; this device (sm_75) has 7.5", e.Message, StringComparison.Ordinal);
        e = Assert.Throws<ArgumentException>(() => CudaDecoder.ChooseAttentionTensorCores(true, (9, 0), 256));
        Assert.Contains("serves head dimensions that are a multiple of 16 up to 128; this model's is 256", e.Message, StringComparison.Ordinal);
    }

    // Causal attention of one query row over positions [0, end) of its sequence's KV head, in double (log2 units, as the
    // kernels: softmax of scaleLog2 q.k in base 2); vmax: the largest |v| of that head, the error's yardstick.
    private static double[] Reference(Half[] k, Half[] v, float[] q, int row, int capacity, int headDim, int b, int kvh, int kvHeads, int end, float scaleLog2, out double vmax)
    {
        int head = ((b * kvHeads) + kvh) * capacity * headDim;
        var s = new double[end];
        double max = double.NegativeInfinity;
        for (int j = 0; j < end; j++)
        {
            double dot = 0;
            for (int d = 0; d < headDim; d++)
            {
                dot += (double)q[(row * headDim) + d] * (double)k[head + (j * headDim) + d];
            }

            s[j] = dot * scaleLog2;
            max = Math.Max(max, s[j]);
        }

        var outRow = new double[headDim];
        double sum = 0;
        vmax = 0;
        for (int j = 0; j < end; j++)
        {
            double w = Math.Pow(2, s[j] - max);
            sum += w;
            for (int d = 0; d < headDim; d++)
            {
                double x = (double)v[head + (j * headDim) + d];
                outRow[d] += w * x;
                vmax = Math.Max(vmax, Math.Abs(x));
            }
        }

        for (int d = 0; d < headDim; d++)
        {
            outRow[d] /= sum;
        }

        return outRow;
    }

    // The splits' partials (m, l, output relative to 2^m) of one row merged: sum 2^(m_s - M) O_s / sum 2^(m_s - M) l_s.
    private static double[] Combine(float[] o, float[] ml, int row, int splits, int headDim)
    {
        double max = double.NegativeInfinity;
        for (int s = 0; s < splits; s++)
        {
            max = Math.Max(max, ml[(((row * splits) + s) * 2) + 0]);
        }

        var outRow = new double[headDim];
        double l = 0;
        for (int s = 0; s < splits; s++)
        {
            int slot = (row * splits) + s;
            double w = Math.Pow(2, ml[slot * 2] - max);
            l += w * ml[(slot * 2) + 1];
            for (int d = 0; d < headDim; d++)
            {
                outRow[d] += w * o[(slot * headDim) + d];
            }
        }

        for (int d = 0; d < headDim; d++)
        {
            outRow[d] /= l;
        }

        return outRow;
    }

    private static double Gaussian(Random rng) => Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble());
}
