using System.Runtime.InteropServices;
using KvAdaQuant.Gpu.Cuda;
using KvAdaQuant.Gpu.Decode;
using KvAdaQuant.Numerics;
using Xunit.Abstractions;

namespace KvAdaQuant.Tests.Gpu;

/// <summary>
/// The prefill chunk's matrix products on their own, the tensor-core kernels (<c>dec_gemm_tc_*</c>) and the FP32 ones
/// (<c>dec_gemm_*</c>), against a double-precision sum over the dequantized weights: F16, Q8_0 and Q4_0 weights, partial
/// row and x tiles, column splits summed by <c>dec_gemm_reduce</c>, accumulation into y, a column count that is not a
/// multiple of 8, and x rows from 1e-30 to 3e9 (beyond FP16's 65,504) with mixed magnitudes inside a block. GPU only.
/// </summary>
public unsafe class CudaChunkGemmTests(ITestOutputHelper output)
{
    // Row magnitudes of x, by row index modulo 7 (the last: 1e5 and 1e-3 alternating inside each block; 0: all zero).
    private static readonly double[] Magnitudes = [1, 1e-7, 7e4, 3e9, 1e-30, 0, -1];

    [SkippableTheory]
    [InlineData(GgmlType.F16, 100, 320, 45, 128, true)]
    [InlineData(GgmlType.F16, 70, 203, 33, 224, false)] // 203 columns: the element-by-element path
    [InlineData(GgmlType.Q8_0, 100, 320, 45, 128, true)]
    [InlineData(GgmlType.Q8_0, 64, 96, 7, 96, false)]
    [InlineData(GgmlType.Q8_0, 130, 1024, 64, 256, false)]
    [InlineData(GgmlType.Q4_0, 100, 320, 45, 128, true)]
    [InlineData(GgmlType.Q4_0, 64, 96, 7, 96, false)]
    public void BothKernelsMatchADoubleSumWithinFp32Rounding(GgmlType type, int rows, int cols, int nx, int colsPerSplit, bool accumulate)
    {
        using CudaContext context = GpuAndCpuFp16.OpenContext();
        var rng = new Random(rows * 31 + cols);
        float[] w = Enumerable.Range(0, rows * cols).Select(_ => (float)Gaussian(rng)).ToArray();
        long bytes = GgmlTypeInfo.ByteSize(type, (long)rows * cols);
        byte* data = (byte*)NativeMemory.AllocZeroed((nuint)bytes);
        try
        {
            long rowBytes = bytes / rows;
            for (int r = 0; r < rows; r++)
            {
                RowQuantizer.Quantize(type, w.AsSpan(r * cols, cols), new Span<byte>(data + (r * rowBytes), (int)rowBytes));
            }

            using var matrix = new WeightMatrix("w", type, rows, cols, data);
            var deq = new float[rows * cols];
            for (int r = 0; r < rows; r++)
            {
                matrix.DequantizeRow(r, deq.AsSpan(r * cols, cols));
            }

            float[] x = new float[nx * cols];
            for (int b = 0; b < nx; b++)
            {
                double m = Magnitudes[b % Magnitudes.Length];
                for (int c = 0; c < cols; c++)
                {
                    x[(b * cols) + c] = (float)(m >= 0 ? m * Gaussian(rng) : (c % 2 == 0 ? 1e5 : 1e-3) * Gaussian(rng));
                }
            }

            float[] y0 = Enumerable.Range(0, nx * rows).Select(i => (float)(Gaussian(rng) * Math.Abs(Magnitudes[i / rows % Magnitudes.Length]))).ToArray();

            // The reference and, per output, the sum of |w x| (+ |y0|) that FP32 rounding is measured against.
            var want = new double[nx * rows];
            var scale = new double[nx * rows];
            for (int b = 0; b < nx; b++)
            {
                for (int r = 0; r < rows; r++)
                {
                    double y = accumulate ? y0[(b * rows) + r] : 0;
                    (double s, double a) = DoubleSum(deq, x, cols, r, b);
                    want[(b * rows) + r] = y + s;
                    scale[(b * rows) + r] = Math.Abs(y) + a;
                }
            }

            using CudaWeightMatrix gpuW = CudaWeightMatrix.Upload(context, [matrix], keepQuantized: true);
            Assert.Equal(type switch { GgmlType.Q8_0 => GpuWeightType.Q8_0, GgmlType.Q4_0 => GpuWeightType.Q4_0, _ => GpuWeightType.F16 }, gpuW.Type);
            using CudaModule module = context.LoadModule(new CudaDecodeKernels(context).For(64).Decode);
            foreach (bool tensorCores in new[] { false, true }.Where(t => !t || CudaDecoder.TensorCoresAvailable(context.ComputeCapability)))
            {
                float[] got = Run(context, module, gpuW, x, nx, y0, accumulate, colsPerSplit, tensorCores);
                double worst = 0;
                for (int i = 0; i < got.Length; i++)
                {
                    Assert.True(float.IsFinite(got[i]), $"{(tensorCores ? "tensor cores" : "FMA")}: y[{i / rows}][{i % rows}] = {got[i]}");
                    double err = Math.Abs(got[i] - want[i]) / Math.Max(scale[i], 1e-300);
                    worst = Math.Max(worst, err);
                    Assert.True(
                        err <= 2e-6 || (scale[i] == 0 && got[i] == 0),
                        $"{(tensorCores ? "tensor cores" : "FMA")} {type}: y[{i / rows}][{i % rows}] = {got[i]:R}, want {want[i]:R} (|error| / sum |w x| = {err:E2})");
                }

                output.WriteLine($"{type} {rows}x{cols}, {nx} rows of x, {(cols + colsPerSplit - 1) / colsPerSplit} splits, {(tensorCores ? "dec_gemm_tc" : "dec_gemm")}: max |error| / sum |w x| = {worst:E2}");
            }
        }
        finally
        {
            NativeMemory.Free(data);
        }
    }

    [SkippableTheory]
    [InlineData("stories260K")] // F16 weights, 172 columns in the down projection (the element-by-element path)
    [InlineData("stories3M-q80")] // Q8_0
    public void OnAModelsOwnActivationsBothKernelsMatchADoubleSum(string modelName)
    {
        // The last chunk of a 150-token prompt (22 rows after 128): the inputs of the last layer's W13, Wo and W2 as the
        // decoder left them, through both kernels, against double precision over the weights as uploaded.
        using CudaContext context = GpuAndCpuFp16.OpenContext();
        using var model = KvAdaQuant.Formats.ModelLoader.Load(modelName);
        var c = model.Config;
        var rng = new Random(1);
        int[] prompt = Enumerable.Range(0, 150).Select(i => i == 0 ? c.BosToken : rng.Next(3, c.VocabSize)).ToArray();
        using CudaModule module = context.LoadModule(new CudaDecodeKernels(context).For(c.HeadDim).Decode);
        using var decoder = new CudaDecoder(context, model, KvAdaQuant.KvCache.KvPlan.Parse("fp16", c.Layers), 1, 160, prefillChunk: 128);
        decoder.Prefill(prompt);
        const int nx = 22;
        var lw = model.Weights.Layers[c.Layers - 1];
        foreach (var (name, parts, which, width) in new (string, WeightMatrix[], int, int)[] { ("W13", [lw.W1, lw.W3], 0, c.Dim), ("Wo", [lw.Wo], 1, c.QDim), ("W2", [lw.W2], 2, c.HiddenDim) })
        {
            float[] x = decoder.ChunkGemmInput(which, nx, width);
            Assert.Contains(x, v => v != 0);
            using CudaWeightMatrix w = CudaWeightMatrix.Upload(context, parts, keepQuantized: true);
            var deq = new float[w.Rows * w.Cols];
            int r0 = 0;
            foreach (WeightMatrix part in parts)
            {
                for (int r = 0; r < part.Rows; r++)
                {
                    part.DequantizeRow(r, deq.AsSpan((r0 + r) * w.Cols, w.Cols));
                }

                r0 += part.Rows;
            }

            if (w.Type == GpuWeightType.F16 && parts[0].Type != GgmlType.F16)
            {
                // F32 weights go to the GPU as FP16.
                for (int i = 0; i < deq.Length; i++)
                {
                    deq[i] = (float)(Half)deq[i];
                }
            }

            foreach (bool tensorCores in new[] { false, true }.Where(t => !t || CudaDecoder.TensorCoresAvailable(context.ComputeCapability)))
            {
                float[] y = Run(context, module, w, x, nx, new float[nx * w.Rows], false, (w.Cols + 31) / 32 * 32, tensorCores);
                double worst = 0;
                for (int b = 0; b < nx; b++)
                {
                    for (int r = 0; r < w.Rows; r++)
                    {
                        (double sum, double abs) = DoubleSum(deq, x, w.Cols, r, b);
                        worst = Math.Max(worst, Math.Abs(y[(b * w.Rows) + r] - sum) / abs);
                    }
                }

                output.WriteLine($"{modelName} {name} ({w.Rows}x{w.Cols} {w.Type}), {(tensorCores ? "dec_gemm_tc" : "dec_gemm")}: max |error| / sum |w x| = {worst:E2}");
                Assert.True(worst <= 2e-6, $"{name}: {worst:E2}");
            }
        }
    }

    [Fact]
    public void KernelNamesFollowTheWeightTypeAndTheChoiceAndOldDevicesRefuseTheTensorCores()
    {
        Assert.Equal("dec_gemm_tc_q8", CudaDecoder.ChunkGemmKernel(GpuWeightType.Q8_0, true));
        Assert.Equal("dec_gemm_q4", CudaDecoder.ChunkGemmKernel(GpuWeightType.Q4_0, false));
        Assert.Equal("dec_gemm_tc_f16", CudaDecoder.ChunkGemmKernel(GpuWeightType.F16, true));
        Assert.True(CudaDecoder.TensorCoresAvailable((8, 0)));
        Assert.True(CudaDecoder.TensorCoresAvailable((9, 0)));
        Assert.False(CudaDecoder.TensorCoresAvailable((7, 5)));
        Assert.True(CudaDecoder.ChooseTensorCores(null, (9, 0)));
        Assert.False(CudaDecoder.ChooseTensorCores(null, (7, 5)));
        Assert.False(CudaDecoder.ChooseTensorCores(false, (9, 0)));
        Assert.True(CudaDecoder.ChooseTensorCores(true, (8, 6)));
        var e = Assert.Throws<ArgumentException>(() => CudaDecoder.ChooseTensorCores(true, (7, 5)));
        Assert.Contains("--prefill-gemm tensor-cores) need compute capability 8.0 or later; this device (sm_75) has 7.5", e.Message, StringComparison.Ordinal);
    }

    // y (+)= W x through the kernel and, with more than one split, dec_gemm_reduce, as CudaDecoder launches them.
    internal static float[] Run(CudaContext context, CudaModule module, CudaWeightMatrix m, float[] x, int nx, float[] y0, bool accumulate, int colsPerSplit, bool tensorCores)
    {
        int splits = (m.Cols + colsPerSplit - 1) / colsPerSplit;
        using CudaDeviceBuffer dx = context.Upload<float>(x);
        using CudaDeviceBuffer dy = context.Upload<float>(y0);
        using CudaDeviceBuffer part = context.Allocate(4L * splits * nx * m.Rows);
        CudaKernel gemm = module.Function(CudaDecoder.ChunkGemmKernel(m.Type, tensorCores));
        using (CudaLaunch launch = gemm.Prepare(
            ((m.Rows + 63) / 64, (nx + 31) / 32, splits), 128, m.Codes, m.Scales, m.LeadingDimension, dx, m.Cols, dy, m.Rows, m.Rows, m.Cols, nx, accumulate ? 1 : 0, part, colsPerSplit))
        {
            launch.Launch();
        }

        if (splits > 1)
        {
            using CudaLaunch reduce = module.Function("dec_gemm_reduce").Prepare((Math.Min(4096, ((m.Rows * nx) + 255) / 256), 1, 1), 256, part, splits, dy, m.Rows, m.Rows, nx, accumulate ? 1 : 0);
            reduce.Launch();
        }

        context.Synchronize();
        var y = new float[nx * m.Rows];
        dy.CopyTo<float>(y);
        return y;
    }

    // Row r of the weights times row b of x in double precision, and the sum of |w x| (FP32 rounding's yardstick).
    private static (double Sum, double Abs) DoubleSum(float[] w, float[] x, int cols, int r, int b)
    {
        double sum = 0, abs = 0;
        for (int c = 0; c < cols; c++)
        {
            double p = (double)w[(r * cols) + c] * x[(b * cols) + c];
            sum += p;
            abs += Math.Abs(p);
        }

        return (sum, abs);
    }

    private static double Gaussian(Random rng) => Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble());
}
