using KvAdaQuant.LlamaCpp;

namespace KvAdaQuant.Tests.LlamaCpp;

/// <summary>A theory that needs llama.cpp's native library: skipped, with the loader's reason, only when it cannot load.</summary>
public sealed class LlamaCppTheoryAttribute : TheoryAttribute
{
    public LlamaCppTheoryAttribute()
    {
        if (!LlamaCppRuntime.TryLoad(out var info))
        {
            Skip = $"llama.cpp native library cannot load on this machine: {info.Error}";
        }
    }
}
