using System.Diagnostics;
using System.Globalization;
using KvAdaQuant.KvCache;
using KvAdaQuant.Numerics;

namespace KvAdaQuant.Bench;

/// <summary>
/// A stopwatch A/B probe for a shared machine: the fastest of many single-threaded decode steps of one layer (8 KV
/// heads x 4 query heads, 32k positions, random keys and values, layers cycled as in <see cref="AttentionStepBenchmark"/>),
/// timed as a whole (<c>QuantizedKvStore.Attend</c>) and in its three parts (scores, scale + softmax, values) on
/// the same stores, and the same with int8 scores (<see cref="AttentionPrecision.Int8"/>: the step, the int8 scores, the exp-and-sum pass)
/// and with byte-weight values (<see cref="AttentionPrecision.Int8Values"/>: the step, and the exponential fused into the value sum). The minimum filters out the time slices other processes take; run two builds one after the other.
/// <c>dotnet run -c Release --project bench/KvAdaQuant.Bench -- --attention-min-probe k4v2 [CONTEXT] [--resident]</c>.
/// </summary>
public static class AttentionMinProbe
{
    /// <summary>Runs the probe for a cache spec on both shapes and prints one line per shape.</summary>
    public static void Run(string kv) => Run(kv, 32768, resident: false, threads: 1);

    /// <summary>
    /// Runs the probe at <paramref name="context"/> positions. With <paramref name="resident"/> one layer is filled
    /// and attended over and over, so its bytes come from the caches (a context of 2,048 to 4,096 fits the 1B shape's
    /// layer in L2/L3): the time per position there is the kernels' compute ceiling, to set against the streamed one.
    /// </summary>
    /// <remarks>With <paramref name="threads"/> above 1 the whole steps run their KV heads over a <see cref="WorkerPool"/>
    /// (as the engine and <see cref="AttentionStepBenchmark"/> do); the parts stay single-threaded.</remarks>
    public static void Run(string kv, int context, bool resident, int threads)
    {
        // Same number of positions attended per shape whatever the context, so the minimum is taken over as much work.
        int scale = Math.Max(1, 32768 / context);
        using var pool = threads > 1 ? new WorkerPool(threads) : null;
        Run("llama-3.2-1b", kv, context, 120 * scale, resident, pool);
        Run("llama-3.1-8b", kv, context, 60 * scale, resident, pool);
    }

    private static void Run(string shape, string kv, int context, int steps, bool resident, WorkerPool? pool)
    {
        const int Heads = AttentionStepBenchmark.KvHeads, Rep = AttentionStepBenchmark.QueryHeads;
        int hd = AttentionStepBenchmark.HeadDimOf(shape);
        int layers = resident ? 1 : AttentionStepBenchmark.LayersFor(shape, kv, context);
        var layout = new KvLayout(1, Heads, hd, context);
        var spec = KvPlan.Parse(kv, 1).Layers[0];
        var stores = new QuantizedKvStore[layers];
        var int8Stores = new QuantizedKvStore[layers];
        var int8ValueStores = new QuantizedKvStore[layers];
        var keys = new QuantizedTensorStore[layers];
        var int8Keys = new QuantizedTensorStore[layers];
        var values = new QuantizedTensorStore[layers];
        var rng = new Random(7);
        const int Batch = 256;
        var k = new float[Batch * Heads * hd];
        var v = new float[Batch * Heads * hd];
        AttentionStepBenchmark.RandomKeysAndValues(rng, k, v);

        for (int l = 0; l < layers; l++)
        {
            stores[l] = new QuantizedKvStore(layout, spec);
            int8Stores[l] = new QuantizedKvStore(layout, spec, AttentionPrecision.Int8);
            int8ValueStores[l] = new QuantizedKvStore(layout, spec, AttentionPrecision.Int8Values);
            keys[l] = new QuantizedTensorStore(layout, spec.K, keys: true);
            int8Keys[l] = new QuantizedTensorStore(layout, spec.K, int8Keys: true);
            values[l] = new QuantizedTensorStore(layout, spec.V);
            for (int t = 0; t < context; t += Batch)
            {
                int n = Math.Min(Batch, context - t);
                stores[l].Append(k, v, n);
                int8Stores[l].Append(k, v, n);
                int8ValueStores[l].Append(k, v, n);
                keys[l].Append(k, n);
                int8Keys[l].Append(k, n);
                values[l].Append(v, n);
            }
        }

        var q = Enumerable.Range(0, Heads * Rep * hd).Select(i => (float)Math.Sin(i * 0.37)).ToArray();
        var o = new float[Rep * hd];
        var s = new float[Rep * context];
        double step = double.MaxValue, scores = double.MaxValue, softmax = double.MaxValue, sums = double.MaxValue;
        double int8Step = double.MaxValue, int8Scores = double.MaxValue, expSum = double.MaxValue;
        double int8ValuesStep = double.MaxValue, byteSums = double.MaxValue;
        bool byteValues = int8ValueStores[0].UsesInt8Values;
        var heads = new HeadSteps(q, Heads, Rep, hd, context, pool?.Threads ?? 1);
        var byteWorkers = new WorkerTally(pool?.Threads ?? 1);
        var max = new float[Rep];
        var expSums = new float[Rep];
        var sw = new Stopwatch();
        for (int it = 0; it < steps; it++)
        {
            int l = it % layers;
            step = Math.Min(step, heads.Time(stores[l], pool));
            double a = 0, b = 0, c = 0;
            for (int g = 0; g < Heads; g++)
            {
                sw.Restart();
                keys[l].Scores(g, q.AsSpan(g * Rep * hd, Rep * hd), Rep, context, s);
                a += sw.Elapsed.TotalMilliseconds;
                sw.Restart();
                System.Numerics.Tensors.TensorPrimitives.Multiply(s, layout.Scale, s);
                for (int r = 0; r < Rep; r++)
                {
                    Kernels.SoftMax(s.AsSpan(r * context, context));
                }

                b += sw.Elapsed.TotalMilliseconds;
                sw.Restart();
                Array.Clear(o);
                values[l].Accumulate(g, s, Rep, context, o);
                c += sw.Elapsed.TotalMilliseconds;
            }

            int8Step = Math.Min(int8Step, heads.Time(int8Stores[l], pool));
            int8ValuesStep = Math.Min(int8ValuesStep, heads.Time(int8ValueStores[l], pool, byteWorkers));
            double d8 = 0, e8 = 0, f8 = 0;
            for (int g = 0; g < Heads; g++)
            {
                sw.Restart();
                int8Keys[l].ScoresInt8(g, q.AsSpan(g * Rep * hd, Rep * hd), Rep, context, s, max);
                d8 += sw.Elapsed.TotalMilliseconds;
                sw.Restart();
                unsafe
                {
                    fixed (float* sp = s)
                    {
                        for (int r = 0; r < Rep; r++)
                        {
                            Int8AttentionKernels.ExpSum(sp + (r * context), context, max[r]);
                        }
                    }
                }

                e8 += sw.Elapsed.TotalMilliseconds;
                if (byteValues)
                {
                    int8Keys[l].ScoresInt8(g, q.AsSpan(g * Rep * hd, Rep * hd), Rep, context, s, max);
                    sw.Restart();
                    Array.Clear(o);
                    values[l].AccumulateSoftmaxInt8(g, s, Rep, context, max, expSums, o);
                    f8 += sw.Elapsed.TotalMilliseconds;
                }
            }

            byteSums = Math.Min(byteSums, f8);

            int8Scores = Math.Min(int8Scores, d8);
            expSum = Math.Min(expSum, e8);
            scores = Math.Min(scores, a);
            softmax = Math.Min(softmax, b);
            sums = Math.Min(sums, c);
        }

        foreach (var d in stores.Cast<IDisposable>().Concat(int8Stores).Concat(int8ValueStores).Concat(keys).Concat(int8Keys).Concat(values))
        {
            d.Dispose();
        }

        var ci = CultureInfo.InvariantCulture;
        string where = (resident ? " resident (1 layer)" : string.Create(ci, $" streamed ({layers} layers)")) + (pool is null ? string.Empty : string.Create(ci, $", steps on {pool.Threads} threads"));
        Console.WriteLine(string.Create(ci, $"{shape} {kv} {context}{where}: min of {steps} steps: step {step:F3} ms ({AttentionStepBenchmark.CacheBytes(shape, kv, context) / (step * 1e6):F2} GB/s); parts: scores {scores:F3} ms, scale + softmax {softmax:F3} ms, values {sums:F3} ms"));
        Console.WriteLine(string.Create(ci, $"{shape} {kv} {context} int8: step {int8Step:F3} ms ({AttentionStepBenchmark.CacheBytes(shape, kv, context) / (int8Step * 1e6):F2} GB/s); parts: int8 scores {int8Scores:F3} ms, exp-sum {expSum:F3} ms"));
        if (byteValues)
        {
            Console.WriteLine(string.Create(ci, $"{shape} {kv} {context} int8 + byte values: step {int8ValuesStep:F3} ms ({AttentionStepBenchmark.CacheBytes(shape, kv, context) / (int8ValuesStep * 1e6):F2} GB/s); parts: int8 scores as above, exp fused into the byte-weight values {byteSums:F3} ms"));
            // Mean head times of every step (not the minimum): run with and without --threads 2 to see where two threads
            // fall short of twice one thread's rate (unequal shares, or each head slower while both work).
            Console.WriteLine(string.Create(ci, $"{shape} {kv} {context} int8 + byte values, per worker over all steps: {byteWorkers.Describe(steps)}"));
        }
    }

    /// <summary>One step: every KV head of a layer attended once, on the calling thread or over a worker pool.</summary>
    private sealed class HeadSteps(float[] q, int heads, int rep, int hd, int context, int threads) : IParallelWork
    {
        private readonly float[] _output = new float[heads * rep * hd];
        private readonly float[][] _scores = Enumerable.Range(0, threads).Select(_ => new float[rep * context]).ToArray();
        private readonly Stopwatch _sw = new();
        private IKvLayerCache? _layer;

        private WorkerTally? _tally;

        /// <summary>Milliseconds of one step over <paramref name="layer"/>; each head's time and worker into <paramref name="tally"/> where given.</summary>
        public double Time(IKvLayerCache layer, WorkerPool? pool, WorkerTally? tally = null)
        {
            _layer = layer;
            _tally = tally;
            if (pool is not null)
            {
                // Wake the workers first (they sleep after a short spin, and the single-threaded parts between steps
                // are long enough for that): the step then starts with them spinning, as back-to-back kernels do.
                pool.Run(Wake.Instance, pool.Threads);
            }

            _sw.Restart();
            if (pool is not null)
            {
                pool.Run(this, heads);
            }
            else
            {
                for (int g = 0; g < heads; g++)
                {
                    Execute(g, 0);
                }
            }

            return _sw.Elapsed.TotalMilliseconds;
        }

        /// <inheritdoc/>
        public void Execute(int index, int worker)
        {
            int span = rep * hd;
            long start = Stopwatch.GetTimestamp();
            _layer!.Attend(index, q.AsSpan(index * span, span), rep, context, _output.AsSpan(index * span, span), _scores[worker]);
            _tally?.Add(worker, Stopwatch.GetElapsedTime(start).TotalMilliseconds);
        }
    }

    /// <summary>Per worker: the heads it attended and their time in all (each worker writes only its own slots).</summary>
    private sealed class WorkerTally(int workers)
    {
        private readonly double[] _ms = new double[workers];
        private readonly long[] _heads = new long[workers];

        public void Add(int worker, double ms)
        {
            _ms[worker] += ms;
            _heads[worker]++;
        }

        /// <summary>"worker w: H heads a step, M ms a head" for each worker.</summary>
        public string Describe(int steps) => string.Join(", ", Enumerable.Range(0, _ms.Length).Select(w =>
            string.Create(CultureInfo.InvariantCulture, $"worker {w}: {_heads[w] / (double)steps:F2} heads a step, {(_heads[w] == 0 ? 0 : _ms[w] / _heads[w]):F3} ms a head")));
    }

    private sealed class Wake : IParallelWork
    {
        public static readonly Wake Instance = new();

        public void Execute(int index, int worker)
        {
        }
    }
}
