using System.Runtime.InteropServices;
using System.Text;

namespace KvAdaQuant.Gpu.Cuda;

/// <summary>Compiles CUDA C to a cubin at run time through NVRTC (libnvrtc), bound on first use.</summary>
public sealed unsafe class NvrtcCompiler
{
    private readonly delegate* unmanaged<nint*, byte*, byte*, int, byte**, byte**, int> _create;
    private readonly delegate* unmanaged<nint, int, byte**, int> _compile;
    private readonly delegate* unmanaged<nint, nuint*, int> _logSize;
    private readonly delegate* unmanaged<nint, byte*, int> _log;
    private readonly delegate* unmanaged<nint, nuint*, int> _cubinSize;
    private readonly delegate* unmanaged<nint, byte*, int> _cubin;
    private readonly delegate* unmanaged<nint*, int> _destroy;
    private readonly delegate* unmanaged<int*, int*, int> _version;

    private NvrtcCompiler(nint library, string path)
    {
        LibraryPath = path;
        _create = (delegate* unmanaged<nint*, byte*, byte*, int, byte**, byte**, int>)Get(library, "nvrtcCreateProgram");
        _compile = (delegate* unmanaged<nint, int, byte**, int>)Get(library, "nvrtcCompileProgram");
        _logSize = (delegate* unmanaged<nint, nuint*, int>)Get(library, "nvrtcGetProgramLogSize");
        _log = (delegate* unmanaged<nint, byte*, int>)Get(library, "nvrtcGetProgramLog");
        _cubinSize = (delegate* unmanaged<nint, nuint*, int>)Get(library, "nvrtcGetCUBINSize");
        _cubin = (delegate* unmanaged<nint, byte*, int>)Get(library, "nvrtcGetCUBIN");
        _destroy = (delegate* unmanaged<nint*, int>)Get(library, "nvrtcDestroyProgram");
        _version = (delegate* unmanaged<int*, int*, int>)Get(library, "nvrtcVersion");
    }

    /// <summary>Path or name the library was loaded from.</summary>
    public string LibraryPath { get; }

    /// <summary>NVRTC version as "major.minor".</summary>
    public string Version
    {
        get
        {
            int major, minor;
            _version(&major, &minor);
            return $"{major}.{minor}";
        }
    }

    /// <summary>
    /// Loads libnvrtc: the path in KVAQ_NVRTC if set, then the usual names, then the CUDA toolkit folders.
    /// </summary>
    public static bool TryLoad(out NvrtcCompiler? compiler, out string reason)
    {
        var candidates = new List<string>();
        string? fromEnv = Environment.GetEnvironmentVariable("KVAQ_NVRTC");
        if (!string.IsNullOrEmpty(fromEnv))
        {
            candidates.Add(fromEnv);
        }

        candidates.AddRange(["libnvrtc.so", "libnvrtc.so.13", "libnvrtc.so.12"]);
        foreach (string dir in new[] { "/usr/local/cuda/lib64", "/usr/local/cuda/targets/x86_64-linux/lib" })
        {
            if (Directory.Exists(dir))
            {
                candidates.AddRange(Directory.GetFiles(dir, "libnvrtc.so*").Where(f => !f.Contains("builtins", StringComparison.Ordinal)).Order(StringComparer.Ordinal));
            }
        }

        foreach (string candidate in candidates)
        {
            if (NativeLibrary.TryLoad(candidate, out nint handle) && NativeLibrary.TryGetExport(handle, "nvrtcGetCUBIN", out _))
            {
                compiler = new NvrtcCompiler(handle, candidate);
                reason = string.Empty;
                return true;
            }
        }

        compiler = null;
        reason = "No NVRTC library found (tried KVAQ_NVRTC, libnvrtc.so, libnvrtc.so.13, libnvrtc.so.12 and /usr/local/cuda).";
        return false;
    }

    /// <summary>Compiles <paramref name="source"/> for <paramref name="arch"/> (e.g. "sm_90") into a cubin.</summary>
    /// <exception cref="CudaException">Compilation failed; the message holds NVRTC's log.</exception>
    public byte[] CompileToCubin(string source, string name, string arch, IReadOnlyList<string> defines)
    {
        ArgumentNullException.ThrowIfNull(source);
        ArgumentNullException.ThrowIfNull(defines);
        var options = new List<string> { $"--gpu-architecture={arch}", "--std=c++17" };
        options.AddRange(defines.Select(d => $"-D{d}"));
        byte[] src = Encoding.UTF8.GetBytes(source + "\0");
        byte[] nm = Encoding.UTF8.GetBytes(name + "\0");
        nint program;
        fixed (byte* s = src, n = nm)
        {
            Check(_create(&program, s, n, 0, null, null), "nvrtcCreateProgram");
        }

        try
        {
            var handles = options.Select(o => GCHandle.Alloc(Encoding.UTF8.GetBytes(o + "\0"), GCHandleType.Pinned)).ToArray();
            try
            {
                byte** opts = stackalloc byte*[handles.Length];
                for (int i = 0; i < handles.Length; i++)
                {
                    opts[i] = (byte*)handles[i].AddrOfPinnedObject();
                }

                int rc = _compile(program, handles.Length, opts);
                if (rc != 0)
                {
                    throw new CudaException($"NVRTC could not compile {name} for {arch} (error {rc}):\n{Log(program)}");
                }
            }
            finally
            {
                foreach (GCHandle h in handles)
                {
                    h.Free();
                }
            }

            nuint size;
            Check(_cubinSize(program, &size), "nvrtcGetCUBINSize");
            var cubin = new byte[(int)size];
            fixed (byte* c = cubin)
            {
                Check(_cubin(program, c), "nvrtcGetCUBIN");
            }

            return cubin;
        }
        finally
        {
            _destroy(&program);
        }
    }

    private static nint Get(nint library, string name) =>
        NativeLibrary.TryGetExport(library, name, out nint address) ? address : throw new CudaException($"libnvrtc exports no '{name}'.");

    private static void Check(int rc, string call)
    {
        if (rc != 0)
        {
            throw new CudaException($"{call} failed with NVRTC error {rc}.");
        }
    }

    private string Log(nint program)
    {
        nuint size;
        if (_logSize(program, &size) != 0 || size == 0)
        {
            return string.Empty;
        }

        var log = new byte[(int)size];
        fixed (byte* l = log)
        {
            _log(program, l);
        }

        return Encoding.UTF8.GetString(log).TrimEnd('\0');
    }
}
