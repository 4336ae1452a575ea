using System.Runtime.InteropServices;
using System.Text;

namespace KvAdaQuant.Gpu.Cuda;

/// <summary>Device 0's primary context, made current on the calling thread, with allocation, copies and modules.</summary>
public sealed unsafe class CudaContext : IDisposable
{
    private readonly int _device;
    private readonly nint _handle;
    private bool _disposed;

    private CudaContext(CudaDriverApi api, int device)
    {
        Api = api;
        _device = device;
        nint ctx;
        api.Check(api.cuDevicePrimaryCtxRetain(&ctx, device), "cuDevicePrimaryCtxRetain");
        api.Check(api.cuCtxSetCurrent(ctx), "cuCtxSetCurrent");
        _handle = ctx;
        var name = new byte[256];
        fixed (byte* n = name)
        {
            api.Check(api.cuDeviceGetName(n, name.Length, device), "cuDeviceGetName");
        }

        DeviceName = Encoding.UTF8.GetString(name).TrimEnd('\0');
        ComputeCapability = (Attribute(75), Attribute(76));
        MultiprocessorCount = Attribute(16);
    }

    /// <summary>The bound driver API.</summary>
    public CudaDriverApi Api { get; }

    /// <summary>Device name as the driver reports it.</summary>
    public string DeviceName { get; }

    /// <summary>(major, minor).</summary>
    public (int Major, int Minor) ComputeCapability { get; }

    /// <summary>Streaming multiprocessors.</summary>
    public int MultiprocessorCount { get; }

    /// <summary>"sm_90" style target of this device.</summary>
    public string Arch => $"sm_{ComputeCapability.Major}{ComputeCapability.Minor}";

    /// <summary>Opens device 0, or returns false with the reason (no driver, no device).</summary>
    public static bool TryOpen(out CudaContext? context, out string reason)
    {
        context = null;
        if (!CudaDriverApi.TryLoad(out CudaDriverApi? api, out reason))
        {
            return false;
        }

        int device;
        api!.Check(api.cuDeviceGet(&device, 0), "cuDeviceGet");
        context = new CudaContext(api, device);
        return true;
    }

    /// <summary>Allocates device memory.</summary>
    public CudaDeviceBuffer Allocate(long bytes) => new(this, bytes);

    /// <summary>Allocates device memory holding a copy of <paramref name="data"/>.</summary>
    public CudaDeviceBuffer Upload<T>(ReadOnlySpan<T> data)
        where T : unmanaged
    {
        CudaDeviceBuffer buffer = Allocate(Math.Max(1, (long)data.Length * sizeof(T)));
        buffer.CopyFrom(data);
        return buffer;
    }

    /// <summary>Loads a cubin or PTX image.</summary>
    public CudaModule LoadModule(byte[] image)
    {
        ArgumentNullException.ThrowIfNull(image);
        var pinned = GCHandle.Alloc(image, GCHandleType.Pinned);
        try
        {
            nint module;
            Api.Check(Api.cuModuleLoadData(&module, (void*)pinned.AddrOfPinnedObject()), "cuModuleLoadData");
            return new CudaModule(Api, module);
        }
        finally
        {
            pinned.Free();
        }
    }

    /// <summary>
    /// Makes this context current on the calling thread. A context is current only on the threads that made it so;
    /// code that may run on other threads (a server's request handlers) calls this before its device work.
    /// </summary>
    public void MakeCurrent() => Api.Check(Api.cuCtxSetCurrent(_handle), "cuCtxSetCurrent");

    /// <summary>Waits for all work on the context.</summary>
    public void Synchronize() => Api.Check(Api.cuCtxSynchronize(), "cuCtxSynchronize");

    /// <summary>Free and total device memory in bytes.</summary>
    public (long Free, long Total) MemoryInfo()
    {
        nuint free, total;
        Api.Check(Api.cuMemGetInfo(&free, &total), "cuMemGetInfo");
        return ((long)free, (long)total);
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        if (!_disposed)
        {
            _disposed = true;
            Api.cuDevicePrimaryCtxRelease(_device);
        }
    }

    private int Attribute(int attribute)
    {
        int value;
        Api.Check(Api.cuDeviceGetAttribute(&value, attribute, _device), "cuDeviceGetAttribute");
        return value;
    }
}
