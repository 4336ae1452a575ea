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

    internal CudaLaunch(CudaDriverApi api, CudaKernel kernel, (int X, int Y, int Z) grid, int block, CudaArgument[] arguments)
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
    }

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
    public void Launch() =>
        _api.Check(
            _api.cuLaunchKernel(_kernel.Handle, (uint)_grid.X, (uint)_grid.Y, (uint)_grid.Z, (uint)_block, 1, 1, 0, 0, _pointers, null),
            _kernel.Name);

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
    }
}
