using KvAdaQuant.Engine;
using KvAdaQuant.Gpu.Cuda;
using KvAdaQuant.KvCache;
using KvAdaQuant.Model;
using KvAdaQuant.Quantization;

namespace KvAdaQuant.Gpu.Decode;

/// <summary>
/// Runs the <see cref="CudaDecoder"/> side by side with a reference: the CPU <see cref="Transformer"/> (teacher forced on
/// the same token streams, one CPU session per sequence of the GPU batch, then free-running greedy decoding), or a second
/// GPU decoder (to check the K4V2 kernel against the generic FP32 kernel inside the decode path).
/// </summary>
public static class DecodeVerification
{
    /// <summary>
    /// Relative noise (2^-11) put on the CPU cache's K and V inputs to measure its sensitivity (see <see cref="Compare"/>):
    /// about one FP16 rounding step, the size of the differences between the two engines' K and V.
    /// </summary>
    public const double DefaultSensitivityNoise = 1.0 / 2048;

    /// <summary>
    /// The CPU cache spec for a GPU packed plan <paramref name="kv"/>: group 64 when 64 divides the head (else the CPU's
    /// automatic group, which the GPU also picks), unless given, and a residual window of <paramref name="window"/>, the
    /// GPU's: a spec giving residual 0 gets it too, one giving another residual is an <see cref="ArgumentException"/>.
    /// </summary>
    public static string CpuSpec(string kv, int headDim, int window = GpuKvCacheLayout.DefaultWindow)
    {
        ArgumentNullException.ThrowIfNull(kv);
        string t = kv.Trim().ToLowerInvariant();
        if (t is "fp16" or "fp32" or "16" or "32" || KvPlan.Parse(t, 1).IsUniformFullPrecision)
        {
            return t; // nothing quantized: a group or window option would be refused
        }

        string s = t;
        if (!t.Contains(":g", StringComparison.Ordinal) && headDim % GpuKvCacheLayout.DefaultGroup == 0)
        {
            s += ":g" + GpuKvCacheLayout.DefaultGroup;
        }

        var residual = System.Text.RegularExpressions.Regex.Match(s, @":r(\d+)(?=:|$)");
        if (!residual.Success)
        {
            return s + ":r" + window;
        }

        // The GPU runs one FP16 window of `window` tokens whatever the spec says; the CPU mirror must hold the same one.
        if (!int.TryParse(residual.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture, out int r) || (r != 0 && r != window))
        {
            throw new ArgumentException(
                $"--kv '{kv}': keeps a residual window of {residual.Groups[1].Value} tokens; the check runs packed caches with one FP16 window of {window} (GPU {window - 1} + 1, the CPU cache's r{window}): give residual 0 or {window}");
        }

        return s[..residual.Index] + ":r" + window + s[(residual.Index + residual.Length)..];
    }

    /// <summary>
    /// The CPU plan for a GPU plan <paramref name="plan"/> (a <c>--kv-plan</c> file), layer by layer what
    /// <see cref="CpuSpec"/> does for a spec: each packed side gets group 64 when the plan leaves it open (0) and 64
    /// divides the head (else the CPU's automatic group, which the GPU also picks) and a residual window of
    /// <paramref name="window"/>; FP16 and FP32 sides stay as they are. The GPU runs one window in every layer, so a packed
    /// side that asks for another residual than 0 or <paramref name="window"/> is an <see cref="ArgumentException"/>
    /// naming the plan's option (<see cref="KvPlan.Source"/>), the layer and the side.
    /// </summary>
    public static KvPlan CpuPlan(KvPlan plan, int headDim, int window = GpuKvCacheLayout.DefaultWindow)
    {
        ArgumentNullException.ThrowIfNull(plan);
        bool group64 = headDim % GpuKvCacheLayout.DefaultGroup == 0;
        KvSpec Side(KvSpec s, int layer, string which)
        {
            if (!s.IsQuantized)
            {
                return s;
            }

            if (s.Residual != 0 && s.Residual != window)
            {
                throw new ArgumentException(
                    $"{plan.Source}: layer {layer} {which} keeps a residual window of {s.Residual} tokens; the check runs packed caches with one FP16 window of {window} in every layer (GPU {window - 1} + 1, the CPU cache's r{window}): give residual 0 or {window}");
            }

            return s with { GroupSize = s.GroupSize == 0 && group64 ? GpuKvCacheLayout.DefaultGroup : s.GroupSize, Residual = window };
        }

        var layers = plan.Layers.Select((l, i) => new KvLayerSpec(Side(l.K, i, "K"), Side(l.V, i, "V"))).ToArray();
        string mirror = group64 ? $"g{GpuKvCacheLayout.DefaultGroup} where 0, r{window}" : $"r{window}";
        return new KvPlan(layers, plan.Name, $"{plan.Source} ({mirror})");
    }

    /// <summary>
    /// Compares the GPU decoder on <paramref name="gpuModel"/> with the CPU engine on <paramref name="cpuModel"/> (the same
    /// model, or its F32 dequantized copy) using CPU cache <paramref name="cpuKv"/>.
    /// </summary>
    public static DecodeCheckRow Compare(
        CudaContext context, LlamaModel gpuModel, LlamaModel cpuModel, string modelName, string kv, string cpuKv, int window, int flushChunk,
        int batch, int steps, int greedyTokens, double tolerance, int threads, CudaDecodeKernels? kernels = null, double sensitivityNoise = 0)
    {
        ArgumentNullException.ThrowIfNull(gpuModel);
        int layers = gpuModel.Config.Layers;
        return Compare(
            context, gpuModel, cpuModel, modelName, KvPlan.Parse(kv, layers), KvPlan.Parse(cpuKv, layers), $"--kv {cpuKv}", window, flushChunk, batch, steps, greedyTokens,
            tolerance, threads, kernels, sensitivityNoise);
    }

    /// <summary>
    /// <see cref="Compare(CudaContext, LlamaModel, LlamaModel, string, string, string, int, int, int, int, int, double, int, CudaDecodeKernels?, double)"/>
    /// for plans: the GPU decoder with <paramref name="plan"/>, the CPU engine with <paramref name="cpuPlan"/> (for a packed
    /// plan, <see cref="CpuPlan"/> of it); <paramref name="cpuName"/> names the CPU cache in the row's reference.
    /// </summary>
    public static DecodeCheckRow Compare(
        CudaContext context, LlamaModel gpuModel, LlamaModel cpuModel, string modelName, KvPlan plan, KvPlan cpuPlan, string cpuName, int window, int flushChunk,
        int batch, int steps, int greedyTokens, double tolerance, int threads, CudaDecodeKernels? kernels = null, double sensitivityNoise = 0)
    {
        ArgumentNullException.ThrowIfNull(gpuModel);
        ArgumentNullException.ThrowIfNull(cpuModel);
        ArgumentNullException.ThrowIfNull(plan);
        ArgumentNullException.ThrowIfNull(cpuPlan);
        ModelConfig c = gpuModel.Config;
        int capacity = Math.Max(steps, greedyTokens + 1);
        var layout = GpuKvCacheLayout.Create(plan, c, batch, capacity, window, flushChunk);
        using var decoder = new CudaDecoder(context, gpuModel, plan, batch, capacity, true, kernels, layout);
        using var transformer = new Transformer(cpuModel, threads);
        int vocab = c.VocabSize;
        int[][] streams = Streams(c, batch, steps);
        float[][] reference = CpuLogits(transformer, cpuPlan, streams, capacity, 0, 0);
        (double rel, double top1) = TeacherForced(decoder, streams, reference, vocab);

        // A quantized cache turns any difference in its inputs that moves a value across a rounding boundary into a whole
        // quantization step. The GPU computes K and V in another order (and its window rounds them to FP16, as the CPU
        // cache's does), so some of its codes differ from the CPU's. The CPU engine's own sensitivity: the same reference
        // with K and V perturbed by up to sensitivityNoise relative (two noise patterns, the larger difference counts).
        double sensitivity = double.NaN;
        if (sensitivityNoise > 0 && cpuPlan.Layers.Any(l => l.K.IsQuantized || l.V.IsQuantized))
        {
            sensitivity = 0;
            foreach (int seed in new[] { 1, 2 })
            {
                float[][] perturbed = CpuLogits(transformer, cpuPlan, streams, capacity, sensitivityNoise, seed);
                sensitivity = Math.Max(sensitivity, MaxRelativeDifference(perturbed, reference));
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

        var tok = new int[batch];
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

        double bound = EffectiveTolerance(tolerance, sensitivity);
        bool pass = double.IsNaN(tolerance) || (rel <= bound && equal == greedyTokens);
        return new DecodeCheckRow(
            modelName, decoder.WeightTypes, decoder.Layout.ToString(), $"CPU {cpuModel.Format}, {cpuName}", batch, steps, rel, top1, equal, greedyTokens, tolerance, pass)
        {
            Sensitivity = sensitivity,
            EffectiveTolerance = bound,
        };
    }

    /// <summary>
    /// The K4V2 tensor-core kernel inside the decode path against the FP32 packed kernel (dec_attn_packed) on the same layout (window,
    /// chunk): two GPU decoders, teacher forced on the same streams.
    /// </summary>
    public static DecodeCheckRow CompareFastKernel(
        CudaContext context, LlamaModel model, string modelName, string kv, int batch, int steps, double tolerance, CudaDecodeKernels? kernels = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        return CompareFastKernel(context, model, modelName, KvPlan.Parse(kv, model.Config.Layers), batch, steps, tolerance, kernels);
    }

    /// <summary>
    /// <see cref="CompareFastKernel(CudaContext, LlamaModel, string, string, int, int, double, CudaDecodeKernels?)"/> for a plan
    /// (its layers the K4V2 kernel serves run it; the others run the FP32 kernel in both decoders).
    /// </summary>
    public static DecodeCheckRow CompareFastKernel(
        CudaContext context, LlamaModel model, string modelName, KvPlan plan, int batch, int steps, double tolerance, CudaDecodeKernels? kernels = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(plan);
        ModelConfig c = model.Config;
        var layout = GpuKvCacheLayout.Create(plan, c, batch, steps);
        int vocab = c.VocabSize;
        int[][] streams = Streams(c, batch, steps);
        var reference = new float[batch][];
        using (var generic = new CudaDecoder(context, model, plan, batch, steps, true, kernels, layout.WithoutFastKernel()))
        {
            var logits = new float[batch * vocab];
            var tok = new int[batch];
            for (int b = 0; b < batch; b++)
            {
                reference[b] = new float[(long)steps * vocab];
            }

            for (int i = 0; i < steps; i++)
            {
                for (int b = 0; b < batch; b++)
                {
                    tok[b] = streams[b][i];
                }

                generic.Step(tok);
                generic.CopyLogits(logits);
                for (int b = 0; b < batch; b++)
                {
                    logits.AsSpan(b * vocab, vocab).CopyTo(reference[b].AsSpan(i * vocab, vocab));
                }
            }
        }

        using var fast = new CudaDecoder(context, model, plan, batch, steps, true, kernels, layout);
        (double rel, double top1) = TeacherForced(fast, streams, reference, vocab);
        return new DecodeCheckRow(
            modelName, fast.WeightTypes, fast.Layout + " (K4V2 kernel)", "GPU, same layout, FP32 kernel dec_attn_packed", batch, steps, rel, top1, -1, 0, tolerance, rel <= tolerance);
    }

    /// <summary>
    /// Device sampling, checked against the device's own logits at every step of a free-running batch: top-k 1 and top-p
    /// 1e-6 must pick the argmax, temperature 0.9 with top-k 5 a token among the 5 largest logits, and top-p 0.5 a token
    /// whose logit is at least the smallest one of the nucleus (largest logits summing to half the probability).
    /// Returns the number of violations (0 = pass) and how many distinct tokens the top-k 5 draws produced.
    /// </summary>
    public static (int Violations, int Draws, int Distinct) CheckSampling(CudaContext context, LlamaModel model, int batch, int steps, CudaDecodeKernels? kernels = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        ModelConfig c = model.Config;
        using var decoder = new CudaDecoder(context, model, KvPlan.Parse("fp16", c.Layers), batch, steps + 1, true, kernels);
        int vocab = c.VocabSize;
        var logits = new float[batch * vocab];
        var tok = new int[batch];
        var order = new int[vocab];
        var distinct = new HashSet<int>();
        int violations = 0, draws = 0;
        decoder.SeedSampler(7);
        Array.Fill(tok, c.BosToken);
        decoder.Step(tok);
        for (int i = 0; i < steps; i++)
        {
            decoder.CopyLogits(logits);
            int mode = i % 4;
            switch (mode)
            {
                case 0: decoder.Sample(1f, 1, 1f, tok); break;
                case 1: decoder.Sample(1f, 0, 1e-6f, tok); break;
                case 2: decoder.Sample(0.9f, 5, 1f, tok); break;
                default: decoder.Sample(1f, 0, 0.5f, tok); break;
            }

            for (int b = 0; b < batch; b++)
            {
                ReadOnlySpan<float> row = logits.AsSpan(b * vocab, vocab);
                for (int v = 0; v < vocab; v++)
                {
                    order[v] = v;
                }

                float[] copy = row.ToArray();
                Array.Sort(order, (x, y) => copy[y].CompareTo(copy[x]));
                bool ok = (uint)tok[b] < (uint)vocab;
                if (ok && mode < 2)
                {
                    ok = copy[tok[b]] == copy[order[0]];
                }
                else if (ok && mode == 2)
                {
                    ok = copy[tok[b]] >= copy[order[4]];
                    draws++;
                    distinct.Add(tok[b]);
                }
                else if (ok)
                {
                    // Nucleus of mass 0.5 at temperature 1 (a 1e-4 margin for float sums).
                    double max = copy[order[0]], total = 0;
                    foreach (float x in copy)
                    {
                        total += Math.Exp(x - max);
                    }

                    double cum = 0;
                    float smallest = copy[order[0]];
                    foreach (int v in order)
                    {
                        cum += Math.Exp(copy[v] - max) / total;
                        smallest = copy[v];
                        if (cum >= 0.5 + 1e-4)
                        {
                            break;
                        }
                    }

                    ok = copy[tok[b]] >= smallest;
                }

                if (!ok)
                {
                    violations++;
                }
            }

            decoder.StepSampled();
        }

        return (violations, draws, distinct.Count);
    }

    /// <summary>
    /// The bound a row is held to: <paramref name="tolerance"/>, or twice the CPU engine's own sensitivity when that is larger
    /// (NaN sensitivity: not measured).
    /// </summary>
    public static double EffectiveTolerance(double tolerance, double sensitivity) =>
        double.IsNaN(sensitivity) ? tolerance : Math.Max(tolerance, 2 * sensitivity);

    /// <summary>
    /// Teacher-forced CPU logits <c>[sequence][step × vocab]</c> of <paramref name="streams"/> with caches of
    /// <paramref name="plan"/>; with <paramref name="noise"/> &gt; 0 the caches' inputs are perturbed (<see cref="PerturbedKvCache"/>).
    /// </summary>
    public static float[][] CpuLogits(Transformer transformer, KvPlan plan, int[][] streams, int capacity, double noise, int seed)
    {
        ArgumentNullException.ThrowIfNull(transformer);
        ArgumentNullException.ThrowIfNull(streams);
        int vocab = transformer.Config.VocabSize;
        var logits = new float[streams.Length][];
        for (int b = 0; b < streams.Length; b++)
        {
            int steps = streams[b].Length;
            logits[b] = new float[(long)steps * vocab];
            IKvCache cache = KvCacheFactory.Create(plan, transformer.CacheLayout(capacity));
            if (noise > 0)
            {
                cache = new PerturbedKvCache(cache, noise, (seed * 7919) + b);
            }

            using var session = new InferenceSession(transformer, cache);
            session.Prefill(streams[b].AsSpan(0, 1)).CopyTo(logits[b].AsSpan(0, vocab));
            for (int i = 1; i < steps; i++)
            {
                session.Decode(streams[b][i]).CopyTo(logits[b].AsSpan(i * vocab, vocab));
            }
        }

        return logits;
    }

    /// <summary>max |a − r| / max |r| over all elements: the metric of the logit comparison.</summary>
    public static double MaxRelativeDifference(float[][] a, float[][] reference)
    {
        ArgumentNullException.ThrowIfNull(a);
        ArgumentNullException.ThrowIfNull(reference);
        double maxErr = 0, maxRef = 0;
        for (int b = 0; b < reference.Length; b++)
        {
            for (int i = 0; i < reference[b].Length; i++)
            {
                maxErr = Math.Max(maxErr, Math.Abs(a[b][i] - reference[b][i]));
                maxRef = Math.Max(maxRef, Math.Abs(reference[b][i]));
            }
        }

        return maxErr / Math.Max(maxRef, 1e-30);
    }

    private static int[][] Streams(ModelConfig c, int batch, int steps)
    {
        var rng = new Random(1234);
        var streams = new int[batch][];
        for (int b = 0; b < batch; b++)
        {
            streams[b] = new int[steps];
            streams[b][0] = c.BosToken;
            for (int i = 1; i < steps; i++)
            {
                streams[b][i] = rng.Next(Math.Min(3, c.VocabSize - 1), c.VocabSize);
            }
        }

        return streams;
    }

    private static (double Relative, double Top1) TeacherForced(CudaDecoder decoder, int[][] streams, float[][] reference, int vocab)
    {
        int batch = streams.Length, steps = streams[0].Length;
        var logits = new float[batch * vocab];
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
            decoder.CopyLogits(logits);
            for (int b = 0; b < batch; b++)
            {
                ReadOnlySpan<float> g = logits.AsSpan(b * vocab, vocab);
                ReadOnlySpan<float> r = reference[b].AsSpan(i * vocab, vocab);
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

        return (maxErr / Math.Max(maxRef, 1e-30), agree / (double)(steps * batch));
    }
}
