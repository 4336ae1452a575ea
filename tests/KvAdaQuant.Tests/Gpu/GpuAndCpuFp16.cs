using KvAdaQuant.Engine;
using KvAdaQuant.Gpu.Cuda;
using KvAdaQuant.Gpu.Decode;
using KvAdaQuant.KvCache;
using KvAdaQuant.Model;

namespace KvAdaQuant.Tests.Gpu;

/// <summary>
/// What the GPU tests that compare the two engines set up: a batch-1 <see cref="CudaDecoder"/> and a CPU
/// <see cref="InferenceSession"/> over the same model, both with an FP16 cache of <c>ctx</c> positions; and the CUDA
/// context those tests open, skipping (with the reason) where libcuda or NVRTC does not load.
/// </summary>
internal sealed class GpuAndCpuFp16 : IDisposable
{
    public GpuAndCpuFp16(CudaContext context, LlamaModel model, int ctx)
    {
        Plan = KvPlan.Parse("fp16", model.Config.Layers);
        Decoder = new CudaDecoder(context, model, Plan, 1, ctx);
        Transformer = new Transformer(model, 2);
        Cpu = new InferenceSession(Transformer, KvCacheFactory.Create(Plan, Transformer.CacheLayout(ctx)));
    }

    public KvPlan Plan { get; }

    public CudaDecoder Decoder { get; }

    public Transformer Transformer { get; }

    public InferenceSession Cpu { get; }

    /// <summary>The CUDA context; the test is skipped, naming why, where the driver or NVRTC is missing.</summary>
    public static CudaContext OpenContext()
    {
        bool open = CudaContext.TryOpen(out CudaContext? context, out string reason);
        Skip.IfNot(open, reason);
        if (!NvrtcCompiler.TryLoad(out _, out string nvrtcReason))
        {
            context!.Dispose();
            Skip.If(true, nvrtcReason);
        }

        return context!;
    }

    public void Dispose()
    {
        Cpu.Dispose();
        Transformer.Dispose();
        Decoder.Dispose();
    }
}
