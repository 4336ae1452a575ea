using KvAdaQuant.Engine;
using KvAdaQuant.KvCache;
using KvAdaQuant.Model;

namespace KvAdaQuant.Tests;

/// <summary>The model run from BOS with an FP32 cache: what format tests compare against the reference and each other.</summary>
public static class Fp32Decode
{
    /// <summary><paramref name="n"/> greedy tokens after BOS (token 1), each fed back.</summary>
    public static int[] GreedyFromBos(LlamaModel model, int n)
    {
        using var transformer = new Transformer(model, 2);
        using var session = new InferenceSession(transformer, new FullPrecisionKvCache(transformer.CacheLayout(n + 1), half: false));
        var tokens = new List<int>();
        var logits = session.Prefill([1]).ToArray();
        for (int i = 0; i < n; i++)
        {
            int next = Array.IndexOf(logits, logits.Max());
            tokens.Add(next);
            logits = session.Prefill([next]).ToArray();
        }

        return [.. tokens];
    }

    /// <summary>The logits at position 0 (BOS).</summary>
    public static float[] LogitsAtBos(LlamaModel model)
    {
        using var transformer = new Transformer(model, 2);
        using var session = new InferenceSession(transformer, new FullPrecisionKvCache(transformer.CacheLayout(4), half: false));
        return session.Prefill([1]).ToArray();
    }
}
