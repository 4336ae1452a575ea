using KvAdaQuant.Gpu.Cuda;

namespace KvAdaQuant.Gpu.Decode;

/// <summary>
/// Checks the device-side quantization of the decode cache (dec_kv_flush) against the CPU quantizer: random FP16
/// window rows are quantized on the GPU into packed rows [32, 64) of a 64-token cache, and the codes and (scale, min)
/// pairs must equal, byte for byte, what <see cref="PackedKvQuantizer"/> (the CPU cache's AffineQuantizer) makes of
/// the same FP16 values; the window rows behind the flushed chunk must move to its front unchanged.
/// </summary>
public static class CudaKvFlushCheck
{
    /// <summary>Runs the check for K and V widths <paramref name="keyBits"/> / <paramref name="valueBits"/>; returns mismatching bytes (0 = pass).</summary>
    public static long Run(CudaContext context, int headDim, double keyBits, double valueBits, int group, uint seed, CudaDecodeKernels? kernels = null)
    {
        ArgumentNullException.ThrowIfNull(context);
        const int batch = 2, kvHeads = 2, chunk = GpuKvCacheLayout.DefaultFlushChunk, count = chunk + 8, capacity = 64, t0 = 32;
        var kf = new PackedKvFormat(keyBits, group, PackedKvAxis.PerToken, headDim);
        var vf = new PackedKvFormat(valueBits, group, PackedKvAxis.PerToken, headDim);
        kernels ??= new CudaDecodeKernels(context);
        using CudaModule module = context.LoadModule(kernels.For(headDim).Decode);
        var rng = new Random((int)seed);
        int heads = batch * kvHeads;
        var resK = new ushort[heads * count * headDim];
        var resV = new ushort[resK.Length];
        for (int i = 0; i < resK.Length; i++)
        {
            // Different spreads per row so the scales vary; a few rows constant (scale 0).
            int row = i / headDim;
            float spread = row % 7 == 3 ? 0f : 0.05f + (row % 5);
            resK[i] = BitConverter.HalfToUInt16Bits((Half)((rng.NextSingle() * 2f - 1f) * spread));
            resV[i] = BitConverter.HalfToUInt16Bits((Half)((rng.NextSingle() * 2f - 0.5f) * spread));
        }

        using CudaDeviceBuffer dk = context.Upload<ushort>(resK), dv = context.Upload<ushort>(resV);
        using CudaDeviceBuffer kCodes = context.Allocate(heads * capacity * kf.RowBytes), kPar = context.Allocate(heads * kf.ParamCount(capacity) * 4);
        using CudaDeviceBuffer vCodes = context.Allocate(heads * capacity * vf.RowBytes), vPar = context.Allocate(heads * vf.ParamCount(capacity) * 4);
        using (CudaLaunch flush = module.Function("dec_kv_flush").Prepare(
            (kvHeads, batch, 1), CudaDecoder.FlushThreads, dk, dv, CudaArgument.FromUInt64((ulong)(count * headDim)), count, chunk,
            kCodes, kPar, kf.BitsCode, kf.RowBytes, kf.GroupSize, vCodes, vPar, vf.BitsCode, vf.RowBytes, vf.GroupSize,
            CudaArgument.FromUInt64(capacity), t0))
        {
            flush.Launch();
        }

        context.Synchronize();
        var gotKc = new byte[kCodes.Length];
        var gotVc = new byte[vCodes.Length];
        var gotKp = new uint[kPar.Length / 4];
        var gotVp = new uint[vPar.Length / 4];
        var gotK = new ushort[resK.Length];
        var gotV = new ushort[resV.Length];
        kCodes.CopyTo<byte>(gotKc);
        vCodes.CopyTo<byte>(gotVc);
        kPar.CopyTo<uint>(gotKp);
        vPar.CopyTo<uint>(gotVp);
        dk.CopyTo<ushort>(gotK);
        dv.CopyTo<ushort>(gotV);

        // CPU: the first `chunk` rows of every head, as floats (exact FP16 values).
        var keys = new float[heads * chunk * headDim];
        var values = new float[keys.Length];
        for (int h = 0; h < heads; h++)
        {
            for (int i = 0; i < chunk * headDim; i++)
            {
                keys[(h * chunk * headDim) + i] = (float)BitConverter.UInt16BitsToHalf(resK[(h * count * headDim) + i]);
                values[(h * chunk * headDim) + i] = (float)BitConverter.UInt16BitsToHalf(resV[(h * count * headDim) + i]);
            }
        }

        PackedKvBatch cpu = PackedKvQuantizer.Quantize(keys, values, batch, kvHeads, kvHeads, chunk, 0, kf, vf);
        long bad = 0;
        for (int h = 0; h < heads; h++)
        {
            bad += Diff(cpu.Keys.Codes.AsSpan(h * chunk * kf.RowBytes, chunk * kf.RowBytes), gotKc.AsSpan(((h * capacity) + t0) * kf.RowBytes, chunk * kf.RowBytes));
            bad += Diff(cpu.Values.Codes.AsSpan(h * chunk * vf.RowBytes, chunk * vf.RowBytes), gotVc.AsSpan(((h * capacity) + t0) * vf.RowBytes, chunk * vf.RowBytes));
            int kpc = (int)kf.ParamCount(chunk), vpc = (int)vf.ParamCount(chunk);
            bad += Diff(cpu.Keys.Params.AsSpan(h * kpc, kpc), gotKp.AsSpan((int)((h * kf.ParamCount(capacity)) + kf.ParamCount(t0)), kpc));
            bad += Diff(cpu.Values.Params.AsSpan(h * vpc, vpc), gotVp.AsSpan((int)((h * vf.ParamCount(capacity)) + vf.ParamCount(t0)), vpc));
            int moved = (count - chunk) * headDim;
            bad += Diff(resK.AsSpan((h * count * headDim) + (chunk * headDim), moved), gotK.AsSpan(h * count * headDim, moved));
            bad += Diff(resV.AsSpan((h * count * headDim) + (chunk * headDim), moved), gotV.AsSpan(h * count * headDim, moved));
        }

        return bad;
    }

    private static long Diff<T>(ReadOnlySpan<T> a, ReadOnlySpan<T> b)
        where T : IEquatable<T>
    {
        long n = 0;
        for (int i = 0; i < a.Length; i++)
        {
            if (!a[i].Equals(b[i]))
            {
                n++;
            }
        }

        return n;
    }
}
