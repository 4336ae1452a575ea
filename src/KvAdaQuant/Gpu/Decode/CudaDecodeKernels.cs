using System.Diagnostics;
using System.Globalization;
using KvAdaQuant.Gpu.Cuda;

namespace KvAdaQuant.Gpu.Decode;

/// <summary>
/// Compiles the decode kernels (Decode.cu) and the packed attention kernels (PackedKvAttention.cu) with NVRTC for one
/// device, once per head dimension, and keeps the cubins so that several decoders (e.g. a verification run over many
/// models) do not compile again.
/// </summary>
public sealed class CudaDecodeKernels
{
    private readonly CudaContext _context;
    private readonly NvrtcCompiler _nvrtc;
    private readonly Dictionary<int, (byte[] Decode, byte[] Packed)> _cubins = [];

    /// <summary>Loads NVRTC; throws <see cref="CudaException"/> when it is missing.</summary>
    public CudaDecodeKernels(CudaContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        _context = context;
        if (!NvrtcCompiler.TryLoad(out NvrtcCompiler? nvrtc, out string reason))
        {
            throw new CudaException(reason);
        }

        _nvrtc = nvrtc!;
    }

    /// <summary>Milliseconds spent compiling so far.</summary>
    public long CompileMilliseconds { get; private set; }

    /// <summary>"NVRTC 13.0, sm_90".</summary>
    public string Note => string.Create(CultureInfo.InvariantCulture, $"NVRTC {_nvrtc.Version}, {_context.Arch}, kernels compiled in {CompileMilliseconds} ms");

    /// <summary>The cubins for <paramref name="headDim"/>, compiled on first use.</summary>
    public (byte[] Decode, byte[] Packed) For(int headDim)
    {
        if (!_cubins.TryGetValue(headDim, out var pair))
        {
            var watch = Stopwatch.StartNew();
            pair = (
                _nvrtc.CompileToCubin(CudaDecoder.KernelSource(), "Decode.cu", _context.Arch, [$"HEAD_DIM={headDim}"]),
                _nvrtc.CompileToCubin(CudaPackedKvAttention.KernelSource(), "PackedKvAttention.cu", _context.Arch, [$"HEAD_DIM={headDim}"]));
            CompileMilliseconds += watch.ElapsedMilliseconds;
            _cubins[headDim] = pair;
        }

        return pair;
    }
}
