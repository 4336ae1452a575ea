using System.CommandLine;
using KvAdaQuant.Gpu.Cuda;

namespace KvAdaQuant.Cli.Commands;

/// <summary>The <c>--device cpu|cuda</c> option and opening the CUDA device with a clear error.</summary>
internal static class DeviceOptions
{
    public const string Cpu = "cpu";
    public const string Cuda = "cuda";

    public static Option<string> Device()
    {
        var o = new Option<string>("--device") { Description = "where to run: cpu, or cuda (an NVIDIA GPU through the CUDA driver and NVRTC)", DefaultValueFactory = _ => Cpu };
        o.AcceptOnlyFromAmong(Cpu, Cuda);
        return o;
    }

    /// <summary>Opens device 0, or throws an <see cref="ArgumentException"/> naming --device and why (no driver, no device).</summary>
    public static CudaContext OpenCuda()
    {
        if (!CudaContext.TryOpen(out CudaContext? context, out string reason))
        {
            throw new ArgumentException($"--device cuda: {reason}");
        }

        return context!;
    }
}
