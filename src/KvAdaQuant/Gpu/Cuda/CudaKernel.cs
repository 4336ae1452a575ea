namespace KvAdaQuant.Gpu.Cuda;

/// <summary>A kernel of a loaded module.</summary>
public sealed unsafe class CudaKernel
{
    private readonly CudaDriverApi _api;

    internal CudaKernel(CudaDriverApi api, nint function, string name)
    {
        _api = api;
        Handle = function;
        Name = name;
    }

    /// <summary>Driver handle.</summary>
    public nint Handle { get; }

    /// <summary>Kernel name.</summary>
    public string Name { get; }

    /// <summary>Registers per thread.</summary>
    public int Registers => Attribute(4);

    /// <summary>Local memory (stack, spills) per thread in bytes.</summary>
    public int LocalBytes => Attribute(3);

    /// <summary>Static shared memory per block in bytes.</summary>
    public int SharedBytes => Attribute(1);

    /// <summary>Prepares a launch with fixed grid, block and arguments; launching it allocates nothing.</summary>
    public CudaLaunch Prepare((int X, int Y, int Z) grid, int blockThreads, params CudaArgument[] arguments) =>
        new(_api, this, grid, blockThreads, arguments, programmaticDependent: false);

    /// <summary>
    /// Prepares a launch that may start while the kernel queued before it on the stream is still running
    /// (programmatic dependent launch, compute capability 9.0+): the kernel must wait for its predecessor's
    /// results itself (<c>griddepcontrol.wait</c>). Falls back to an ordinary launch when the driver has no
    /// cuLaunchKernelEx.
    /// </summary>
    public CudaLaunch PrepareDependent((int X, int Y, int Z) grid, int blockThreads, params CudaArgument[] arguments) =>
        new(_api, this, grid, blockThreads, arguments, programmaticDependent: _api.HasLaunchKernelEx);

    private int Attribute(int attribute)
    {
        int value;
        _api.Check(_api.cuFuncGetAttribute(&value, attribute, Handle), $"cuFuncGetAttribute({Name})");
        return value;
    }
}
