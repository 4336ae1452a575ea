using System.Runtime.CompilerServices;

namespace KvAdaQuant.Cli.Bench;

/// <summary>
/// Builds the llama.cpp engine. The only door from the CLI to LLamaSharp: it is reached only with
/// <c>--vs llama.cpp</c>, so the managed and native llama.cpp libraries load only then and kvaq runs without them.
/// </summary>
internal static class LlamaCppBenchEngineFactory
{
    public static IBenchEngine Create(string ggufPath, string typeK, string typeV, int threads, int sequences = 1)
    {
        try
        {
            return CreateCore(ggufPath, typeK, typeV, threads, sequences);
        }
        catch (FileNotFoundException e) when (e.FileName is { } f && (f.StartsWith("LLamaSharp", StringComparison.Ordinal) || f.StartsWith("KvAdaQuant.LlamaCpp", StringComparison.Ordinal)))
        {
            throw new NotSupportedException($"--vs llama.cpp: the llama.cpp reference ({f}) is not installed beside kvaq", e);
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static IBenchEngine CreateCore(string ggufPath, string typeK, string typeV, int threads, int sequences)
    {
        try
        {
            return new LlamaCppBenchEngine(ggufPath,
                KvAdaQuant.LlamaCpp.LlamaCppCacheTypes.Parse(typeK, "--vs-cache"),
                KvAdaQuant.LlamaCpp.LlamaCppCacheTypes.Parse(typeV, "--vs-cache"),
                threads,
                sequences);
        }
        catch (KvAdaQuant.LlamaCpp.LlamaCppException e)
        {
            throw new InvalidDataException($"--vs llama.cpp: {e.Message}", e);
        }
    }
}
