using System.Text;

namespace KvAdaQuant.Gpu.Cuda;

/// <summary>A loaded module (cubin or PTX).</summary>
public sealed unsafe class CudaModule : IDisposable
{
    private readonly CudaDriverApi _api;
    private nint _module;

    internal CudaModule(CudaDriverApi api, nint module)
    {
        _api = api;
        _module = module;
    }

    /// <summary>Finds a kernel by its extern "C" name.</summary>
    public CudaKernel Function(string name)
    {
        byte[] bytes = Encoding.UTF8.GetBytes(name + "\0");
        nint function;
        fixed (byte* n = bytes)
        {
            _api.Check(_api.cuModuleGetFunction(&function, _module, n), $"cuModuleGetFunction({name})");
        }

        return new CudaKernel(_api, function, name);
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        if (_module != 0)
        {
            _api.cuModuleUnload(_module);
            _module = 0;
        }
    }
}
