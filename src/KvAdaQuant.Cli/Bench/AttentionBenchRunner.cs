using System.Diagnostics;
using System.Globalization;
using KvAdaQuant.KvCache;
using KvAdaQuant.Model;
using KvAdaQuant.Numerics;

namespace KvAdaQuant.Cli.Bench;

/// <summary>The attention shape of a model: what <c>kvaq bench --attention</c> takes from a model file or a <c>--shape</c> preset.</summary>
internal sealed record AttentionShape(string Name, int Layers, int KvHeads, int QueryHeads, int HeadDim, int ContextLength)
{
    /// <summary>Query heads per KV head (GQA group size).</summary>
    public int GroupSize => QueryHeads / KvHeads;

    /// <summary>The shape of <paramref name="config"/>, named <paramref name="name"/>.</summary>
    public static AttentionShape Of(ModelConfig config, string name) =>
        new(name, config.Layers, config.KvHeads, config.Heads, config.HeadDim, config.ContextLength);
}

/// <summary>One context of <c>kvaq bench --attention</c>: attention steps and triads timed in the same run.</summary>
internal sealed record AttentionBenchResult(
    int Ctx,
    int Layers,
    long BytesCycled,
    int Steps,
    double MedianStepSeconds,
    double MinStepSeconds,
    long TriadBytes,
    int Triads,
    double MedianTriadSeconds,
    int Int8Layers,
    int Int8ValueLayers,
    int Threads,
    double MedianOneThreadTriadSeconds)
{
    /// <summary>Packed K + V bytes one step reads (the plan's accounting; the mean over the cycled layers where a plan's layers differ).</summary>
    public double BytesPerStep => (double)BytesCycled / Layers;

    /// <summary>Bytes per step over the median step time, in 1e9 bytes per second.</summary>
    public double GigabytesPerSecond => BytesPerStep / MedianStepSeconds / 1e9;

    /// <summary>The triad's bytes over its median time, in 1e9 bytes per second.</summary>
    public double TriadGigabytesPerSecond => TriadBytes / MedianTriadSeconds / 1e9;

    /// <summary>Attention GB/s over triad GB/s.</summary>
    public double TriadShare => GigabytesPerSecond / TriadGigabytesPerSecond;

    /// <summary>The triad on one thread (timed in the same run; the triad itself when <see cref="Threads"/> is 1), in 1e9 bytes per second.</summary>
    public double OneThreadTriadGigabytesPerSecond => TriadBytes / MedianOneThreadTriadSeconds / 1e9;

    /// <summary>Attention GB/s per thread over the one-thread triad's GB/s: the share each core reaches of what one core can stream.</summary>
    public double PerThreadShareOfOneThreadTriad => GigabytesPerSecond / Threads / OneThreadTriadGigabytesPerSecond;

    /// <summary>The flat JSON object of one context.</summary>
    public Dictionary<string, object> ToJson() => new()
    {
        ["ctx"] = Ctx,
        ["attention.layers"] = Layers,
        ["attention.bytes_per_step"] = BytesCycled % Layers == 0 ? BytesCycled / Layers : BytesPerStep,
        ["attention.bytes_cycled"] = BytesCycled,
        ["attention.steps"] = Steps,
        ["attention.step_seconds"] = Math.Round(MedianStepSeconds, 9), // whole nanoseconds: a median of two samples is not exact in binary
        ["attention.min_step_seconds"] = Math.Round(MinStepSeconds, 9),
        ["attention.gb_per_second"] = Math.Round(GigabytesPerSecond, 4),
        ["attention.int8_layers"] = Int8Layers,
        ["attention.int8_value_layers"] = Int8ValueLayers,
        ["triad.bytes"] = TriadBytes,
        ["triad.runs"] = Triads,
        ["triad.seconds"] = Math.Round(MedianTriadSeconds, 9),
        ["triad.gb_per_second"] = Math.Round(TriadGigabytesPerSecond, 4),
        ["attention.triad_share"] = Math.Round(TriadShare, 4),
        ["triad.one_thread_gb_per_second"] = Math.Round(OneThreadTriadGigabytesPerSecond, 4),
        ["attention.gb_per_second_per_thread"] = Math.Round(GigabytesPerSecond / Threads, 4),
        ["attention.per_thread_share_of_one_thread_triad"] = Math.Round(PerThreadShareOfOneThreadTriad, 4),
    };
}

/// <summary>
/// <c>kvaq bench --attention</c>: per context, fills enough layers of the real cache (<see cref="KvCacheFactory"/>) with
/// seeded random keys and values that the cycled steps stream from memory (<see cref="AttentionStepRunner.StreamedLayers"/>),
/// then alternates runs of attention steps (<see cref="AttentionStepRunner"/>, one layer per step, over the pool) with
/// runs of the STREAM-style triad (<see cref="TriadBandwidth"/>, the same pool, and with more than one thread also on a
/// pool of one thread, so that the per-core share can be read), and reports medians.
/// </summary>
internal static class AttentionBenchRunner
{
    /// <summary>Steps a run times at least (whole cycles over the filled layers).</summary>
    public const int MinStepsPerRun = 32;

    /// <summary>Triads a run times.</summary>
    public const int TriadsPerRun = 3;

    /// <summary>Default alternated runs with <c>--attention</c>.</summary>
    public const int DefaultRuns = 10;

    /// <summary>
    /// Checks that <paramref name="plan"/> and <paramref name="attention"/> make a cache of <paramref name="shape"/>
    /// (the factory's errors name <c>--attn-int8</c> / <c>--attn-int8-values</c>), on a cache of a few positions.
    /// </summary>
    public static void Check(AttentionShape shape, KvPlan plan, AttentionPrecision attention)
    {
        using var probe = KvCacheFactory.Create(plan, new KvLayout(shape.Layers, shape.KvHeads, shape.HeadDim, 16), attention);
    }

    /// <summary>Measures one context; <paramref name="log"/> gets progress lines.</summary>
    public static AttentionBenchResult Run(
        AttentionShape shape, KvPlan plan, AttentionPrecision attention, int ctx, WorkerPool pool, WorkerPool onePool, TriadBandwidth triad, int runs, Action<string>? log)
    {
        if (onePool.Threads != 1)
        {
            throw new ArgumentException($"the one-thread triad needs a pool of one thread, got {onePool.Threads}", nameof(onePool));
        }

        var picked = AttentionStepRunner.StreamedLayers(plan, shape.KvHeads, shape.HeadDim, ctx);
        var sub = AttentionStepRunner.Subplan(plan, picked);
        var layout = new KvLayout(picked.Length, shape.KvHeads, shape.HeadDim, ctx);
        long cycled = sub.BytesAt(shape.KvHeads, shape.HeadDim, ctx);
        log?.Invoke(string.Create(CultureInfo.InvariantCulture, $"ctx {ctx}: filling {picked.Length} layers ({cycled / 1e6:F1} MB of packed K/V) with random keys and values"));
        if (cycled < AttentionStepRunner.DefaultStreamBytes)
        {
            log?.Invoke(string.Create(CultureInfo.InvariantCulture, $"ctx {ctx}: note: all {picked.Length} layers of the shape hold only {cycled / 1e6:F1} MB, under the {AttentionStepRunner.DefaultStreamBytes / 1e6:F0} MB that streams from memory: the steps may read from the CPU caches"));
        }

        using var cache = KvCacheFactory.Create(sub, layout, attention);
        AttentionStepRunner.Fill(cache.Layers, layout.KvDim, ctx);
        var runner = new AttentionStepRunner(cache.Layers, shape.KvHeads, shape.GroupSize, shape.HeadDim, ctx, pool.Threads);
        int layers = picked.Length;
        int stepsPerRun = layers * ((MinStepsPerRun + layers - 1) / layers);
        var steps = new double[runs * stepsPerRun];
        var triads = new double[runs * TriadsPerRun];
        bool separateOneThread = pool.Threads > 1;
        var oneThreadTriads = separateOneThread ? new double[runs * TriadsPerRun] : triads;

        // Untimed warm-up: every layer once (first touches of the score scratch) and one triad.
        for (int l = 0; l < layers; l++)
        {
            runner.Step(l, pool);
        }

        triad.Run(pool);
        log?.Invoke($"ctx {ctx}: timing {runs} runs of {stepsPerRun} attention steps and {TriadsPerRun} triads{(separateOneThread ? " (and as many on one thread)" : string.Empty)}, alternated");
        int s = 0, t = 0, t1 = 0;
        for (int r = 0; r < runs; r++)
        {
            // The order swaps every run, so neither side always follows the other.
            if (r % 2 == 1)
            {
                t = TimeTriads(triad, pool, triads, t);
                t1 = separateOneThread ? TimeTriads(triad, onePool, oneThreadTriads, t1) : t1;
            }

            for (int i = 0; i < stepsPerRun; i++)
            {
                long start = Stopwatch.GetTimestamp();
                runner.Step(i % layers, pool);
                steps[s++] = Stopwatch.GetElapsedTime(start).TotalSeconds;
            }

            if (r % 2 == 0)
            {
                t1 = separateOneThread ? TimeTriads(triad, onePool, oneThreadTriads, t1) : t1;
                t = TimeTriads(triad, pool, triads, t);
            }
        }

        var q = cache as QuantizedKvCache;
        Array.Sort(steps);
        Array.Sort(triads);
        Array.Sort(oneThreadTriads);
        return new AttentionBenchResult(
            ctx, layers, cycled, steps.Length, Median(steps), steps[0], triad.BytesPerTriad, triads.Length, Median(triads), q?.Int8Layers ?? 0, q?.Int8ValueLayers ?? 0,
            pool.Threads, Median(oneThreadTriads));
    }

    /// <summary>The median of sorted values (the mean of the middle two for an even count).</summary>
    public static double Median(double[] sorted) =>
        sorted.Length % 2 == 1 ? sorted[sorted.Length / 2] : (sorted[(sorted.Length / 2) - 1] + sorted[sorted.Length / 2]) / 2;

    private static int TimeTriads(TriadBandwidth triad, WorkerPool pool, double[] times, int next)
    {
        for (int i = 0; i < TriadsPerRun; i++)
        {
            times[next++] = triad.Time(pool);
        }

        return next;
    }
}
