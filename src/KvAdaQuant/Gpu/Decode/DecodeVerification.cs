using KvAdaQuant.Engine;
using KvAdaQuant.Gpu.Cuda;
using KvAdaQuant.KvCache;
using KvAdaQuant.Model;

namespace KvAdaQuant.Gpu.Decode;

/// <summary>
/// Runs the CPU <see cref="Transformer"/> and the <see cref="CudaDecoder"/> side by side on the same model: teacher
/// forced (the same token streams, one per sequence of the GPU batch, each compared with its own CPU session) for
/// the logits, then free-running greedy decoding for the tokens.
/// </summary>
public static class DecodeVerification
{
    /// <summary>
    /// The CPU cache spec matching the GPU's handling of <paramref name="kv"/>: packed plans get g64 (when 64 divides the
    /// head, else the CPU's own automatic group, which the GPU also picks) and r64 unless given.
    /// </summary>
    public static string CpuSpec(string kv, int headDim)
    {
        ArgumentNullException.ThrowIfNull(kv);
        string t = kv.Trim().ToLowerInvariant();
        if (t is "fp16" or "fp32" or "16" or "32")
        {
            return t;
        }

        string s = t;
        if (!t.Contains(":g", StringComparison.Ordinal) && headDim % GpuKvCacheLayout.DefaultGroup == 0)
        {
            s += ":g" + GpuKvCacheLayout.DefaultGroup;
        }

        if (!t.Contains(":r", StringComparison.Ordinal))
        {
            s += ":r" + GpuKvCacheLayout.DefaultWindow;
        }

        return s;
    }

    /// <summary>Compares the engines on <paramref name="model"/> with cache <paramref name="kv"/>.</summary>
    public static DecodeCheckRow Compare(
        CudaContext context, LlamaModel model, string modelName, string kv, int batch, int steps, int greedyTokens, bool keepQuantized, double tolerance, int threads, CudaDecodeKernels? kernels = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        ModelConfig c = model.Config;
        int capacity = Math.Max(steps, greedyTokens + 1);
        KvPlan plan = KvPlan.Parse(kv, c.Layers);
        KvPlan cpuPlan = KvPlan.Parse(CpuSpec(kv, c.HeadDim), c.Layers);
        using var decoder = new CudaDecoder(context, model, plan, batch, capacity, keepQuantized, kernels);
        using var transformer = new Transformer(model, threads);
        var rng = new Random(1234);
        int vocab = c.VocabSize;
        var streams = new int[batch][];
        for (int b = 0; b < batch; b++)
        {
            streams[b] = new int[steps];
            streams[b][0] = c.BosToken;
            for (int i = 1; i < steps; i++)
            {
                streams[b][i] = rng.Next(Math.Min(3, vocab - 1), vocab);
            }
        }

        // CPU logits of every step and sequence.
        var cpu = new float[batch][];
        for (int b = 0; b < batch; b++)
        {
            cpu[b] = new float[(long)steps * vocab];
            using var session = new InferenceSession(transformer, KvCacheFactory.Create(cpuPlan, transformer.CacheLayout(capacity)));
            session.Prefill(streams[b].AsSpan(0, 1)).CopyTo(cpu[b].AsSpan(0, vocab));
            for (int i = 1; i < steps; i++)
            {
                session.Decode(streams[b][i]).CopyTo(cpu[b].AsSpan(i * vocab, vocab));
            }
        }

        var gpuLogits = new float[batch * vocab];
        var tok = new int[batch];
        double maxErr = 0, maxRef = 0;
        int agree = 0;
        decoder.Reset();
        for (int i = 0; i < steps; i++)
        {
            for (int b = 0; b < batch; b++)
            {
                tok[b] = streams[b][i];
            }

            decoder.Step(tok);
            decoder.CopyLogits(gpuLogits);
            for (int b = 0; b < batch; b++)
            {
                ReadOnlySpan<float> g = gpuLogits.AsSpan(b * vocab, vocab);
                ReadOnlySpan<float> r = cpu[b].AsSpan(i * vocab, vocab);
                for (int v = 0; v < vocab; v++)
                {
                    maxErr = Math.Max(maxErr, Math.Abs(g[v] - r[v]));
                    maxRef = Math.Max(maxRef, Math.Abs(r[v]));
                }

                if (Sampler.ArgMax(g) == Sampler.ArgMax(r))
                {
                    agree++;
                }
            }
        }

        // Free-running greedy, sequence 0 (every GPU sequence gets the same tokens).
        var cpuTokens = new List<int>();
        using (var session = new InferenceSession(transformer, KvCacheFactory.Create(cpuPlan, transformer.CacheLayout(capacity))))
        {
            ReadOnlySpan<float> logits = session.Prefill([c.BosToken]);
            while (cpuTokens.Count < greedyTokens)
            {
                int next = Sampler.ArgMax(logits);
                cpuTokens.Add(next);
                if (cpuTokens.Count < greedyTokens)
                {
                    logits = session.Decode(next);
                }
            }
        }

        decoder.Reset();
        Array.Fill(tok, c.BosToken);
        decoder.Step(tok);
        int equal = 0;
        bool diverged = false;
        for (int i = 0; i < greedyTokens; i++)
        {
            decoder.SampleGreedy(tok);
            if (!diverged && tok[0] == cpuTokens[i])
            {
                equal++;
            }
            else
            {
                diverged = true;
            }

            if (i + 1 < greedyTokens)
            {
                decoder.StepSampled();
            }
        }

        double rel = maxErr / Math.Max(maxRef, 1e-30);
        double top1 = agree / (double)(steps * batch);
        bool packed = decoder.Layout.AnyPacked;
        bool pass = rel <= tolerance && (packed ? top1 >= 0.9 : equal == greedyTokens);
        return new DecodeCheckRow(modelName, decoder.WeightTypes, $"{kv} (CPU {CpuSpec(kv, c.HeadDim)})", batch, steps, rel, top1, equal, greedyTokens, tolerance, pass);
    }
}
