using System.Runtime.CompilerServices;
using KvAdaQuant.LlamaCpp;

namespace KvAdaQuant.Cli.Bench;

/// <summary>llama.cpp's perplexity on given tokens, for <c>kvaq compare</c>; reached only when llama.cpp rows are asked for.</summary>
internal static class LlamaCppPerplexityRunner
{
    /// <summary>Perplexity and tokens scored with llama.cpp's cache types <paramref name="typeK"/>/<paramref name="typeV"/>.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    public static (double Perplexity, double Uncertainty, int TokensScored, string Cache) Run(string ggufPath, IReadOnlyList<int> tokens, int ctx, string typeK, string typeV, int threads, int maxChunks)
    {
        try
        {
            var k = LlamaCppCacheTypes.Parse(typeK, "--vs-cache");
            var v = LlamaCppCacheTypes.Parse(typeV, "--vs-cache");
            using var model = LlamaCppModel.Load(ggufPath);
            var options = new LlamaCppContextOptions { ContextSize = ctx, TypeK = k, TypeV = v, Threads = threads };
            using var context = model.CreateContext(options);
            var r = LlamaCppPerplexity.Evaluate(context, tokens, ctx, maxChunks);
            return (r.Perplexity, r.PerplexityUncertainty, r.TokensScored, $"{LlamaCppCacheTypes.Name(k)}/{LlamaCppCacheTypes.Name(v)}{(options.EffectiveFlashAttention ? ", flash attention" : string.Empty)}");
        }
        catch (LlamaCppException e)
        {
            throw new InvalidDataException($"llama.cpp: {e.Message}", e);
        }
    }
}
