using System.Runtime.InteropServices;

namespace KvAdaQuant.Gpu.Cuda;

/// <summary>A prepared kernel launch: arguments live in native memory, so <see cref="Launch"/> allocates nothing.</summary>
public sealed unsafe class CudaLaunch : IDisposable
{
    private readonly CudaDriverApi _api;
    private readonly CudaKernel _kernel;
    private (int X, int Y, int Z) _grid;
    private readonly int _block;
    private readonly int _count;
    private ulong* _values;
    private void** _pointers;

    // cuLaunchKernelEx's CUlaunchConfig (56 bytes) followed by one CUlaunchAttribute (72 bytes), or null.
    private byte* _config;

    internal CudaLaunch(CudaDriverApi api, CudaKernel kernel, (int X, int Y, int Z) grid, int block, CudaArgument[] arguments, bool programmaticDependent)
    {
        _api = api;
        _kernel = kernel;
        _grid = grid;
        _block = block;
        _count = arguments.Length;
        _values = (ulong*)NativeMemory.Alloc((nuint)Math.Max(1, _count), 8);
        _pointers = (void**)NativeMemory.Alloc((nuint)Math.Max(1, _count), (nuint)sizeof(void*));
        for (int i = 0; i < _count; i++)
        {
            _values[i] = arguments[i].Bits;
            _pointers[i] = &_values[i];
        }

        if (programmaticDependent)
        {
            _config = (byte*)NativeMemory.AllocZeroed(ConfigBytes + AttributeBytes);
        }
    }

    private const int ConfigBytes = 56;
    private const int AttributeBytes = 72;
    private const int ProgrammaticStreamSerialization = 6;  // CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION

    /// <summary>Whether this launch may overlap the end of the kernel before it (programmatic dependent launch).</summary>
    public bool IsProgrammaticDependent => _config != null;

    /// <summary>Replaces argument <paramref name="index"/> for the following launches (allocates nothing).</summary>
    public void SetArgument(int index, CudaArgument value)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(index);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(index, _count);
        _values[index] = value.Bits;
    }

    /// <summary>Replaces the grid for the following launches.</summary>
    public void SetGrid((int X, int Y, int Z) grid)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(grid.X);
        _grid = grid;
    }

    /// <summary>Queues the kernel on the default stream.</summary>
    public void Launch()
    {
        if (_config == null)
        {
            _api.Check(
                _api.cuLaunchKernel(_kernel.Handle, (uint)_grid.X, (uint)_grid.Y, (uint)_grid.Z, (uint)_block, 1, 1, 0, 0, _pointers, null),
                _kernel.Name);
            return;
        }

        // CUlaunchConfig: grid x/y/z, block x/y/z, shared bytes (7 x u32), stream at 32, attrs at 40, numAttrs at 48.
        uint* dims = (uint*)_config;
        dims[0] = (uint)_grid.X;
        dims[1] = (uint)_grid.Y;
        dims[2] = (uint)_grid.Z;
        dims[3] = (uint)_block;
        dims[4] = 1;
        dims[5] = 1;
        dims[6] = 0;
        *(nint*)(_config + 32) = 0;
        *(byte**)(_config + 40) = _config + ConfigBytes;
        *(uint*)(_config + 48) = 1;

        // CUlaunchAttribute: id at 0, value (union) at 8: programmaticStreamSerializationAllowed = 1.
        *(int*)(_config + ConfigBytes) = ProgrammaticStreamSerialization;
        *(int*)(_config + ConfigBytes + 8) = 1;
        _api.Check(_api.cuLaunchKernelEx(_config, _kernel.Handle, _pointers, null), _kernel.Name + " (cuLaunchKernelEx)");
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        if (_values != null)
        {
            NativeMemory.Free(_values);
            NativeMemory.Free(_pointers);
            _values = null;
            _pointers = null;
        }

        if (_config != null)
        {
            NativeMemory.Free(_config);
            _config = null;
        }
    }
}
