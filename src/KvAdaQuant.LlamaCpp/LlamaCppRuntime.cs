using System.Runtime.InteropServices;
using LLama.Native;

namespace KvAdaQuant.LlamaCpp;

/// <summary>
/// The native llama.cpp library that LLamaSharp.Backend.Cpu ships (one build per instruction set: noavx, avx, avx2,
/// avx512; LLamaSharp picks the best the CPU supports). It is loaded once per process, on first use.
/// </summary>
public static class LlamaCppRuntime
{
    private static readonly Lazy<LlamaCppRuntimeInfo> Info = new(LoadOnce, LazyThreadSafetyMode.ExecutionAndPublication);

    /// <summary>Loads the native library (once) and describes it; throws <see cref="LlamaCppException"/> when it cannot load.</summary>
    public static LlamaCppRuntimeInfo Load()
    {
        var info = Info.Value;
        if (info.Error is not null)
        {
            throw new LlamaCppException($"llama.cpp native library (LLamaSharp.Backend.Cpu 0.30.0) could not be loaded: {info.Error}");
        }

        return info;
    }

    /// <summary>Loads the native library (once); false with the reason when it cannot load.</summary>
    public static bool TryLoad(out LlamaCppRuntimeInfo info)
    {
        info = Info.Value;
        return info.Error is null;
    }

    /// <summary>Path of the ggml base library next to the loaded <c>libllama.so</c> (ggml's tensor functions live there).</summary>
    public static string GgmlBaseLibrary()
    {
        var info = Load();
        var dir = Path.GetDirectoryName(info.LibraryPath);
        if (string.IsNullOrEmpty(dir))
        {
            throw new LlamaCppException($"the loaded llama.cpp library's path is unknown ({info.LibraryPath}); cannot find libggml-base.so beside it");
        }

        return Path.Combine(dir, OperatingSystem.IsWindows() ? "ggml-base.dll" : OperatingSystem.IsMacOS() ? "libggml-base.dylib" : "libggml-base.so");
    }

    private static LlamaCppRuntimeInfo LoadOnce()
    {
        try
        {
            NativeLibraryConfig.All.WithCuda(false).WithVulkan(false).WithAutoFallback(true);
            NativeApi.llama_empty_call();
            NativeLogConfig.llama_log_set(ForwardErrors);
            string system = Marshal.PtrToStringAnsi(NativeApi.llama_print_system_info()) ?? string.Empty;
            return new LlamaCppRuntimeInfo(FindLoadedLibrary() ?? "(path unknown)", system.Trim(), null);
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException or BadImageFormatException
            or TypeInitializationException or LLama.Exceptions.RuntimeError or InvalidOperationException)
        {
            return new LlamaCppRuntimeInfo(string.Empty, string.Empty, $"{e.GetType().Name}: {e.Message}");
        }
    }

    private static void ForwardErrors(LLamaLogLevel level, string message)
    {
        if (level == LLamaLogLevel.Error)
        {
            Console.Error.Write($"llama.cpp: {message}");
        }
    }

    private static string? FindLoadedLibrary()
    {
        const string maps = "/proc/self/maps";
        if (!File.Exists(maps))
        {
            return null;
        }

        foreach (var line in File.ReadLines(maps))
        {
            int at = line.IndexOf('/', StringComparison.Ordinal);
            if (at >= 0 && line.EndsWith("libllama.so", StringComparison.Ordinal))
            {
                return line[at..];
            }
        }

        return null;
    }
}
