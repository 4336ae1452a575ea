using System.Runtime.InteropServices;

namespace KvAdaQuant.Gpu.Cuda;

/// <summary>
/// The CUDA driver API functions this library uses, bound at run time from libcuda (no static state:
/// each instance holds its own library handle and function pointers).
/// </summary>
public sealed unsafe class CudaDriverApi
{
    private CudaDriverApi(nint library)
    {
        Library = library;
        cuInit = (delegate* unmanaged<uint, int>)Get("cuInit");
        cuDeviceGetCount = (delegate* unmanaged<int*, int>)Get("cuDeviceGetCount");
        cuDeviceGet = (delegate* unmanaged<int*, int, int>)Get("cuDeviceGet");
        cuDeviceGetName = (delegate* unmanaged<byte*, int, int, int>)Get("cuDeviceGetName");
        cuDeviceGetAttribute = (delegate* unmanaged<int*, int, int, int>)Get("cuDeviceGetAttribute");
        cuDevicePrimaryCtxRetain = (delegate* unmanaged<nint*, int, int>)Get("cuDevicePrimaryCtxRetain");
        cuDevicePrimaryCtxRelease = (delegate* unmanaged<int, int>)Get("cuDevicePrimaryCtxRelease_v2");
        cuCtxSetCurrent = (delegate* unmanaged<nint, int>)Get("cuCtxSetCurrent");
        cuCtxSynchronize = (delegate* unmanaged<int>)Get("cuCtxSynchronize");
        cuGetErrorString = (delegate* unmanaged<int, byte**, int>)Get("cuGetErrorString");
        cuModuleLoadData = (delegate* unmanaged<nint*, void*, int>)Get("cuModuleLoadData");
        cuModuleUnload = (delegate* unmanaged<nint, int>)Get("cuModuleUnload");
        cuModuleGetFunction = (delegate* unmanaged<nint*, nint, byte*, int>)Get("cuModuleGetFunction");
        cuFuncGetAttribute = (delegate* unmanaged<int*, int, nint, int>)Get("cuFuncGetAttribute");
        cuMemAlloc = (delegate* unmanaged<ulong*, nuint, int>)Get("cuMemAlloc_v2");
        cuMemFree = (delegate* unmanaged<ulong, int>)Get("cuMemFree_v2");
        cuMemcpyHtoD = (delegate* unmanaged<ulong, void*, nuint, int>)Get("cuMemcpyHtoD_v2");
        cuMemcpyDtoH = (delegate* unmanaged<void*, ulong, nuint, int>)Get("cuMemcpyDtoH_v2");
        cuMemsetD32 = (delegate* unmanaged<ulong, uint, nuint, int>)Get("cuMemsetD32_v2");
        cuMemGetInfo = (delegate* unmanaged<nuint*, nuint*, int>)Get("cuMemGetInfo_v2");
        cuLaunchKernel = (delegate* unmanaged<nint, uint, uint, uint, uint, uint, uint, uint, nint, void**, void**, int>)Get("cuLaunchKernel");
        cuLaunchKernelEx = NativeLibrary.TryGetExport(library, "cuLaunchKernelEx", out nint launchEx)
            ? (delegate* unmanaged<void*, nint, void**, void**, int>)launchEx
            : null;
        cuEventCreate = (delegate* unmanaged<nint*, uint, int>)Get("cuEventCreate");
        cuEventRecord = (delegate* unmanaged<nint, nint, int>)Get("cuEventRecord");
        cuEventSynchronize = (delegate* unmanaged<nint, int>)Get("cuEventSynchronize");
        cuEventElapsedTime = (delegate* unmanaged<float*, nint, nint, int>)Get("cuEventElapsedTime");
        cuEventDestroy = (delegate* unmanaged<nint, int>)Get("cuEventDestroy_v2");
    }

#pragma warning disable SA1300, SA1310, IDE1006 // the driver's own names
    internal readonly delegate* unmanaged<uint, int> cuInit;
    internal readonly delegate* unmanaged<int*, int> cuDeviceGetCount;
    internal readonly delegate* unmanaged<int*, int, int> cuDeviceGet;
    internal readonly delegate* unmanaged<byte*, int, int, int> cuDeviceGetName;
    internal readonly delegate* unmanaged<int*, int, int, int> cuDeviceGetAttribute;
    internal readonly delegate* unmanaged<nint*, int, int> cuDevicePrimaryCtxRetain;
    internal readonly delegate* unmanaged<int, int> cuDevicePrimaryCtxRelease;
    internal readonly delegate* unmanaged<nint, int> cuCtxSetCurrent;
    internal readonly delegate* unmanaged<int> cuCtxSynchronize;
    internal readonly delegate* unmanaged<int, byte**, int> cuGetErrorString;
    internal readonly delegate* unmanaged<nint*, void*, int> cuModuleLoadData;
    internal readonly delegate* unmanaged<nint, int> cuModuleUnload;
    internal readonly delegate* unmanaged<nint*, nint, byte*, int> cuModuleGetFunction;
    internal readonly delegate* unmanaged<int*, int, nint, int> cuFuncGetAttribute;
    internal readonly delegate* unmanaged<ulong*, nuint, int> cuMemAlloc;
    internal readonly delegate* unmanaged<ulong, int> cuMemFree;
    internal readonly delegate* unmanaged<ulong, void*, nuint, int> cuMemcpyHtoD;
    internal readonly delegate* unmanaged<void*, ulong, nuint, int> cuMemcpyDtoH;
    internal readonly delegate* unmanaged<ulong, uint, nuint, int> cuMemsetD32;
    internal readonly delegate* unmanaged<nuint*, nuint*, int> cuMemGetInfo;
    internal readonly delegate* unmanaged<nint, uint, uint, uint, uint, uint, uint, uint, nint, void**, void**, int> cuLaunchKernel;
    internal readonly delegate* unmanaged<void*, nint, void**, void**, int> cuLaunchKernelEx;  // null before CUDA 12
    internal readonly delegate* unmanaged<nint*, uint, int> cuEventCreate;
    internal readonly delegate* unmanaged<nint, nint, int> cuEventRecord;
    internal readonly delegate* unmanaged<nint, int> cuEventSynchronize;
    internal readonly delegate* unmanaged<float*, nint, nint, int> cuEventElapsedTime;
    internal readonly delegate* unmanaged<nint, int> cuEventDestroy;
#pragma warning restore SA1300, SA1310, IDE1006

    /// <summary>Whether the driver has cuLaunchKernelEx (launch attributes such as programmatic dependent launch).</summary>
    public bool HasLaunchKernelEx => cuLaunchKernelEx != null;

    /// <summary>Handle of the loaded libcuda.</summary>
    public nint Library { get; }

    /// <summary>Loads libcuda and initialises the driver; false with a reason when there is no driver or no device.</summary>
    public static bool TryLoad(out CudaDriverApi? api, out string reason)
    {
        api = null;
        if (!OperatingSystem.IsLinux() && !OperatingSystem.IsWindows())
        {
            reason = "CUDA is only bound on Linux and Windows.";
            return false;
        }

        string[] names = OperatingSystem.IsWindows() ? ["nvcuda.dll"] : ["libcuda.so.1", "libcuda.so"];
        foreach (string name in names)
        {
            if (NativeLibrary.TryLoad(name, out nint handle))
            {
                var candidate = new CudaDriverApi(handle);
                int rc = candidate.cuInit(0);
                if (rc != 0)
                {
                    reason = $"cuInit failed with CUDA error {rc} (no usable GPU or driver).";
                    return false;
                }

                int count;
                rc = candidate.cuDeviceGetCount(&count);
                if (rc != 0 || count == 0)
                {
                    reason = "The CUDA driver reports no device.";
                    return false;
                }

                api = candidate;
                reason = string.Empty;
                return true;
            }
        }

        reason = "No CUDA driver library (libcuda.so.1) was found: this machine has no NVIDIA driver.";
        return false;
    }

    /// <summary>Throws a <see cref="CudaException"/> naming <paramref name="call"/> when <paramref name="result"/> is not CUDA_SUCCESS.</summary>
    public void Check(int result, string call)
    {
        if (result == 0)
        {
            return;
        }

        byte* text = null;
        string message = cuGetErrorString(result, &text) == 0 && text != null ? Marshal.PtrToStringUTF8((nint)text) ?? "?" : "?";
        throw new CudaException($"{call} failed: CUDA error {result} ({message}).");
    }

    private nint Get(string name) =>
        NativeLibrary.TryGetExport(Library, name, out nint address) ? address : throw new CudaException($"libcuda exports no '{name}'.");
}
